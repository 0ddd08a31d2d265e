"""What the converter scripts (tools/voc_to_coco.py, tools/csv_to_coco.py) share: the printed
summary and the output options of ``retinanet.data.convert``'s converters."""
import argparse
import sys

from retinanet.data.convert.common import PROBLEM_KINDS, ConversionError


def format_summary(summary):
    """Human-readable lines: images and boxes (per class) per set, then problems by kind."""
    lines = [f"wrote {summary['output']}"]
    for set_name, image_count in summary['images'].items():
        boxes = summary['boxes'][set_name]
        per_class = ', '.join(f"{name} {count}" for name, count in boxes.items())
        crowd_count = summary['crowd_boxes'][set_name]
        crowd = f", {crowd_count} with iscrowd=1" if crowd_count else ''
        lines.append(f"  {set_name}: {image_count} images, {sum(boxes.values())} boxes "
                     f"({per_class}){crowd}")
    if 'difficult' in summary:
        difficult = summary['difficult']
        lines.append(f"difficult objects: {difficult['objects']} (mode: {difficult['mode']})")
    lines.append("problems:" if summary['problems'] else "problems: none")
    lines.extend(f"  {count} {PROBLEM_KINDS[kind]} [{kind}]"
                 for kind, count in summary['problems'].items())
    return '\n'.join(lines)


def print_report(summary):
    """Print each problem on stderr, then the summary on stdout."""
    for message in summary['problem_messages']:
        print(f"warning: {message}", file=sys.stderr)
    print(format_summary(summary))


def output_options_parser():
    """argparse parent with the options both converter scripts share: --output, --copy, --force."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group('output')
    group.add_argument('--output', required=True,
                       help='dataset root to write: {output}/{set}.json and {output}/images/{set}/')
    group.add_argument('--copy', action='store_true',
                       help='copy the images (default: symbolic links with absolute targets)')
    group.add_argument('--force', action='store_true',
                       help='replace an existing {set}.json or images/{set}/ (default: stop with an error)')
    return parser


def run_conversion(convert, *args, **kwargs):
    """Call a converter the way both scripts do: report on success (exit code 0), print the
    error of unusable input without a traceback (exit code 2)."""
    try:
        summary = convert(*args, **kwargs)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(summary)
    return 0
