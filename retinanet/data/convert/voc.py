"""Pascal VOC to COCO: split files or a seeded split by ratio, XML parsing, one record per image."""
import math
import os
import random
from collections import Counter
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, parse as parse_xml

from retinanet.data.convert.common import (ConversionError, ImageRecord, ProblemLog, clip_box, parse_numbers,
                                          read_size_or_report, read_utf8_text)
from retinanet.data.convert.writer import write_dataset
from retinanet.data.image_io import IMAGE_EXTENSIONS

DIFFICULT_MODES = ('crowd', 'skip', 'keep')
DEFAULT_VOC_SETS = ('train', 'val', 'test')
VOC_CORNER_TAGS = ('xmin', 'ymin', 'xmax', 'ymax')


@dataclass
class VocObject:
    name: str
    difficult: bool
    coordinates: tuple  # (xmin, ymin, xmax, ymax) as text, or None without <bndbox>


@dataclass
class VocAnnotation:
    filename: str
    size: tuple  # (width, height) from <size>, or None
    objects: list


def convert_voc(voc_root, output, sets=None, split_ratio=None, seed=3407, classes=None,
                difficult='crowd', copy=False, force=False):
    """Convert a Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/) to ``output``.

    sets: split files to convert; default: those of train, val, test that exist.
    split_ratio: e.g. (0.8, 0.1, 0.1): ignore split files and split all annotated images with
        ``seed`` into sets named ``sets`` (default train, val, test, as many as ratios).
    classes: class names in category order (ids 1..K); default: every object name found in
        Annotations/*.xml, sorted, so sets converted separately share category ids.
    difficult: 'crowd' keeps difficult objects with iscrowd=1 (ignored by COCOeval),
        'skip' drops them, 'keep' keeps them as ordinary boxes.
    Returns the summary dict described in ``writer.write_dataset``.
    """
    if difficult not in DIFFICULT_MODES:
        raise ConversionError(f"difficult must be one of {DIFFICULT_MODES}, got {difficult!r}")
    annotations_dir = os.path.join(voc_root, 'Annotations')
    images_dir = os.path.join(voc_root, 'JPEGImages')
    if not os.path.isdir(annotations_dir):
        raise ConversionError(f"{annotations_dir}: folder not found; a Pascal VOC root holds "
                              f"Annotations/*.xml and JPEGImages/")
    xml_stems = sorted(name[:-4] for name in os.listdir(annotations_dir) if name.endswith('.xml'))
    if not xml_stems:
        raise ConversionError(f"{annotations_dir}: no .xml annotation files")
    images_by_stem = _list_images(images_dir)
    splits = _voc_splits(voc_root, xml_stems, sets, split_ratio, seed)
    load_annotation = _cached_voc_loader(annotations_dir)
    class_names = _check_class_names(classes) if classes else _voc_class_names(annotations_dir, xml_stems, load_annotation)
    category_ids = {name: index for index, name in enumerate(class_names, 1)}

    problems = ProblemLog()
    records_by_set = {}
    difficult_objects = 0
    for set_name, image_ids in splits.items():
        records, seen = [], set()
        for image_id in image_ids:
            if image_id in seen:
                problems.add('duplicate_image', f"set '{set_name}': '{image_id}' is listed more "
                                                f"than once; kept the first")
                continue
            seen.add(image_id)
            record, difficult_count = _voc_record(voc_root, image_id, load_annotation, images_by_stem,
                                                  category_ids, difficult, problems)
            difficult_objects += difficult_count
            if record is not None:
                records.append(record)
        records_by_set[set_name] = records
    categories = list(enumerate(class_names, 1))
    summary = write_dataset(output, records_by_set, categories, 'Pascal VOC', copy, force, problems)
    summary['difficult'] = {'mode': difficult, 'objects': difficult_objects}
    return summary


def _list_images(images_dir):
    """Map image stem -> sorted image file names in ``images_dir``; raise if there are none."""
    if not os.path.isdir(images_dir):
        raise ConversionError(f"{images_dir}: image folder not found")
    images_by_stem = {}
    for name in sorted(os.listdir(images_dir)):
        stem, extension = os.path.splitext(name)
        if extension.lower() in IMAGE_EXTENSIONS:
            images_by_stem.setdefault(stem, []).append(name)
    if not images_by_stem:
        raise ConversionError(f"{images_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return images_by_stem


def _voc_splits(voc_root, xml_stems, sets, split_ratio, seed):
    """Return {set name: [image ids]} from the split files, or from ``split_ratio``."""
    if split_ratio is not None:
        names = list(sets) if sets else list(DEFAULT_VOC_SETS[:len(split_ratio)])
        if len(names) != len(split_ratio):
            raise ConversionError(f"split_ratio has {len(split_ratio)} values but {len(names)} "
                                  f"set names were given ({' '.join(names)})")
        return dict(zip(names, split_by_ratio(xml_stems, split_ratio, seed)))
    split_dir = os.path.join(voc_root, 'ImageSets', 'Main')
    if sets is None:
        sets = [name for name in DEFAULT_VOC_SETS if os.path.isfile(os.path.join(split_dir, name + '.txt'))]
        if not sets:
            raise ConversionError(f"{split_dir}: no train.txt, val.txt or test.txt; give a split "
                                  f"ratio (--split_ratio 0.8 0.1 0.1) to split the "
                                  f"{len(xml_stems)} annotated images")
    splits = {}
    for name in sets:
        path = os.path.join(split_dir, name + '.txt')
        if not os.path.isfile(path):
            raise ConversionError(f"{path}: split file for set '{name}' not found")
        text = read_utf8_text(path, f"split file of set '{name}'")
        splits[name] = [line.split()[0] for line in text.splitlines() if line.strip()]
    return splits


def split_by_ratio(image_ids, ratios, seed):
    """Shuffle ``image_ids`` with ``seed`` and cut them into parts sized by ``ratios``.

    Part sizes follow the largest-remainder rule, so they add up to len(image_ids); every id
    lands in exactly one part; each part is returned sorted.
    """
    if not ratios or any(not math.isfinite(ratio) or ratio <= 0 for ratio in ratios):
        raise ConversionError(f"split ratios must be positive numbers, got {list(ratios)}")
    exact = [ratio / sum(ratios) * len(image_ids) for ratio in ratios]
    counts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda index: (counts[index] - exact[index], index))
    for index in by_remainder[:len(image_ids) - sum(counts)]:
        counts[index] += 1
    shuffled = sorted(image_ids)
    random.Random(seed).shuffle(shuffled)
    parts, start = [], 0
    for count in counts:
        parts.append(sorted(shuffled[start:start + count]))
        start += count
    return parts


def _cached_voc_loader(annotations_dir):
    """Return load(image_id) -> VocAnnotation, or the text saying why the XML cannot be used."""
    cache = {}

    def load(image_id):
        if image_id not in cache:
            try:
                cache[image_id] = _parse_voc_xml(os.path.join(annotations_dir, image_id + '.xml'))
            except ParseError as error:
                cache[image_id] = f"not valid XML ({error})"
            except LookupError as error:  # an encoding Python does not know
                cache[image_id] = f"not readable XML ({error})"
            except DefusedXmlException as error:  # entity declarations, external references
                cache[image_id] = f"refused: the XML declares entities or external references ({error!r})"
            except OSError as error:  # a folder named like an XML file, or no permission to read it
                cache[image_id] = f"cannot be read ({error.strerror or error})"
        return cache[image_id]
    return load


def _parse_voc_xml(xml_path):
    """Read the fields the converter uses; <path> is ignored (it names the annotator's machine).

    defusedxml parses, so entity expansion ("billion laughs") and external references are refused.
    """
    root = parse_xml(xml_path).getroot()
    size = None
    try:
        size = (int(float(root.findtext('size/width'))), int(float(root.findtext('size/height'))))
    except (TypeError, ValueError):
        pass  # no usable <size>: the image file gives the size, and the mismatch is reported
    objects = []
    for element in root.findall('object'):
        box = element.find('bndbox')
        coordinates = None if box is None else tuple(box.findtext(tag) for tag in VOC_CORNER_TAGS)
        objects.append(VocObject(name=(element.findtext('name') or '').strip(),
                                 difficult=(element.findtext('difficult') or '0').strip() not in ('0', ''),
                                 coordinates=coordinates))
    return VocAnnotation(filename=(root.findtext('filename') or '').strip(), size=size, objects=objects)


def _voc_class_names(annotations_dir, xml_stems, load_annotation):
    """Every object name in the readable XMLs, sorted."""
    names, unreadable = set(), []
    for stem in xml_stems:
        annotation = load_annotation(stem)
        if isinstance(annotation, VocAnnotation):
            names.update(obj.name for obj in annotation.objects if obj.name)
        else:
            unreadable.append(f"{os.path.join(annotations_dir, stem + '.xml')}: {annotation}")
    if not names:
        shown = "".join(f"\n  {line}" for line in unreadable[:10])
        raise ConversionError(f"{annotations_dir}: no <object><name> found in any annotation file"
                              + (f"; {len(unreadable)} cannot be used:{shown}" if unreadable else ""))
    return sorted(names)


def _check_class_names(classes):
    names = list(classes)
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates or any(not name for name in names):
        raise ConversionError(f"class names must be unique and non-empty, got {names}")
    return names


def _voc_record(voc_root, image_id, load_annotation, images_by_stem, category_ids, difficult, problems):
    """Build the ImageRecord of one VOC image (None when skipped) and count its difficult objects."""
    xml_path = os.path.join(voc_root, 'Annotations', image_id + '.xml')
    if not os.path.exists(xml_path):
        problems.add('missing_annotation', "not found", file=xml_path)
        return None, 0
    annotation = load_annotation(image_id)
    if not isinstance(annotation, VocAnnotation):
        problems.add('bad_annotation', annotation, file=xml_path)
        return None, 0
    image_path = _find_voc_image(voc_root, image_id, annotation.filename, images_by_stem, xml_path, problems)
    size = image_path and read_size_or_report(image_path, xml_path, problems)
    if not size:
        return None, 0
    if annotation.size != size:
        xml_size = 'missing' if annotation.size is None else '%dx%d' % annotation.size
        problems.add('size_mismatch', f"<size> is {xml_size}, the image is {size[0]}x{size[1]}; used the image size",
                     file=xml_path)
    record = ImageRecord(image_path, *size)
    difficult_count = 0
    for number, obj in enumerate(annotation.objects, 1):
        where = f"{xml_path}: object {number} ({obj.name!r})"
        if obj.name not in category_ids:
            problems.add('unknown_class', "class not in the class list", file=where)
            continue
        difficult_count += obj.difficult
        if obj.difficult and difficult == 'skip':
            continue
        if obj.coordinates is None:
            problems.add('bad_coordinates', "no <bndbox>", file=where)
            continue
        corners = parse_numbers(obj.coordinates, where, problems)
        if corners is None:
            continue
        xmin, ymin, xmax, ymax = corners
        if xmax <= xmin or ymax <= ymin:  # both corners drawn on the same pixel column or row
            problems.add('degenerate_box', f"zero or negative size as annotated "
                                           f"(xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g})", file=where)
            continue
        # VOC corners are 1-based inclusive pixel indices (same conversion as detectron2's loader).
        bbox = clip_box(xmin - 1, ymin - 1, xmax, ymax, size, where, problems)
        if bbox is not None:
            iscrowd = int(obj.difficult and difficult == 'crowd')
            record.boxes.append((category_ids[obj.name], bbox, iscrowd))
    return record, difficult_count


def _find_voc_image(voc_root, image_id, filename, images_by_stem, xml_path, problems):
    """JPEGImages/<filename>, else the image named like the XML; None (reported) if neither exists."""
    images_dir = os.path.join(voc_root, 'JPEGImages')
    name = os.path.basename(filename)  # some tools write a folder into <filename>
    if name and name in images_by_stem.get(os.path.splitext(name)[0], ()):
        return os.path.join(images_dir, name)
    fallback = images_by_stem.get(image_id)
    if not fallback:
        problems.add('missing_image', f"no image {name or image_id + '.*'} in {images_dir}", file=xml_path)
        return None
    if name:
        problems.add('filename_mismatch', f"<filename> {name!r} not in {images_dir}; used {fallback[0]}",
                     file=xml_path)
    return os.path.join(images_dir, fallback[0])
