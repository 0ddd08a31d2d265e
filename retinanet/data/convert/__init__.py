"""Converters from Pascal VOC and from CSV annotations to this repository's COCO layout.

For every converted set ``S`` the output root receives::

    {output}/S.json        COCO instances: info, licenses, images, annotations, categories
    {output}/images/S/     the images, as symbolic links (absolute targets) or copies

``images[i].file_name`` is the image's base name inside ``images/S/``; ``width`` and
``height`` are those of the image as decoded (EXIF orientation applied), read from the file
header by ``image_io.read_image_size``, the rule the data loader decodes by. Boxes are
``[x, y, width, height]`` in pixels, clipped to the image.

The JSON is deterministic: images are numbered 1..N in split order, annotations 1..M in image
order then object order, and nothing in it depends on the time or on where the input lives.
Problems confined to one box or one image (degenerate or non-numeric boxes, unknown class
names, missing files, a wrong size in the XML) are recorded in the returned summary and the
box or image is skipped. Input that cannot be converted at all raises ``ConversionError``
before anything is written.

Modules: ``voc`` and ``csv_format`` read the two input formats, ``common`` holds what they
share (errors, problem log, image records, box rules), ``writer`` writes the images and JSON,
``retinanet/cli/convert.py`` holds the summary printing and options the converter scripts share.
"""
from retinanet.data.convert.common import PROBLEM_KINDS, ConversionError, ImageRecord, ProblemLog
from retinanet.data.convert.csv_format import convert_csv, read_csv_classes
from retinanet.data.convert.voc import (DEFAULT_VOC_SETS, DIFFICULT_MODES, VOC_CORNER_TAGS, VocAnnotation, VocObject,
                                        convert_voc, split_by_ratio)
from retinanet.data.convert.writer import build_coco_dataset
from retinanet.data.image_io import IMAGE_EXTENSIONS, read_image_size

__all__ = [
    'DEFAULT_VOC_SETS', 'DIFFICULT_MODES', 'IMAGE_EXTENSIONS', 'PROBLEM_KINDS',
    'VOC_CORNER_TAGS', 'ConversionError', 'ImageRecord', 'ProblemLog', 'VocAnnotation', 'VocObject',
    'build_coco_dataset', 'convert_csv', 'convert_voc', 'read_csv_classes', 'read_image_size', 'split_by_ratio',
]
