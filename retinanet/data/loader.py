"""Batching: the collate function, DataLoaders over the aspect-ratio sampler, and plain image files.

:func:`collate` pads a batch to a common size, a multiple of 32 (the data contract is in
``retinanet/data/coco.py``). :func:`build_loader` is the one way the package makes a loader for
a COCO set, for training, evaluation and benchmarks alike. :class:`ImageFiles` serves images
that belong to no COCO set (``vis.py --images``) under the same contract, with ids 1..N.
"""
import atexit
import importlib
import math
import os
import signal
import weakref

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from retinanet.data.image_io import IMAGE_EXTENSIONS, load_image_rgb
from retinanet.data.sampler import AspectRatioBatchSampler


def collate(batch, size_divisor=32):
    """Pad images to a common (H, W), multiples of ``size_divisor``.

    Samples that failed to load (None) are dropped; the number dropped is returned so the
    training loop can count them. Returns (images (B, 3, H, W), targets, num_skipped).
    """
    samples = [sample for sample in batch if sample is not None]
    num_skipped = len(batch) - len(samples)
    if not samples:
        return None, [], num_skipped
    height = max(image.shape[1] for image, _ in samples)
    width = max(image.shape[2] for image, _ in samples)
    height = int(math.ceil(height / size_divisor) * size_divisor)
    width = int(math.ceil(width / size_divisor) * size_divisor)
    images = torch.zeros(len(samples), 3, height, width)
    for slot, (image, _) in enumerate(samples):
        images[slot, :, : image.shape[1], : image.shape[2]] = image
    return images, [target for _, target in samples], num_skipped


class DetectionLoader(DataLoader):
    """A DataLoader whose worker processes are shut down in order when the program ends.

    The workers ignore SIGINT and SIGTERM (``_ignore_stop_signals``), so multiprocessing's own exit
    handler, which terminates daemon children with SIGTERM and then waits for them, would wait for
    ever on persistent workers: ``shutdown_loader_workers`` runs first (atexit handlers run last
    registered first) and tells them to finish through their queues."""

    def _get_iterator(self):
        iterator = super()._get_iterator()
        if self.num_workers > 0:
            _WORKER_ITERATORS.add(iterator)
            _WORKER_PROCESSES[:] = [process for process in _WORKER_PROCESSES if process.is_alive()]
            _WORKER_PROCESSES.extend(getattr(iterator, "_workers", []))
        return iterator

    def shutdown(self):
        """Stop this loader's worker processes now (the end of a run, also one ended by an error,
        whose traceback may keep the iterator alive); idle workers exit at once."""
        iterator = getattr(self, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            workers = list(getattr(iterator, "_workers", []))
            iterator._shutdown_workers()
            _WORKER_ITERATORS.discard(iterator)
            _stop(workers)
        self._iterator = None


_WORKER_ITERATORS = weakref.WeakSet()
_WORKER_PROCESSES = []
# How long a worker may take to finish the batch in hand once told to stop.
WORKER_STOP_SECONDS = 10


def shutdown_loader_workers():
    """Stop the worker processes of every DetectionLoader: idle ones exit at once, busy ones after
    the batch in hand; one still there after WORKER_STOP_SECONDS (it ignores SIGTERM) is killed."""
    for iterator in list(_WORKER_ITERATORS):
        iterator._shutdown_workers()
        _WORKER_ITERATORS.discard(iterator)
    _stop(_WORKER_PROCESSES)
    _WORKER_PROCESSES.clear()


def _stop(processes):
    for process in processes:
        process.join(timeout=WORKER_STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()


# multiprocessing.util registers its exit handler when first imported, which may be as late as the
# first worker's start: importing it here puts ours after it, so that ours runs first.
importlib.import_module("multiprocessing.util")
atexit.register(shutdown_loader_workers)


def _ignore_stop_signals(worker_id):
    # Ctrl-C and SIGTERM are handled by the main process, which stops between two steps and saves;
    # workers keep serving until it shuts them down. Schedulers (Slurm's scancel, docker stop,
    # Kubernetes) and a terminal's Ctrl-C signal the whole process group, workers included.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_loader(dataset, *, batch_size, shuffle=False, drop_last=False, seed=0, workers=0, pin_memory=False,
                 rank=0, world_size=1):
    """A DataLoader whose batches never mix aspect-ratio groups, sharded over ``world_size`` processes.

    ``dataset`` must offer ``aspect_ratios()`` (read from metadata, no image decoded).
    ``shuffle``/``seed``: the sampler's order is a function of ``seed`` and the epoch
    (``loader.batch_sampler.set_epoch``), so a resumed run sees the same batches.
    """
    sampler = AspectRatioBatchSampler(dataset.aspect_ratios(), batch_size, drop_last=drop_last, shuffle=shuffle,
                                      seed=seed, num_replicas=world_size, rank=rank)
    return DetectionLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, persistent_workers=workers > 0,
                      worker_init_fn=_ignore_stop_signals if workers > 0 else None)


def list_images(paths):
    """Expand folders (non-recursive, sorted) and keep image files; raises ValueError naming the path."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(paths)}")
    return files


class ImageFiles(Dataset):
    """Images that belong to no COCO set; ids are 1..N in the given order."""

    def __init__(self, files, transform):
        self.files = list(files)
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def aspect_ratios(self):
        # Unknown without decoding; one group keeps the given order (batches may pad more).
        return [1.0] * len(self.files)

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        return sample_from_image(load_image_rgb(self.files[index]), self.transform, image_id=index + 1)


def sample_from_image(image, transform, image_id):
    """(tensor, target) of the data contract for an RGB uint8 image without ground truth."""
    tensor, _, scale = transform(image, np.zeros((0, 4), dtype=np.float32))
    return tensor, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                    "image_id": image_id, "orig_size": tuple(image.shape[:2]),
                    "size": tuple(tensor.shape[-2:]), "scale": float(scale)}
