"""Convert CSV annotations (the pytorch-retinanet format) to the COCO layout this repository trains on.

Annotation lines are `path,x1,y1,x2,y2,class_name` in pixels (x2, y2 exclusive corners); a line
`path,,,,,` lists an image without objects; paths are absolute or relative to the CSV file's
folder. Class file lines are `class_name,id` with 0-based ids; category ids are written as id + 1.
Writes {output}/{set}.json plus {output}/images/{set}/ (links to the images, or copies with --copy).
Problems (degenerate boxes, missing images, unknown classes) are printed and the box or image skipped.

Example:
    python tools/csv_to_coco.py --annotations train=train.csv --annotations val=val.csv \\
        --classes classes.csv --output data/mine
"""
import argparse
import sys


from retinanet.cli.convert import output_options_parser, run_conversion
from retinanet.data.convert import convert_csv


def set_and_file(text):
    """Parse 'SET=FILE' into (set, file)."""
    set_name, separator, path = text.partition('=')
    if not separator or not set_name or not path:
        raise argparse.ArgumentTypeError(f"expected SET=FILE (e.g. train=train.csv), got {text!r}")
    return set_name, path


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, parents=[output_options_parser()],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group('input')
    group.add_argument('--annotations', type=set_and_file, action='append', required=True,
                       metavar='SET=FILE',
                       help='annotation CSV of one set; repeat for each set (e.g. --annotations '
                            'train=train.csv --annotations val=val.csv)')
    group.add_argument('--classes', required=True, metavar='FILE',
                       help='class CSV with lines class_name,id (0-based ids)')
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    annotations = dict(args.annotations)
    if len(annotations) != len(args.annotations):
        parser.error("each set may be given only once in --annotations")
    return run_conversion(convert_csv, annotations, args.classes, args.output, copy=args.copy, force=args.force)


if __name__ == '__main__':
    sys.exit(main())
