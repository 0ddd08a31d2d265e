"""Image decoding shared by training, evaluation, prediction and dataset checks.

Every image becomes an 8-bit RGB array of shape (H, W, 3), whatever the file holds:
grayscale and palette images are expanded, alpha is dropped, 16-bit samples keep their
high byte (value >> 8), and the EXIF orientation is applied.

The orientation comes from one place (Pillow's reading of the header), for both the
decoded pixels and ``read_image_size``, so the size the dataset check compares with the
JSON is the size the training loader gets. OpenCV decodes (it is fast); Pillow reads the
header, decodes the formats OpenCV cannot, and has the last word on truncation.

``IMAGE_EXTENSIONS`` names the files treated as images when a folder is listed, and
``write_png`` writes an array as a PNG file atomically (see ``retinanet.util.io``).
"""
import io
import os
import struct
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from retinanet.util.io import write_bytes

# OpenCV spawns its own thread pool per process; DataLoader workers already give us parallelism.
cv2.setNumThreads(0)

# File name endings (lower case) of the images a folder listing picks up.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Orientation is applied by _apply_orientation, from the same tag read_image_size uses.
_OPENCV_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
# Pillow format names that OpenCV decodes; anything else is decoded by Pillow.
_OPENCV_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "WEBP", "PPM", "GIF", "TIFF", "JPEG2000"}
_ORIENTATION_TAG = 0x0112
# A complete file ends with these bytes; without them the file may be truncated.
_END_MARKERS = {"JPEG": b"\xff\xd9", "MPO": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
# What Pillow raises on damaged files.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)

_ORIENTATION_OPS = {
    2: lambda image: cv2.flip(image, 1),
    3: lambda image: cv2.rotate(image, cv2.ROTATE_180),
    4: lambda image: cv2.flip(image, 0),
    5: cv2.transpose,
    6: lambda image: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
    7: lambda image: cv2.rotate(cv2.transpose(image), cv2.ROTATE_180),
    8: lambda image: cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


class ImageReadError(RuntimeError):
    """An image file is missing, unreadable, truncated or not an image.

    ``path`` is the file and ``reason`` says what is wrong with it.
    """

    def __init__(self, path, reason="could not be read"):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ImageHeader(NamedTuple):
    """What the header of an image file says, sizes as displayed (orientation applied)."""
    width: int
    height: int
    orientation: int  # EXIF orientation 1-8; 1 means the pixels are stored upright
    format: str  # Pillow's format name: "JPEG", "PNG", ...


def load_image_rgb(path):
    """Decode ``path`` into a uint8 array of shape (H, W, 3) in RGB order, upright.

    Raises ImageReadError naming the path when the file is missing, not an image,
    truncated or corrupt.
    """
    data = _read_bytes(path)
    header = _read_header(io.BytesIO(data), path)
    image = None
    if header.format in _OPENCV_FORMATS and not (header.format == "TIFF" and header.orientation != 1):
        image = _decode_with_opencv(data)  # OpenCV 5 fails on TIFFs with an orientation tag
    if image is None:
        image = _decode_with_pillow(data, path)
    else:
        if not data.endswith(_END_MARKERS.get(header.format, b"")):
            # libjpeg returns a partly grey image for a truncated JPEG and only prints a warning.
            _confirm_complete(io.BytesIO(data), header.format, path)
        image = _apply_orientation(image, header.orientation)
    if image.shape[:2] != (header.height, header.width):
        raise ImageReadError(path, f"decoded size {image.shape[1]}x{image.shape[0]} differs from "
                                   f"the header's {header.width}x{header.height}")
    return image


def read_image_size(path):
    """Return ``(width, height)`` of the upright image, reading only the file header."""
    header = read_image_header(path)
    return header.width, header.height


def read_image_header(path):
    """Return the ImageHeader of ``path``, reading only the file header."""
    if not os.path.isfile(path):
        raise ImageReadError(path, "file not found")
    return _read_header(path, path)


def verify_image_file(path):
    """Check that ``path`` is a complete, readable image; return its ImageHeader.

    JPEG and PNG files are checked by their end marker, which costs one small read;
    only when it is missing (truncation, or extra bytes after the image) is the file
    decoded to tell the two apart. Files of other formats are decoded in full.
    """
    header = read_image_header(path)
    marker = _END_MARKERS.get(header.format)
    if marker is None or not _file_ends_with(path, marker):
        _confirm_complete(path, header.format, path)
    return header


def write_png(path, image, compression=6):
    """Write a uint8 array of shape (H, W, 3) in OpenCV's BGR order, or (H, W), as a PNG file.

    The file is encoded in memory and written atomically; ``compression`` is zlib's level 0-9.
    Raises OSError naming the path when OpenCV cannot encode the array.
    """
    encoded, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not encoded:
        raise OSError(f"could not encode {path} as PNG")
    write_bytes(path, data.tobytes())


def _read_bytes(path):
    if not os.path.isfile(path):
        raise ImageReadError(path, "file not found")
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise ImageReadError(path, f"could not be read ({error})") from error


def _read_header(source, path):
    """Read the ImageHeader from ``source`` (a path or a file object); ``path`` names it in errors."""
    try:
        with Image.open(source) as image:
            orientation = _read_orientation(image)
            width, height = image.size
            image_format = image.format
    except UnidentifiedImageError as error:
        raise ImageReadError(path, "not an image file (format not recognised)") from error
    except _PILLOW_ERRORS as error:
        raise ImageReadError(path, f"unreadable image header ({error})") from error
    if orientation >= 5 and image_format != "TIFF":  # Pillow gives TIFF sizes upright already
        width, height = height, width  # orientations 5-8 turn the image by a quarter
    return ImageHeader(width, height, orientation, image_format)


def _read_orientation(image):
    if image.format == "PNG" and "exif" not in image.info:
        # An eXIf chunk after the pixel data would need a full decode to find; it is ignored.
        return 1
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    return int(orientation) if orientation in range(1, 9) else 1  # invalid values mean upright


def _decode_with_opencv(data):
    """Return a uint8 RGB array, or None when OpenCV cannot decode ``data``."""
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _OPENCV_FLAGS)
    except cv2.error:
        return None  # Pillow decodes it next, and raises if the file is damaged
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_with_pillow(data, path):
    """Decode ``data`` with Pillow into an upright uint8 RGB array."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # TIFFs are already turned by load()
            if image.mode.startswith("I;16"):
                gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
                return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
            if image.mode in ("I", "F"):
                raise ImageReadError(path, f"unsupported pixel type (Pillow mode {image.mode})")
            return np.array(image.convert("RGB"))  # a writable copy, like OpenCV's result
    except _PILLOW_ERRORS as error:
        raise ImageReadError(path, f"could not be decoded ({error})") from error


def _confirm_complete(source, image_format, path):
    """Decode ``source`` with Pillow, raising ImageReadError when it is truncated or corrupt."""
    try:
        with Image.open(source) as image:
            image.load()
    except _PILLOW_ERRORS as error:
        raise ImageReadError(path, f"truncated or corrupt {image_format} file ({error})") from error


def _file_ends_with(path, marker):
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            if size < len(marker):
                return False
            file.seek(-len(marker), os.SEEK_END)
            return file.read() == marker
    except OSError as error:
        raise ImageReadError(path, f"could not be read ({error})") from error


def _apply_orientation(image, orientation):
    """Turn an (H, W, 3) array stored with EXIF ``orientation`` upright."""
    operation = _ORIENTATION_OPS.get(orientation)
    return image if operation is None else operation(image)
