"""Image transforms for training and evaluation.

Both resize so that the short side is ``min_side`` unless the long side would then exceed
``max_side`` (then the long side is ``max_side``), and normalise with the ImageNet mean and
standard deviation. Training also flips horizontally with probability 0.5. Padding to a
multiple of 32 happens when a batch is collated (``data.loader.collate``).
"""
import cv2
import numpy as np
import torch

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# The paper's image size; the scripts' defaults and what a checkpoint without sizes falls back to.
DEFAULT_MIN_SIDE = 608
DEFAULT_MAX_SIDE = 1024
# Longest image sides accepted: beyond them a single resized image needs gigabytes of memory.
MAX_MIN_SIDE = 4096
MAX_MAX_SIDE = 8192


def image_size_problem(min_side, max_side):
    """Why ``min_side`` / ``max_side`` (as read from a file) cannot size images, or None: each must
    be an integer within the flags' own ranges."""
    for name, value, limit in (("min_side", min_side, MAX_MIN_SIDE), ("max_side", max_side, MAX_MAX_SIDE)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            return f"{name} {value!r} is not a side length from 1 to {limit} pixels"
    return None


def resize_scale(height, width, min_side, max_side):
    """The factor that maps an image of this size to the training/evaluation size."""
    scale = min_side / min(height, width)
    if max(height, width) * scale > max_side:
        scale = max_side / max(height, width)
    return scale


def resize(image, boxes, min_side, max_side):
    """image (H, W, 3) uint8, boxes (N, 4) xyxy -> resized image, scaled boxes, scale."""
    height, width = image.shape[:2]
    scale = resize_scale(height, width, min_side, max_side)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new_size != (width, height):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, new_size, interpolation=interpolation)
    return image, boxes * np.float32(scale), scale


def normalise(image):
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 tensor, ImageNet-normalised."""
    scaled = image.astype(np.float32) * np.float32(1 / 255.0)
    scaled -= IMAGENET_MEAN
    scaled *= 1.0 / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


def horizontal_flip(image, boxes):
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return image[:, ::-1], flipped


class EvalTransform:
    def __init__(self, min_side=DEFAULT_MIN_SIDE, max_side=DEFAULT_MAX_SIDE):
        self.min_side = min_side
        self.max_side = max_side

    def __call__(self, image, boxes, rng=None):
        """Returns (tensor (3, H, W), boxes (N, 4) in resized pixels, scale)."""
        image, boxes, scale = resize(image, boxes, self.min_side, self.max_side)
        return normalise(image), boxes, scale


class TrainTransform(EvalTransform):
    def __init__(self, min_side=DEFAULT_MIN_SIDE, max_side=DEFAULT_MAX_SIDE, flip_probability=0.5):
        super().__init__(min_side, max_side)
        self.flip_probability = flip_probability

    def __call__(self, image, boxes, rng=None):
        """``rng``: a numpy Generator, so the augmentation of each sample is reproducible."""
        image, boxes, scale = resize(image, boxes, self.min_side, self.max_side)
        rng = rng if rng is not None else np.random.default_rng()
        if rng.random() < self.flip_probability:
            image, boxes = horizontal_flip(image, boxes)
        return normalise(image), boxes, scale
