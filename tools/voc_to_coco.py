"""Convert a Pascal VOC dataset to the COCO layout this repository trains on.

Reads Annotations/*.xml, JPEGImages/ and ImageSets/Main/{set}.txt under --voc_root and writes
{output}/{set}.json plus {output}/images/{set}/ (links to the images, or copies with --copy).
Boxes go from VOC's 1-based inclusive corners to COCO [x, y, w, h]: x = xmin - 1, w = xmax - x,
clipped to the image size read from the image file (EXIF orientation applied); <path> is ignored.
Problems are printed and the box or image skipped: boxes annotated with xmax <= xmin or
ymax <= ymin, non-numeric or empty after clipping; split entries without XML or image file.
A <size> that disagrees with the image file is reported and the file's size used.

Examples:
    python tools/voc_to_coco.py --voc_root ../shared/datasets/BCCD --output data/bccd
    python tools/voc_to_coco.py --voc_root my_voc --output data/mine --split_ratio 0.8 0.1 0.1
"""
import argparse
import sys


from retinanet.cli.convert import output_options_parser, run_conversion
from retinanet.data.convert import DIFFICULT_MODES, convert_voc


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, parents=[output_options_parser()],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group('input')
    group.add_argument('--voc_root', required=True,
                       help='folder holding Annotations/, JPEGImages/ and optionally ImageSets/Main/')
    group.add_argument('--sets', nargs='+', metavar='SET',
                       help='split files ImageSets/Main/SET.txt to convert (default: those of '
                            'train val test that exist); with --split_ratio, the names of the parts')
    group.add_argument('--split_ratio', nargs='+', type=float, metavar='RATIO',
                       help='ignore split files and split all annotated images at random, e.g. '
                            '0.8 0.1 0.1 for train val test (default: use the split files)')
    group.add_argument('--seed', type=int, default=3407,
                       help='random seed of --split_ratio (default: %(default)s)')
    labels = parser.add_argument_group('labels')
    labels.add_argument('--classes', nargs='+', metavar='NAME',
                        help='class names in category-id order 1..K; objects of other classes '
                             'are skipped (default: all names in Annotations/, sorted)')
    labels.add_argument('--difficult', choices=DIFFICULT_MODES, default='crowd',
                        help="objects marked <difficult>1: 'crowd' keeps them with iscrowd=1 "
                             "(COCOeval ignores them), 'skip' drops them, 'keep' keeps them as "
                             "ordinary boxes (default: %(default)s)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_conversion(convert_voc, args.voc_root, args.output, sets=args.sets, split_ratio=args.split_ratio,
                          seed=args.seed, classes=args.classes, difficult=args.difficult, copy=args.copy,
                          force=args.force)


if __name__ == '__main__':
    sys.exit(main())
