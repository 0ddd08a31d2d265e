"""Running a saved model: rebuild it from a checkpoint, and read plain image folders."""
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from retinanet.runs.checkpoint import load_checkpoint, model_from_checkpoint
from retinanet.data.coco import collate
from retinanet.data.image_io import load_image_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def load_model(checkpoint_path, device, expected_depth=None):
    """Returns (model in eval mode on ``device``, checkpoint dict). ``expected_depth``, when
    given, must agree with the checkpoint's."""
    checkpoint = load_checkpoint(checkpoint_path)
    saved_depth = checkpoint.get("args", {}).get("depth")
    if expected_depth is not None and saved_depth != expected_depth:
        raise SystemExit(f"error: --depth {expected_depth} disagrees with {checkpoint_path}, which holds a "
                         f"ResNet-{saved_depth} model; leave --depth out to use the checkpoint's")
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    return model.to(device).eval(), checkpoint


def image_sizes_from(checkpoint, min_side=None, max_side=None):
    """The resize the model was trained with, unless overridden."""
    args = checkpoint.get("args", {})
    return min_side or args.get("min_side", 608), max_side or args.get("max_side", 1024)


def list_images(paths):
    """Expand folders (non-recursive, sorted) and keep image files."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise SystemExit(f"error: {path}: no such file or folder")
    if not files:
        raise SystemExit(f"error: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(paths)}")
    return files


class ImageFiles(Dataset):
    """Images that belong to no COCO set; ids are 1..N in the given order."""

    def __init__(self, files, transform):
        self.files = list(files)
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        image = load_image_rgb(self.files[index])
        tensor, _, scale = self.transform(image, np.zeros((0, 4), dtype=np.float32))
        return tensor, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                        "image_id": index + 1, "orig_size": tuple(image.shape[:2]),
                        "size": tuple(tensor.shape[-2:]), "scale": float(scale)}


def image_files_loader(files, transform, batch_size, workers):
    return DataLoader(ImageFiles(files, transform), batch_size=batch_size, num_workers=workers, collate_fn=collate)
