"""Writing a converted dataset: checks before anything is written, image links or copies, COCO JSON."""
import os
import shutil

from retinanet.data.convert.common import ConversionError, stable_number
from retinanet.util.io import atomic_write, write_json


def write_dataset(output, records_by_set, categories, source, copy, force, problems):
    """Write every set's JSON and images once all input has been checked.

    Returns the summary: ``images`` {set: count}, ``boxes`` {set: {class: count}},
    ``crowd_boxes`` {set: count}, ``problems`` {kind: count}, ``problem_messages`` [str],
    ``categories`` [(id, name)], ``output``.
    """
    for set_name, records in records_by_set.items():
        if set_name in ('', '.', '..') or '/' in set_name or os.sep in set_name:
            raise ConversionError(f"set name {set_name!r} cannot be used as a file name")
        if not records:
            summary = f"set '{set_name}': no usable images (problems: {problems.count_by_kind() or 'none'})"
            raise ConversionError("\n  ".join([summary] + problems.lines_in_order(limit=10, indent="")))
        _check_unique_file_names(set_name, records)
    _check_overwrite(output, records_by_set, force)
    for set_name, records in records_by_set.items():
        _place_images(records, os.path.join(output, 'images', set_name), copy)
        dataset = build_coco_dataset(records, categories, f"converted from {source}")
        # One line, in the order built: the same input always gives the same bytes.
        write_json(os.path.join(output, set_name + '.json'), dataset, indent=None, sort_keys=False)
    names = dict(categories)
    return {
        'output': output,
        'categories': list(categories),
        'images': {set_name: len(records) for set_name, records in records_by_set.items()},
        'boxes': {set_name: {name: sum(box[0] == category_id for record in records for box in record.boxes)
                             for category_id, name in names.items()}
                  for set_name, records in records_by_set.items()},
        'crowd_boxes': {set_name: sum(box[2] for record in records for box in record.boxes)
                        for set_name, records in records_by_set.items()},
        'problems': problems.count_by_kind(),
        'problem_messages': [f"{problem.kind}: {problem}" for problem in problems.problems],
    }


def _check_unique_file_names(set_name, records):
    sources_by_name = {}
    for record in records:
        name = os.path.basename(record.source_path)
        if name in sources_by_name:
            raise ConversionError(f"set '{set_name}': {sources_by_name[name]} and {record.source_path} "
                                  f"would both be written as images/{set_name}/{name}")
        sources_by_name[name] = record.source_path


def _check_overwrite(output, records_by_set, force):
    if os.path.exists(output) and not os.path.isdir(output):
        raise ConversionError(f"{output}: exists and is not a folder")
    existing = []
    for set_name in records_by_set:
        json_path = os.path.join(output, set_name + '.json')
        images_dir = os.path.join(output, 'images', set_name)
        if os.path.lexists(json_path):
            existing.append(json_path)
        if os.path.isdir(images_dir) and os.listdir(images_dir):
            existing.append(images_dir)
    if existing and not force:
        raise ConversionError(f"{', '.join(existing)} already exist; nothing was written "
                              f"(force=True, or --force, replaces them)")


def _place_images(records, images_dir, copy):
    """Link (absolute target) or copy each source image into ``images_dir``.

    Copies are written atomically (``util.io.atomic_write``): an interrupted or failed copy leaves
    the previous file, never half an image.
    """
    os.makedirs(images_dir, exist_ok=True)
    for record in records:
        destination = os.path.join(images_dir, os.path.basename(record.source_path))
        if os.path.lexists(destination):
            if not os.path.islink(destination) and os.path.samefile(destination, record.source_path):
                continue  # the source image already lives in the output folder
            if not copy:
                os.remove(destination)
        if copy:
            with open(record.source_path, 'rb') as source, atomic_write(destination, 'wb') as target:
                shutil.copyfileobj(source, target)
            shutil.copystat(record.source_path, destination)  # keep the times, as shutil.copy2 does
        else:
            os.symlink(os.path.abspath(record.source_path), destination)


def build_coco_dataset(records, categories, description):
    """COCO instances dict of ``records``; ``categories`` is [(category id, name)] in order."""
    images, annotations = [], []
    for image_id, record in enumerate(records, 1):
        images.append({'id': image_id, 'file_name': os.path.basename(record.source_path),
                       'width': record.width, 'height': record.height})
        for category_id, bbox, iscrowd in record.boxes:
            annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                                'category_id': category_id, 'bbox': bbox,
                                'area': stable_number(bbox[2] * bbox[3]), 'iscrowd': iscrowd})
    return {
        'info': {'description': description},
        'licenses': [],
        'images': images,
        'annotations': annotations,
        'categories': [{'id': category_id, 'name': name, 'supercategory': 'object'}
                       for category_id, name in categories],
    }

