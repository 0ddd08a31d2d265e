"""Write the synthetic shapes dataset (COCO layout) that the repository trains on by default.

    python tools/make_synthetic_dataset.py --output ./data

The same arguments always give byte-identical files; see ``retinanet/data/synthetic.py``.
"""
import argparse
import sys


from retinanet.data.synthetic import STYLES, generate_dataset


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    output = parser.add_argument_group("output")
    output.add_argument("--output", default="./data", help="dataset folder to write (default: ./data)")
    output.add_argument("--force", action="store_true", help="overwrite an existing dataset in --output")
    content = parser.add_argument_group("content")
    content.add_argument("--num_train", type=int, default=600, help="training images (default: 600)")
    content.add_argument("--num_val", type=int, default=100, help="validation images (default: 100)")
    content.add_argument("--num_test", type=int, default=100, help="held-out test images (default: 100)")
    content.add_argument("--seed", type=int, default=3407, help="random seed (default: 3407)")
    content.add_argument("--style", default="default", choices=tuple(STYLES),
                         help="what the images hold: the demo's shapes (default), or data of another character "
                              "(small objects, crowded images, one or ten classes, textured backgrounds, "
                              "three classes of 16-80 px objects)")
    content.add_argument("--min_size", type=int, default=160,
                         help="smallest image width/height in pixels, rounded up to a multiple of 16 (default: 160)")
    content.add_argument("--max_size", type=int, default=256,
                         help="largest image width/height in pixels (default: 256)")
    return parser.parse_args()


def print_summary(summary):
    """Print one column per set: image counts, then boxes per class."""
    sets = summary["sets"]
    rows = [(key, [stats[key] for stats in sets.values()])
            for key in ("images", "images_without_objects", "annotations")]
    rows += [(f"boxes: {name}", [stats["boxes_per_class"][name] for stats in sets.values()])
             for name in summary["class_names"]]
    label_width = max(len(label) for label, _ in rows)
    print(f"wrote {summary['output_dir']} (seed {summary['seed']}) in {summary['seconds']:.1f} s")
    print(" " * label_width + "".join(f"{name:>8}" for name in sets))
    for label, values in rows:
        print(f"{label:<{label_width}}" + "".join(f"{value:>8}" for value in values))
    for name, stats in sets.items():
        if stats["box_side_range"]:
            low, high = stats["box_side_range"]
            print(f"{name}: box sides from {low:.0f} to {high:.0f} px")


def main():
    args = parse_args()
    try:
        summary = generate_dataset(args.output, num_train=args.num_train, num_val=args.num_val,
                                   num_test=args.num_test, seed=args.seed, min_size=args.min_size,
                                   max_size=args.max_size, force=args.force, style=args.style)
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print_summary(summary)


if __name__ == "__main__":
    main()
