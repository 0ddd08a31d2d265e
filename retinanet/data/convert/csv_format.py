"""CSV to COCO: a class file of ``class_name,id`` lines, and one annotation file per set."""
import os

from retinanet.data.convert.common import (ConversionError, ImageRecord, ProblemLog, clip_box, csv_rows,
                                          parse_numbers, read_size_or_report)
from retinanet.data.convert.writer import write_dataset
from retinanet.util.values import short_repr


def convert_csv(annotations, classes_file, output, copy=False, force=False):
    """Convert CSV annotations (``path,x1,y1,x2,y2,class_name``) to ``output``.

    annotations: {set name: CSV file}; image paths in a file are absolute or relative to its
        folder; ``path,,,,,`` lists an image without objects; x2, y2 are exclusive corners.
    classes_file: CSV of ``class_name,id`` with 0-based ids; category id = id + 1.
    Returns the summary dict described in ``writer.write_dataset``.
    """
    if not annotations:
        raise ConversionError("no annotation files given (expected {set name: CSV file})")
    categories = read_csv_classes(classes_file)
    category_ids = {name: category_id for category_id, name in categories}
    problems = ProblemLog()
    records_by_set = {set_name: _csv_records(set_name, path, category_ids, problems)
                      for set_name, path in annotations.items()}
    return write_dataset(output, records_by_set, categories, 'CSV', copy, force, problems)


def read_csv_classes(classes_file):
    """Read ``class_name,id`` lines; return [(id + 1, class_name)] sorted by id."""
    if not os.path.isfile(classes_file):
        raise ConversionError(f"{classes_file}: class file not found")
    by_id = {}
    for line_number, row in csv_rows(classes_file, 'class file'):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{classes_file}:{line_number}"
        if len(row) != 2 or not row[0]:
            raise ConversionError(f"{where}: expected 'class_name,id', got {short_repr(row)}")
        try:
            class_id = int(row[1])
        except ValueError:
            raise ConversionError(f"{where}: class id {row[1]!r} is not an integer") from None
        if class_id < 0 or class_id in by_id or row[0] in by_id.values():
            raise ConversionError(f"{where}: class {row[0]!r} id {class_id}: ids must be unique and "
                                  f">= 0 and names unique")
        by_id[class_id] = row[0]
    if not by_id:
        raise ConversionError(f"{classes_file}: no classes")
    return [(class_id + 1, by_id[class_id]) for class_id in sorted(by_id)]


def _csv_records(set_name, csv_path, category_ids, problems):
    """ImageRecords of one CSV file, in order of each image's first line."""
    if not os.path.isfile(csv_path):
        raise ConversionError(f"{csv_path}: annotation file for set '{set_name}' not found")
    base_dir = os.path.dirname(os.path.abspath(csv_path))
    lines_by_image = {}  # absolute image path -> [(line number, x1, y1, x2, y2, class_name)]
    for line_number, row in csv_rows(csv_path, 'annotation file'):
        if not row:
            continue
        if len(row) != 6 or not row[0]:
            raise ConversionError(f"{csv_path}:{line_number}: expected 'path,x1,y1,x2,y2,class_name', "
                                  f"got {short_repr(row)}")
        image_path = os.path.normpath(os.path.join(base_dir, row[0]))  # join keeps absolute paths
        lines_by_image.setdefault(image_path, []).append((line_number, *row[1:]))
    if not lines_by_image:
        raise ConversionError(f"{csv_path}: no annotation lines")
    records = []
    for image_path, lines in lines_by_image.items():
        first_line = f"{csv_path}:{lines[0][0]}"
        if not os.path.isfile(image_path):
            problems.add('missing_image', f"image {image_path} not found", file=first_line)
            continue
        size = read_size_or_report(image_path, first_line, problems)
        if not size:
            continue
        record = ImageRecord(image_path, *size)
        for line_number, *values, class_name in lines:
            if not any(values) and not class_name:
                continue  # 'path,,,,,': an image without objects
            where = f"{csv_path}:{line_number} ({os.path.basename(image_path)}, {class_name!r})"
            if class_name not in category_ids:
                problems.add('unknown_class', "class not in the class file", file=where)
                continue
            corners = parse_numbers(values, where, problems)
            bbox = corners and clip_box(*corners, size, where, problems)
            if bbox:
                record.boxes.append((category_ids[class_name], bbox, 0))
        records.append(record)
    return records
