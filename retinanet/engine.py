"""The training and evaluation loops, shared by the scripts, the ``Detector`` API, benchmarks and tests.

- :func:`train_one_epoch`: one pass over a loader, the scheduler stepping every iteration;
- :func:`detect_batch`: one padded batch -> detections in original-image pixels (the single
  inference path: ``predict``, ``evaluate`` and ``Detector.predict`` all go through it);
- :func:`predict`: a loader -> a COCO results list;
- :func:`evaluate`: ``predict`` on every process, gathered and scored on the main one.

Nothing here reads argparse objects: every setting is an explicit keyword.
"""
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from retinanet.evaluation.coco_eval import evaluate_detections
from retinanet.models.box_coding import xyxy_to_xywh
from retinanet.util import distributed


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class TooManySkippedImagesError(RuntimeError):
    """More training images failed to decode than --max_skipped_images allows."""


@dataclass(frozen=True)
class DeviceConfig:
    """Where and how the network runs: the device, an autocast dtype (None: float32), the memory format."""
    device: torch.device = torch.device("cpu")
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self):
        """bfloat16/float16 autocast when ``amp_dtype`` is set, else a no-op context."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def move(self, images):
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


@dataclass
class EpochProgress:
    """Running sums of an epoch, kept so that an interrupted epoch can be saved and finished later
    with the same averages. ``sums`` are (loss, cls_loss, box_loss) summed over ``steps``."""
    sums: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    steps: int = 0
    images: int = 0
    skipped: int = 0

    def as_dict(self):
        return {"sums": list(self.sums), "steps": self.steps, "images": self.images, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, saved):
        return cls(**saved) if saved else cls()


def train_one_epoch(model, criterion, optimizer, lr_scheduler, loader, *, epoch, device_config, progress,
                    scaler=None, grad_clip=0.1, max_skipped_images=10, print_every=50, log=print,
                    should_stop=None):
    """One pass over ``loader`` (the part after ``progress.steps`` when resuming mid-epoch).

    ``progress`` (an EpochProgress) is updated after every step. ``should_stop`` (a callable) is
    asked after every step; when it says yes the loop raises KeyboardInterrupt there, between two
    steps, where the saved state is consistent. Returns {'loss', 'cls_loss', 'box_loss', 'lr',
    'seconds', 'images_per_second', 'images', 'skipped_images'}: losses averaged over the epoch's
    steps (and over processes), 'lr' the rate of the last step.
    """
    model.train()
    sums = torch.tensor(progress.sums, dtype=torch.float64)
    start = time.perf_counter()
    images_this_call = 0
    last_lr = optimizer.param_groups[0]["lr"]
    show_bar = distributed.is_main_process() and sys.stderr.isatty()
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not show_bar, dynamic_ncols=True, leave=False,
               initial=progress.steps, total=len(loader))
    for images, targets, num_skipped in bar:
        progress.skipped += num_skipped
        if progress.skipped > max_skipped_images:
            raise TooManySkippedImagesError(
                f"{progress.skipped} images could not be decoded (limit --max_skipped_images "
                f"{max_skipped_images}); run tools/check_dataset.py to list them")
        if images is None:
            continue
        step = progress.steps + 1
        values = training_step(model, criterion, optimizer, device_config.move(images), targets, device_config,
                                scaler, grad_clip, epoch, step)
        last_lr = optimizer.param_groups[0]["lr"]
        lr_scheduler.step()
        sums += values
        images_this_call += images.shape[0]
        progress.sums, progress.steps, progress.images = sums.tolist(), step, progress.images + images.shape[0]
        if show_bar:
            bar.set_postfix(loss=f"{values[0]:.4f}", cls=f"{values[1]:.4f}", box=f"{values[2]:.4f}")
        elif print_every and step % print_every == 0 and distributed.is_main_process():
            log(f"epoch {epoch} step {step}/{len(loader)} loss {values[0]:.4f} "
                f"(cls {values[1]:.4f}, box {values[2]:.4f}) lr {last_lr:.3g}")
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
    bar.close()
    seconds = time.perf_counter() - start
    totals = distributed.all_reduce_sum(
        torch.cat([sums, torch.tensor([progress.steps, progress.images, images_this_call], dtype=torch.float64)]))
    steps_total = max(1.0, float(totals[3]))
    return {
        "loss": float(totals[0]) / steps_total,
        "cls_loss": float(totals[1]) / steps_total,
        "box_loss": float(totals[2]) / steps_total,
        "lr": last_lr,
        "seconds": seconds,
        "images": int(totals[4]),
        "images_per_second": float(totals[5]) / max(seconds, 1e-9),
        "skipped_images": progress.skipped,
    }


def training_step(model, criterion, optimizer, images, targets, device_config, scaler, grad_clip, epoch, step):
    """Forward, loss, backward, clip, step. Returns the (loss, cls_loss, box_loss) float64 CPU tensor."""
    with device_config.autocast():
        outputs = model(images)
    losses = criterion(outputs, targets)
    loss = losses["loss"]
    # One device-to-host copy per step serves both the NaN check and the running averages.
    values = torch.stack([loss, losses["cls_loss"], losses["box_loss"]]).detach().double().cpu()
    if not torch.isfinite(values).all():
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {step}: cls_loss={values[1].item():.4g}, "
            f"box_loss={values[2].item():.4g}. Try a lower --learning_rate"
            + (", or run without --amp" if device_config.amp_dtype is not None else ""))
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return values


@torch.no_grad()
def detect_batch(model, images, targets, *, postprocessor, device_config):
    """images (B, 3, H, W) padded, targets with ``size`` and ``scale`` -> one dict per image with
    ``boxes`` (D, 4) xyxy in original-image pixels, ``scores`` (D,), ``labels`` (D,) contiguous."""
    with device_config.autocast():
        outputs = model(device_config.move(images))
    return postprocessor(outputs, [t["size"] for t in targets], [t["scale"] for t in targets])


@torch.no_grad()
def predict(model, loader, *, postprocessor, device_config, label_to_category_id, progress_desc="inference",
            stats=None):
    """Run the model over ``loader`` and return detections as a COCO results list.

    Images that fail to decode (a dataset built with ``skip_unreadable=True``) are skipped; their
    number is stored as ``stats['skipped_images']`` when a ``stats`` dict is given."""
    model.eval()
    results = []
    skipped = 0
    show_bar = distributed.is_main_process() and sys.stderr.isatty()
    for images, targets, num_skipped in tqdm(loader, desc=progress_desc, disable=not show_bar, leave=False):
        skipped += num_skipped
        if images is None:
            continue
        detections = detect_batch(model, images, targets, postprocessor=postprocessor, device_config=device_config)
        for target, detection in zip(targets, detections):
            results.extend(detections_to_coco(detection, target["image_id"], label_to_category_id))
    if stats is not None:
        stats["skipped_images"] = skipped
    return results


def evaluate(model, loader, *, postprocessor, device_config, evaluator="faster", stats=None):
    """Predict on ``loader``'s COCO set (sharded over processes) and score it on the main process.

    Returns (results, evaluation dict or None); the evaluation is None on other processes and for
    a set without annotations (see ``evaluation.coco_eval.evaluate_detections`` for its keys).
    ``stats``, when given, receives ``skipped_images``: images that failed to decode, over all
    processes (they count as images without detections).
    """
    dataset = loader.dataset
    own = {}
    results = predict(model, loader, postprocessor=postprocessor, device_config=device_config,
                      label_to_category_id=dataset.label_to_category_id, stats=own)
    parts = distributed.all_gather_objects((results, own["skipped_images"]))
    results = [entry for part, _ in parts for entry in part]
    if stats is not None:
        stats["skipped_images"] = sum(skipped for _, skipped in parts)
    if not distributed.is_main_process() or not dataset.has_annotations:
        return results, None
    return results, evaluate_detections(dataset.json_path, results, evaluator=evaluator)


def detections_to_coco(detection, image_id, label_to_category_id):
    """One image's detections -> COCO result entries (bbox as x, y, w, h, rounded to 0.01 px)."""
    boxes = xyxy_to_xywh(detection["boxes"].cpu().double())
    entries = []
    for box, score, label in zip(boxes.tolist(), detection["scores"].cpu().tolist(), detection["labels"].cpu().tolist()):
        entries.append({
            "image_id": int(image_id),
            "category_id": label_to_category_id[label],
            "bbox": [round(value, 2) for value in box],
            "score": round(float(score), 5),
        })
    return entries
