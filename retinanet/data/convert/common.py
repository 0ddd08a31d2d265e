"""What both converters share: the error, the problem log, the image record and the box rules.

A box is read from text with ``parse_numbers`` and clipped with ``clip_box``; problems confined
to one box or one image go to the ``ProblemLog`` and the box or image is skipped, while input
that cannot be converted at all raises ``ConversionError``. Image sizes are read by
``image_io.read_image_size``, the rule the data loader decodes by (EXIF orientation applied).
"""
import csv
import io
import math
from dataclasses import dataclass, field

from retinanet.data.image_io import ImageReadError, read_image_size
from retinanet.util.problems import ProblemReport

# Every kind of problem, and what the converter did about it.
PROBLEM_KINDS = {
    'missing_annotation': 'images skipped: listed in a split file, but the XML is missing',
    'bad_annotation': 'images skipped: the XML cannot be parsed',
    'duplicate_image': 'images skipped: listed twice in the same split file',
    'missing_image': 'images skipped: image file not found',
    'unreadable_image': 'images skipped: image file cannot be read',
    'bad_coordinates': 'boxes skipped: missing or non-numeric coordinates',
    'degenerate_box': 'boxes skipped: zero or negative width or height',
    'unknown_class': 'boxes skipped: class name not in the class list',
    'size_mismatch': 'sizes corrected: XML <size> missing or different from the image file',
    'filename_mismatch': 'file names corrected: XML <filename> not found, image found by XML name',
}


class ConversionError(ValueError):
    """The input cannot be converted at all: the message names the file and the problem."""


@dataclass
class ImageRecord:
    """One output image: its source file, decoded size and boxes (category_id, [x, y, w, h], iscrowd)."""
    source_path: str
    width: int
    height: int
    boxes: list = field(default_factory=list)


class ProblemLog(ProblemReport):
    """Problems met while reading the input, in the order found. Each Problem's ``file`` is
    where it is, as messages name it (``a.xml``, ``a.xml: object 2 ('dog')``, ``train.csv:4 (...)``)."""
    kinds = PROBLEM_KINDS


def read_utf8_text(path, what):
    """The text of a UTF-8 file (a leading byte-order mark is dropped); ConversionError naming the
    file and line when it cannot be read or is not UTF-8. ``what`` names the file in messages."""
    try:
        with open(path, 'rb') as handle:
            data = handle.read()
    except OSError as error:
        raise ConversionError(f"{path}: cannot read the {what} ({error.strerror or error})") from None
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b'\n') + 1
        raise ConversionError(f"{path}:{line}: the {what} is not UTF-8 text (byte {data[error.start]:#04x}); "
                              f"save it as UTF-8") from None


def csv_rows(path, what):
    """Yield (line number, row) of a UTF-8 CSV file; ConversionError naming the file and line for
    text that is not UTF-8 or that the csv module refuses (a field over its size limit, a stray NUL)."""
    reader = csv.reader(io.StringIO(read_utf8_text(path, what), newline=''))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ConversionError(f"{path}:{reader.line_num}: the {what} is not readable CSV ({error})") from None
        yield reader.line_num, row


def read_size_or_report(image_path, where, problems):
    """(width, height) of the image as displayed, or None (reported) when it cannot be read."""
    try:
        return read_image_size(image_path)
    except ImageReadError as error:
        problems.add('unreadable_image', f"{image_path}: {error.reason}", file=where)
        return None


def parse_numbers(texts, where, problems):
    """Floats of ``texts``, or None (reported) when one is missing, non-numeric or infinite."""
    try:
        values = [float(text) for text in texts]
    except (TypeError, ValueError):
        values = [math.nan]
    if not all(math.isfinite(value) for value in values):
        problems.add('bad_coordinates', f"coordinates {list(texts)} are not all numbers", file=where)
        return None
    return values


def clip_box(x1, y1, x2, y2, size, where, problems):
    """Clip corners to the image; return [x, y, w, h], or None (reported) when empty."""
    width, height = size
    left, right = min(max(x1, 0), width), min(max(x2, 0), width)
    top, bottom = min(max(y1, 0), height), min(max(y2, 0), height)
    if right <= left or bottom <= top:
        problems.add('degenerate_box', f"box x1={x1:g} y1={y1:g} x2={x2:g} y2={y2:g} "
                                       f"is empty after clipping to the {width}x{height} image", file=where)
        return None
    return [stable_number(left), stable_number(top), stable_number(right - left), stable_number(bottom - top)]


def stable_number(value):
    """An int when the value is whole, else a float rounded to 3 decimals (stable JSON text)."""
    return int(value) if float(value).is_integer() else round(float(value), 3)
