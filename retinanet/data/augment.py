"""Training-time augmentation: presets and knobs, with box geometry from torchvision.transforms.v2.

Evaluation never augments (``transforms.EvalTransform``). A training sample goes through, in order:

1. resize so the short side is one of ``train_sides`` (multi-scale; the long side still capped at
   ``max_side``), times a random ``scale_jitter`` factor when set;
2. with scale jitter, crop (factor > 1) or pad (factor < 1) back to the size the image would have had
   without the factor, the canvas: large-scale-jitter style, so a step costs what it did before;
3. horizontal flip, vertical flip (``vflip``) and a random multiple of 90 degrees (``rot90``), whose
   parity (quarter turn or not) the whole batch shares, so that a batch of non-square images keeps
   one orientation and is not padded to a square;
4. photometric jitter (brightness, contrast, saturation, hue) of strength ``photometric``;
5. boxes narrower or shorter than ``min_box_size`` dropped with their labels
   (``v2.SanitizeBoundingBoxes``), and ImageNet normalisation (``transforms.normalise``).

Boxes are ``tv_tensors.BoundingBoxes``: crop, pad, flips and rotations are v2's functional ops on
image and boxes together, so boxes cut by a crop are clipped by the library. Two steps are OpenCV:
the resize, exactly as ``EvalTransform`` resizes (same filter, boxes times the same ``scale``, so the
network trains on the pixels and coordinates it is evaluated on, and the ``flip`` preset reproduces
``transforms.TrainTransform``), and the hue shift, where v2's ``adjust_hue`` took 91 ms per 608x811
image against 2.4 ms for OpenCV's HSV conversion (one core).

Every random draw comes from the per-sample ``numpy.random.Generator`` the dataset builds from the
sampler's augmentation seed (``data.sampler``), and the batch-wide ones from the generator of the
batch's seed, never from torch's global generator, so the same
``--seed`` gives the same batches with any number of workers.
"""
import dataclasses

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from retinanet.data.transforms import IMAGENET_MEAN, normalise, resize_scale

# Short sides of multi-scale training, as fractions of --min_side: never larger than the evaluation
# size, so a step costs at most what it did without augmentation (detectron2's 640-800 for 800).
MULTI_SCALE_FACTORS = (0.8, 0.85, 0.9, 0.95, 1.0)
# What a preset sets; side_factors become --train_sides once --min_side is known.
PRESETS = {
    "off": {"flip": False, "side_factors": (1.0,), "scale_jitter": None, "photometric": 0.0, "min_box_size": 0.0},
    "flip": {"flip": True, "side_factors": (1.0,), "scale_jitter": None, "photometric": 0.0, "min_box_size": 0.0},
    "light": {"flip": True, "side_factors": MULTI_SCALE_FACTORS, "scale_jitter": None, "photometric": 0.2,
              "min_box_size": 0.0},
    "strong": {"flip": True, "side_factors": MULTI_SCALE_FACTORS, "scale_jitter": [0.5, 1.5], "photometric": 0.4,
               "min_box_size": 2.0},
}
AUGMENT_CHOICES = tuple(PRESETS)
DEFAULT_AUGMENT = "flip"
# The flags a preset fills when they are not given (None).
KNOB_FLAGS = ("train_sides", "scale_jitter", "photometric", "min_box_size")
# Padding in the mean colour normalises to about 0, the value the collate function pads with.
PAD_FILL = [round(255 * float(channel)) for channel in IMAGENET_MEAN]
COLOUR_OPS = ("brightness", "contrast", "saturation", "hue")


def preset_sides(preset, min_side):
    """The short sides of a preset for ``min_side``, ascending, without repeats."""
    return sorted({max(1, round(min_side * factor)) for factor in PRESETS[preset]["side_factors"]})


SETTING_NAMES = ("augment", "train_sides", "scale_jitter", "photometric", "vflip", "rot90", "min_box_size")


def resolved_settings(values):
    """The augmentation settings of a configuration whose knobs ``config.resolve_training_args``
    has already filled from the preset (what ``augment_settings`` returned then), read, not derived."""
    return {name: values[name] for name in SETTING_NAMES}


def augment_settings(values):
    """The augmentation flags of a training config (a dict), the preset filling the knobs not given.

    Returns {augment, train_sides, scale_jitter, photometric, vflip, rot90, min_box_size}; raises
    ValueError naming the flag on a value that cannot work."""
    preset = values.get("augment", DEFAULT_AUGMENT)
    if preset not in PRESETS:
        raise ValueError(f"--augment {preset}: expected one of {', '.join(AUGMENT_CHOICES)}")
    defaults = PRESETS[preset]
    settings = {"augment": preset, "vflip": bool(values.get("vflip", False)), "rot90": bool(values.get("rot90", False))}
    given = {name: values.get(name) for name in KNOB_FLAGS}
    settings["train_sides"] = list(given["train_sides"] or preset_sides(preset, values["min_side"]))
    jitter = given["scale_jitter"] if given["scale_jitter"] is not None else defaults["scale_jitter"]
    settings["scale_jitter"] = list(jitter) if jitter is not None else None
    for name in ("photometric", "min_box_size"):
        settings[name] = float(given[name] if given[name] is not None else defaults[name])
    _check_settings(settings)
    return settings


def _check_settings(settings):
    jitter = settings["scale_jitter"]
    if jitter is not None and not (len(jitter) == 2 and 0 < jitter[0] <= jitter[1]):
        raise ValueError(f"--scale_jitter {' '.join(map(str, jitter))}: expected LOW HIGH with 0 < LOW <= HIGH")
    if not 0 <= settings["photometric"] <= 1:
        raise ValueError(f"--photometric {settings['photometric']}: must be between 0 and 1")
    min_box_size = settings["min_box_size"]
    if 0 < min_box_size < 1:  # v2.SanitizeBoundingBoxes measures in whole pixels
        raise ValueError(f"--min_box_size {min_box_size}: must be 0 (keep every box) or at least 1 pixel")
    if min_box_size == 0 and jitter is not None and jitter[1] > 1:
        raise ValueError(f"--min_box_size 0: must be at least 1 with --scale_jitter {jitter[0]} {jitter[1]}, "
                         "whose crops leave boxes of no size to drop")


def describe(settings, max_side):
    """One line for the run's log: the preset and what it does."""
    parts = ["horizontal flip"] if PRESETS[settings["augment"]]["flip"] else []
    parts += ["vertical flip"] if settings["vflip"] else []
    parts += ["90-degree rotations"] if settings["rot90"] else []
    sides = settings["train_sides"]
    if len(sides) > 1:
        parts.append(f"short sides {' '.join(map(str, sides))} (long side at most {max_side})")
    if settings["scale_jitter"] is not None:
        low, high = settings["scale_jitter"]
        parts.append(f"scale jitter {low:g}-{high:g} with crop/pad to the canvas")
    if settings["photometric"]:
        parts.append(f"photometric jitter {settings['photometric']:g}")
    if settings["min_box_size"]:
        parts.append(f"boxes under {settings['min_box_size']:g} px dropped")
    return f"{settings['augment']} ({', '.join(parts) or 'none'})"


@dataclasses.dataclass
class Draw:
    """The random choices for one sample, so that the geometry can also be applied with fixed values.

    scale: resize factor from the file to the resized image; canvas: (height, width) to crop or pad
    to, None without scale jitter; top, left: the crop's corner; colour: (op, factor) in order."""
    scale: float
    canvas: tuple | None = None
    top: int = 0
    left: int = 0
    hflip: bool = False
    vflip: bool = False
    quarter_turns: int = 0
    colour: list = dataclasses.field(default_factory=list)


class TrainAugmentation:
    """The training transform: ``(image (H, W, 3) uint8 RGB, boxes (N, 4) xyxy, labels (N,), rng)`` ->
    ``(tensor (3, H', W') float32 normalised, boxes (M, 4) float32 in its pixels, labels (M,), scale)``.

    Unlike ``EvalTransform`` it takes and returns the labels, because it may drop boxes
    (``CocoDetection`` passes them when ``takes_labels`` is set)."""
    takes_labels = True

    def __init__(self, min_side, max_side, train_sides=None, flip=True, vflip=False, rot90=False, scale_jitter=None,
                 photometric=0.0, min_box_size=0.0):
        self.max_side = max_side
        self.train_sides = list(train_sides or [min_side])
        self.flip, self.vflip, self.rot90 = flip, vflip, rot90
        self.scale_jitter = tuple(scale_jitter) if scale_jitter is not None else None
        self.photometric = photometric
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=min_box_size) if min_box_size > 0 else None

    @classmethod
    def from_options(cls, values):
        """From train.py's flags as a mapping; the preset fills the knobs not given."""
        settings = augment_settings(values)
        return cls(values["min_side"], values["max_side"], settings["train_sides"],
                   flip=PRESETS[settings["augment"]]["flip"], vflip=settings["vflip"], rot90=settings["rot90"],
                   scale_jitter=settings["scale_jitter"], photometric=settings["photometric"],
                   min_box_size=settings["min_box_size"])

    def __call__(self, image, boxes, labels, rng=None, batch_rng=None):
        rng = rng if rng is not None else np.random.default_rng()
        return self.apply(image, boxes, labels, self.draw(rng, *image.shape[:2], batch_rng=batch_rng))

    def draw(self, rng, height, width, batch_rng=None):
        """The random choices for an image of this size, drawn in a fixed order. With one short side,
        no jitter and no colour, the only draw is the horizontal flip's, as in ``TrainTransform``.

        ``batch_rng``: the batch's generator, the same state for every image of a batch; the quarter
        turn's parity comes from it (from ``rng`` without it), the half turn from ``rng``."""
        sides = self.train_sides
        side = sides[int(rng.integers(len(sides)))] if len(sides) > 1 else sides[0]
        base = resize_scale(height, width, side, self.max_side)
        draw = Draw(scale=base)
        if self.scale_jitter is not None:
            draw.scale = base * rng.uniform(*self.scale_jitter)
            draw.canvas = resized_size(height, width, base)
            new_height, new_width = resized_size(height, width, draw.scale)
            draw.top = int(rng.integers(max(0, new_height - draw.canvas[0]) + 1))
            draw.left = int(rng.integers(max(0, new_width - draw.canvas[1]) + 1))
        draw.hflip = self.flip and rng.random() < 0.5
        draw.vflip = self.vflip and rng.random() < 0.5
        if self.rot90:
            odd = int((batch_rng if batch_rng is not None else rng).integers(2))
            draw.quarter_turns = odd + 2 * int(rng.integers(2))
        if self.photometric > 0:
            draw.colour = draw_colour(rng, self.photometric)
        return draw

    def apply(self, image, boxes, labels, draw):
        """The augmentation with the given choices (see ``__call__`` for shapes)."""
        image, boxes = resize_image(image, boxes, draw.scale)
        image = torch.from_numpy(image).permute(2, 0, 1)  # (3, H, W) view; v2 works on it in place of a copy
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=tuple(image.shape[-2:]))
        if draw.canvas is not None:
            image, boxes = crop_or_pad(image, boxes, draw.canvas, draw.top, draw.left)
        image, boxes = flip_and_rotate(image, boxes, draw.hflip, draw.vflip, draw.quarter_turns)
        pixels = image.permute(1, 2, 0).numpy()
        if draw.colour:
            pixels = adjust_colour(pixels, draw.colour)
        labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        if self.sanitize is not None:
            boxes, labels = drop_small_boxes(self.sanitize, boxes, labels)
        return normalise(pixels), boxes.numpy().astype(np.float32), labels.numpy(), draw.scale


def resized_size(height, width, scale):
    """(height, width) of an image resized by ``scale``, rounded as ``transforms.resize`` rounds."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image, boxes, scale):
    """(H, W, 3) uint8 and boxes (N, 4) -> both resized by ``scale``, with the filter and rounding
    of ``transforms.resize`` (which takes sides, not a factor)."""
    height, width = image.shape[:2]
    new_height, new_width = resized_size(height, width, scale)
    if (new_height, new_width) != (height, width):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
    return image, boxes * np.float32(scale)


def crop_or_pad(image, boxes, canvas, top, left):
    """Crop (3, H, W) and its BoundingBoxes to at most ``canvas`` (height, width) from (top, left),
    then pad at the bottom and right to ``canvas`` in the mean colour. Boxes are clipped to the crop."""
    height = min(image.shape[-2] - top, canvas[0])
    width = min(image.shape[-1] - left, canvas[1])
    image, boxes = F.crop(image, top, left, height, width), F.crop(boxes, top, left, height, width)
    padding = [0, 0, canvas[1] - width, canvas[0] - height]  # left, top, right, bottom
    if padding[2] or padding[3]:
        image, boxes = F.pad(image, padding, fill=PAD_FILL), F.pad(boxes, padding)
    return image, boxes


def flip_and_rotate(image, boxes, hflip, vflip, quarter_turns):
    """Flips, then ``quarter_turns`` x 90 degrees counter-clockwise, of (3, H, W) and its BoundingBoxes."""
    if hflip:
        image, boxes = F.horizontal_flip(image), F.horizontal_flip(boxes)
    if vflip:
        image, boxes = F.vertical_flip(image), F.vertical_flip(boxes)
    if quarter_turns:
        angle = 90 * quarter_turns
        image, boxes = F.rotate(image, angle, expand=True), F.rotate(boxes, angle, expand=True)
    return image, boxes


def draw_colour(rng, strength):
    """The four colour ops in random order with their factors: brightness, contrast and saturation
    in [1 - strength, 1 + strength] (as v2.ColorJitter), hue shifted by up to strength / 4 of the circle."""
    low = max(0.0, 1 - strength)
    factors = {"brightness": rng.uniform(low, 1 + strength), "contrast": rng.uniform(low, 1 + strength),
               "saturation": rng.uniform(low, 1 + strength), "hue": rng.uniform(-strength / 4, strength / 4)}
    return [(COLOUR_OPS[index], factors[COLOUR_OPS[index]]) for index in rng.permutation(len(COLOUR_OPS))]


def adjust_colour(pixels, colour):
    """(H, W, 3) uint8 -> the same with the colour ops of ``draw_colour`` applied in order."""
    for name, factor in colour:
        if name == "hue":
            pixels = shift_hue(pixels, factor)
            continue
        adjust = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
                  "saturation": F.adjust_saturation}[name]
        pixels = adjust(torch.from_numpy(pixels).permute(2, 0, 1), factor).permute(1, 2, 0).numpy()
    return pixels


def shift_hue(pixels, shift):
    """Shift the hue of (H, W, 3) uint8 RGB by ``shift`` of the colour circle (v2.functional.adjust_hue's
    meaning), through OpenCV's 8-bit HSV, whose hue has 180 steps."""
    steps = round(shift * 180)
    if steps == 0:
        return pixels
    hsv = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + steps) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def drop_small_boxes(sanitize, boxes, labels):
    """(BoundingBoxes, labels (N,)) without the boxes under ``sanitize``'s min_size, labels kept aligned."""
    kept = sanitize({"boxes": boxes, "labels": labels})
    return kept["boxes"], kept["labels"]
