"""Check COCO-format dataset sets before training and print what is wrong with them.

    python tools/check_dataset.py --coco_path ./data --set_name train val

Exits with 0 when every set is usable (fixes the data loader applies are listed with their
counts) and with 2 when a set is unusable.
"""
import argparse
import sys


from retinanet.data.check import check_dataset

EXIT_UNUSABLE = 2


def positive_int(text):
    """argparse type; the same rule as ``retinanet.runs.options.positive_int``, kept here so the
    checker starts without importing torch (which that module needs for the model options)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco_path", default="./data",
                        help="dataset root holding {set}.json and images/{set}/ (default: ./data)")
    parser.add_argument("--set_name", nargs="+", default=["train", "val"],
                        help="one or more sets to check (default: train val)")
    parser.add_argument("--no_images", action="store_true",
                        help="check the JSON only, not the image files")
    parser.add_argument("--num_threads", type=positive_int, default=16,
                        help="threads reading image headers (default: 16)")
    parser.add_argument("--max_lines", type=positive_int, default=50,
                        help="most problems quoted per set; all are counted (default: 50)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    unusable = []
    for set_name in args.set_name:
        report = check_dataset(args.coco_path, set_name, check_images=not args.no_images,
                               num_threads=args.num_threads)
        print(report.format(max_lines=args.max_lines), end="\n\n")
        if not report.ok:
            unusable.append(set_name)
    if unusable:
        print(f"unusable sets: {', '.join(unusable)}", file=sys.stderr)
        return EXIT_UNUSABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
