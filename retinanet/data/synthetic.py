"""A deterministic synthetic shapes dataset in COCO layout, the repository's default dataset.

``generate_dataset(out_dir)`` writes::

    {out_dir}/train.json, val.json, test.json     COCO instances files
    {out_dir}/test_ground_truth.json              the test set with its annotations
    {out_dir}/images/{set}/{image_id:06d}.png     lossless 8-bit colour images

``test.json`` lists the test images and the categories but ``"annotations": []``: the
test set is held out, and ``test_ground_truth.json`` is only for scoring predictions.

Each image is small (width and height each a multiple of 16 in ``[min_size, max_size]``,
so landscape and portrait images both occur) and holds 0 to 6 filled shapes of the
classes in ``CLASS_NAMES`` on a flat, gradient or blotchy background with Gaussian noise.
A box is the tight extent of the pixels its shape changed, ``[x, y, w, h]`` in pixels
with ``w, h >= 1``; ``area`` is the number of those pixels.

Every image is drawn from its own ``numpy.random.Generator`` seeded with
``(seed, set index, image index)``, so the same arguments give byte-identical files and
one set's contents do not depend on the sizes of the others. Arrays are uint8 of shape
(H, W, 3) in OpenCV's BGR order (colours are random, so the order carries no meaning).
"""
import dataclasses
import os
import re
import time

import cv2
import numpy as np

from retinanet.data.image_io import write_png
from retinanet.util.io import write_json

CLASS_NAMES = ("ellipse", "rectangle", "triangle", "plus", "star", "ring")
EXTRA_CLASS_NAMES = ("diamond", "hexagon", "arrow", "x_cross")
SET_NAMES = ("train", "val", "test")

MAX_OBJECTS = 6
EMPTY_IMAGE_PROBABILITY = 0.05
MIN_OBJECT_SIZE = 24  # pixels, longest side of the box
MAX_OBJECT_FRACTION = 0.45  # of the image's short side
MAX_COVERED_FRACTION = 0.5  # of an object's box hidden under boxes drawn after it
PLACEMENT_ATTEMPTS = 25
MIN_COLOR_DISTANCE = 110.0  # Euclidean RGB distance from the mean colour under the object
ALPHA_CUTOFF = 64  # anti-aliased edge pixels fainter than 64/255 are not drawn
SUBPIXEL_SHIFT = 4  # cv2.fillPoly vertices carry 4 fractional bits
IMAGE_NAME_PATTERN = re.compile(r"^\d{6}\.png$")


@dataclasses.dataclass(frozen=True)
class Style:
    """What the generated images hold: the demo set by default, data of another character in ``STYLES``.

    classes: shape names, category ids 1..K in this order; min_object_size / max_object_size:
    the box's longest side in pixels (the maximum also capped at ``max_object_fraction`` of
    the image's short side); max_objects: objects tried per image (1..max); textured: busy
    backgrounds (stripes, checkerboards, fine noise) instead of flat, gradient or blotchy ones.
    """
    classes: tuple = CLASS_NAMES
    min_object_size: float = MIN_OBJECT_SIZE
    max_object_size: float | None = None
    max_object_fraction: float = MAX_OBJECT_FRACTION
    max_objects: int = MAX_OBJECTS
    textured: bool = False


STYLES = {
    "default": Style(),
    "small_objects": Style(min_object_size=8, max_object_size=28, max_objects=10),
    "crowded": Style(min_object_size=14, max_object_size=44, max_objects=24),
    "one_class": Style(classes=("ring",)),
    "ten_classes": Style(classes=CLASS_NAMES + EXTRA_CLASS_NAMES),
    "textured": Style(textured=True),
    # Three classes of 16-80 px objects, as in the original course repository's setting.
    "three_classes_16_80": Style(classes=("ellipse", "rectangle", "triangle"), min_object_size=16,
                                 max_object_size=80),
}


def _rotate(points, angle):
    """Rotate (N, 2) points by ``angle`` radians about the origin."""
    cos, sin = np.cos(angle), np.sin(angle)
    return points @ np.array([[cos, sin], [-sin, cos]])


def _circle(aspect, num_points=48):
    """(num_points, 2) vertices of an ellipse with radii 1 and ``aspect``."""
    angles = np.linspace(0.0, 2.0 * np.pi, num_points, endpoint=False)
    return np.stack([np.cos(angles), aspect * np.sin(angles)], axis=1)


def _unit_shape(rng, class_name):
    """Sample one shape's outline(s), centred on the origin, and its rotation in radians."""
    if class_name == "ellipse":
        return [_circle(rng.uniform(0.5, 1.0))], rng.uniform(0, np.pi)
    if class_name == "rectangle":
        half_height = rng.uniform(0.4, 1.0)
        outline = np.array([[-1, -half_height], [1, -half_height], [1, half_height], [-1, half_height]])
        return [outline], rng.uniform(-0.35, 0.35)
    if class_name == "triangle":
        angles = np.radians([90.0, 210.0, 330.0]) + rng.uniform(-0.2, 0.2, size=3)
        radii = rng.uniform(0.85, 1.0, size=3)
        return [np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)], rng.uniform(0, 2 * np.pi)
    if class_name == "plus":
        w = rng.uniform(0.28, 0.4)  # half the arm width
        outline = np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w],
                            [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]])
        return [outline], rng.uniform(-0.35, 0.35)
    if class_name == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        angles = np.arange(10) * np.pi / 5 - np.pi / 2
        return [np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)], rng.uniform(0, 2 * np.pi)
    if class_name == "ring":
        outer = _circle(rng.uniform(0.85, 1.0))
        return [outer, outer[::-1] * rng.uniform(0.5, 0.65)], rng.uniform(0, np.pi)
    return _extra_shape(rng, class_name)


def _extra_shape(rng, class_name):  # the shapes only the ten-class style uses
    if class_name == "diamond":
        half_width = rng.uniform(0.45, 0.7)
        return [np.array([[0, -1], [half_width, 0], [0, 1], [-half_width, 0]])], rng.uniform(-0.3, 0.3)
    if class_name == "hexagon":
        angles = np.arange(6) * np.pi / 3
        return [np.stack([np.cos(angles), np.sin(angles)], axis=1)], rng.uniform(0, np.pi / 3)
    if class_name == "arrow":
        w, head = rng.uniform(0.18, 0.28), rng.uniform(0.3, 0.5)
        outline = np.array([[-1, -w], [1 - 2 * head, -w], [1 - 2 * head, -2.2 * w], [1, 0],
                            [1 - 2 * head, 2.2 * w], [1 - 2 * head, w], [-1, w]])
        return [outline], rng.uniform(0, 2 * np.pi)
    if class_name == "x_cross":
        w = rng.uniform(0.2, 0.3)
        arm = np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w],
                        [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]])
        return [arm], np.pi / 4 + rng.uniform(-0.2, 0.2)
    raise ValueError(f"unknown shape class {class_name!r}")


def sample_shape(rng, category_id, size, width, height, margin=2, classes=CLASS_NAMES):
    """Sample a shape of ``category_id`` (1-based) whose box's longest side is ``size``.

    Returns a list of float (N, 2) outlines in pixel coordinates (a ring has two: outer
    and hole), placed at random with at least ``margin`` pixels to the image border.
    """
    outlines, angle = _unit_shape(rng, classes[category_id - 1])
    outlines = [_rotate(outline, angle) for outline in outlines]
    low, high = outlines[0].min(axis=0), outlines[0].max(axis=0)
    scale = size / (high - low).max()
    low, high = low * scale, high * scale
    center_x = rng.uniform(margin - low[0], width - 1 - margin - high[0])
    center_y = rng.uniform(margin - low[1], height - 1 - margin - high[1])
    return [outline * scale + (center_x, center_y) for outline in outlines]


def _outline_box(outlines):
    """Integer (x0, y0, x1, y1) pixel box around the outlines, x1 and y1 exclusive."""
    low, high = outlines[0].min(axis=0), outlines[0].max(axis=0)
    return int(np.floor(low[0])), int(np.floor(low[1])), int(np.ceil(high[0])) + 1, int(np.ceil(high[1])) + 1


def _too_hidden(boxes, new_box):
    """True if adding ``new_box`` on top would hide over half of any earlier box.

    Each box counts as hidden where any box drawn after it overlaps it.
    """
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        covered = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for cx0, cy0, cx1, cy1 in boxes[index + 1:] + [new_box]:
            covered[max(cy0 - y0, 0):max(cy1 - y0, 0), max(cx0 - x0, 0):max(cx1 - x0, 0)] = True
        if covered.mean() > MAX_COVERED_FRACTION:
            return True
    return False


def sample_object_layout(rng, width, height, style=STYLES["default"]):
    """Sample the objects of one image without drawing them.

    Returns a list of ``{"category_id": int, "outlines": [float (N, 2) arrays]}`` in
    drawing order. About 5% of layouts are empty; a shape that cannot be placed without
    hiding an earlier one is dropped after ``PLACEMENT_ATTEMPTS`` tries.
    """
    if rng.random() < EMPTY_IMAGE_PROBABILITY:
        return []
    max_size = style.max_object_fraction * min(width, height)
    if style.max_object_size is not None:
        max_size = min(max_size, style.max_object_size)
    max_size = max(max_size, style.min_object_size)
    objects, boxes = [], []
    for _ in range(rng.integers(1, style.max_objects + 1)):
        for _ in range(PLACEMENT_ATTEMPTS):
            category_id = int(rng.integers(1, len(style.classes) + 1))
            size = rng.uniform(style.min_object_size, max_size)
            outlines = sample_shape(rng, category_id, size, width, height, classes=style.classes)
            box = _outline_box(outlines)
            if not _too_hidden(boxes, box):
                objects.append({"category_id": category_id, "outlines": outlines})
                boxes.append(box)
                break
    return objects


def sample_image_size(rng, min_size, max_size):
    """Sample (width, height), each a multiple of 16 in [min_size, max_size]."""
    sizes = np.arange(-(-min_size // 16) * 16, max_size + 1, 16)
    return int(rng.choice(sizes)), int(rng.choice(sizes))


def render_background(rng, width, height, textured=False):
    """A uint8 (height, width, 3) flat, linear-gradient or low-frequency blotchy background,
    or with ``textured`` stripes, a checkerboard or fine noise."""
    if textured:
        return _render_texture(rng, width, height)
    kind = rng.integers(3)
    if kind == 0:
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = rng.integers(0, 256, size=3)
        return image
    if kind == 1:
        start, end = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = xs * np.cos(angle) + ys * np.sin(angle)
        ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
        return np.rint(start + ramp[..., None] * (end - start)).astype(np.uint8)
    grid = rng.integers(0, 256, size=3) + rng.normal(0, 40, size=(rng.integers(2, 7), rng.integers(2, 7), 3))
    blotches = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(blotches), 0, 255).astype(np.uint8)


def _render_texture(rng, width, height):
    """Busy backgrounds: the shapes must be told from texture, not just from a flat field."""
    kind = rng.integers(3)
    low, high = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # stripes at a random angle and period
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
    elif kind == 1:  # checkerboard
        cell = int(rng.integers(4, 14))
        weight = ((xs // cell + ys // cell) % 2).astype(np.float32)
    else:  # fine noise, slightly blurred
        weight = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), rng.uniform(0.8, 2.0))
        weight = (weight - weight.min()) / max(float(weight.max() - weight.min()), 1e-6)
    return np.rint(low + weight[..., None] * (high - low)).astype(np.uint8)


def draw_distractor_lines(rng, image):
    """Draw 0 to 3 thin straight lines across ``image`` in place (texture, not objects)."""
    height, width = image.shape[:2]
    if rng.random() < 0.35:
        for _ in range(rng.integers(1, 4)):
            start = (int(rng.integers(width)), int(rng.integers(height)))
            end = (int(rng.integers(width)), int(rng.integers(height)))
            color = tuple(int(c) for c in rng.integers(0, 256, size=3))
            cv2.line(image, start, end, color, 1, cv2.LINE_AA)


def pick_contrasting_color(rng, image, outlines):
    """A random colour at least ``MIN_COLOR_DISTANCE`` from the mean colour under the shape."""
    x0, y0, x1, y1 = _outline_box(outlines)
    local_mean = image[max(y0, 0):y1, max(x0, 0):x1].reshape(-1, 3).mean(axis=0)
    for _ in range(30):
        color = rng.integers(0, 256, size=3)
        if np.linalg.norm(color - local_mean) >= MIN_COLOR_DISTANCE:
            return color
    return np.where(local_mean < 128, 255, 0)


def draw_object(image, outlines, color):
    """Fill the outlines with ``color`` into ``image`` (uint8 (H, W, 3)) in place.

    Edges are anti-aliased; edge pixels with coverage under ``ALPHA_CUTOFF``/255 are left
    untouched, so the changed pixels are exactly the shape's mask. Returns
    ``(bbox, area)``: the mask's tight box ``[x, y, w, h]`` as floats and its pixel count,
    or ``(None, 0)`` if no pixel was drawn.
    """
    height, width = image.shape[:2]
    x0, y0, x1, y1 = _outline_box(outlines)
    x0, y0, x1, y1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, width), min(y1 + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None, 0
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    points = [np.rint((outline - (x0, y0)) * (1 << SUBPIXEL_SHIFT)).astype(np.int32) for outline in outlines]
    cv2.fillPoly(mask, points, 255, cv2.LINE_AA, SUBPIXEL_SHIFT)
    mask[mask < ALPHA_CUTOFF] = 0
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None, 0
    alpha = mask[..., None].astype(np.float32) / 255.0
    patch = image[y0:y1, x0:x1].astype(np.float32)
    blended = np.rint(patch * (1.0 - alpha) + np.asarray(color, dtype=np.float32) * alpha)
    image[y0:y1, x0:x1] = blended.astype(np.uint8)
    bbox = [float(x0 + cols.min()), float(y0 + rows.min()),
            float(cols.max() - cols.min() + 1), float(rows.max() - rows.min() + 1)]
    return bbox, int(rows.size)


def generate_image(seed, set_index, image_index, min_size, max_size, style=STYLES["default"]):
    """Draw one image. Returns (uint8 (H, W, 3) image, list of (category_id, bbox, area))."""
    rng = np.random.default_rng([seed, set_index, image_index])
    width, height = sample_image_size(rng, min_size, max_size)
    image = render_background(rng, width, height, style.textured)
    layout = sample_object_layout(rng, width, height, style)
    draw_distractor_lines(rng, image)
    objects = []
    for shape in layout:
        color = pick_contrasting_color(rng, image, shape["outlines"])
        bbox, area = draw_object(image, shape["outlines"], color)
        if bbox is not None:
            objects.append((shape["category_id"], bbox, area))
    noise_sigma = 0.0 if rng.random() < 0.25 else rng.uniform(2.0, 9.0)
    if noise_sigma > 0:
        noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sigma)
        image = np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)
    return image, objects


def _write_json(path, data):
    """Write ``data`` in a fixed, compact format (keys in the order built), atomically."""
    write_json(path, data, indent=None, sort_keys=False, separators=(",", ":"))


def _check_arguments(counts, min_size, max_size):
    """Raise ValueError for negative counts or a size range with no multiple of 16 in it."""
    if any(count < 0 for count in counts):
        raise ValueError(f"image counts must be >= 0, got {counts}")
    if min_size < 64 or max_size < min_size or -(-min_size // 16) * 16 > max_size:
        raise ValueError(f"need 64 <= min_size <= max_size with a multiple of 16 between them, "
                         f"got min_size={min_size}, max_size={max_size}")


def _generate_set(out_dir, set_name, count, seed, min_size, max_size, style):
    """Write one set's images; return its COCO dict with annotations."""
    image_dir = os.path.join(out_dir, "images", set_name)
    os.makedirs(image_dir, exist_ok=True)
    for stale_name in os.listdir(image_dir):
        if IMAGE_NAME_PATTERN.match(stale_name):
            os.remove(os.path.join(image_dir, stale_name))
    images, annotations = [], []
    for index in range(count):
        image, objects = generate_image(seed, SET_NAMES.index(set_name), index, min_size, max_size, style)
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        write_png(os.path.join(image_dir, file_name), image, compression=6)
        images.append({"id": image_id, "file_name": file_name, "width": image.shape[1], "height": image.shape[0]})
        for category_id, bbox, area in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "bbox": bbox, "area": float(area), "iscrowd": 0})
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(style.classes)]
    info = {"description": f"synthetic shapes, {set_name} set, seed {seed}", "version": "1.0"}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def _set_statistics(coco):
    """Counts for the summary: images, boxes per class, empty images, box side range."""
    names = [category["name"] for category in coco["categories"]]
    boxes_per_class = {name: 0 for name in names}
    for annotation in coco["annotations"]:
        boxes_per_class[names[annotation["category_id"] - 1]] += 1
    sides = [side for annotation in coco["annotations"] for side in annotation["bbox"][2:]]
    with_objects = {annotation["image_id"] for annotation in coco["annotations"]}
    return {"images": len(coco["images"]), "annotations": len(coco["annotations"]),
            "images_without_objects": len(coco["images"]) - len(with_objects),
            "boxes_per_class": boxes_per_class,
            "box_side_range": [min(sides), max(sides)] if sides else None}


def generate_dataset(out_dir, num_train=600, num_val=100, num_test=100, seed=3407,
                     min_size=160, max_size=256, force=False, style="default"):
    """Write the synthetic dataset under ``out_dir`` (layout in the module docstring).

    style: a name in ``STYLES`` or a ``Style``.

    Raises FileExistsError if a set's JSON file already exists and ``force`` is False.
    Returns a summary dict: ``output_dir``, ``seed``, ``class_names``, ``seconds`` and
    ``sets`` mapping each set name to its counts (see ``_set_statistics``).
    """
    if isinstance(style, str):
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
        style = STYLES[style]
    counts = {"train": num_train, "val": num_val, "test": num_test}
    _check_arguments(list(counts.values()), min_size, max_size)
    existing = [os.path.join(out_dir, f"{name}.json") for name in SET_NAMES
                if os.path.exists(os.path.join(out_dir, f"{name}.json"))]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass force=True (--force) to overwrite "
                              f"the dataset in {out_dir}")
    start_time = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    summary = {"output_dir": os.path.abspath(out_dir), "seed": seed, "class_names": list(style.classes), "sets": {}}
    for set_name in SET_NAMES:
        coco = _generate_set(out_dir, set_name, counts[set_name], seed, min_size, max_size, style)
        summary["sets"][set_name] = _set_statistics(coco)
        if set_name == "test":
            _write_json(os.path.join(out_dir, "test_ground_truth.json"), coco)
            coco = dict(coco, annotations=[])
        _write_json(os.path.join(out_dir, f"{set_name}.json"), coco)
    summary["seconds"] = time.perf_counter() - start_time
    return summary
