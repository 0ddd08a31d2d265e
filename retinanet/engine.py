"""The training and evaluation loops, shared by the scripts, the ``Detector`` API, benchmarks and tests.

- :func:`train_one_epoch`: one pass over a loader, the scheduler stepping every iteration;
- :func:`detect_batch`: one padded batch -> detections in original-image pixels (the single
  inference path: ``predict``, ``evaluate`` and ``Detector.predict`` all go through it);
- :func:`predict`: a loader -> a COCO results list;
- :func:`evaluate`: ``predict`` on every process, gathered and scored on the main one.

Nothing here reads argparse objects: every setting is an explicit keyword.
"""
import dataclasses
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


class LossExplosionWatch:
    """Stops a run whose loss explodes without turning non-finite (a rate far too high): a step's loss
    above ``factor`` times the run's first loss raises NonFiniteLossError with the rate's advice.
    ``reference``: the first loss, kept in checkpoints so that a resumed run keeps its yardstick."""

    def __init__(self, factor=100.0, reference=None):
        self.factor = factor
        self.reference = reference

    def check(self, loss, epoch, step, rate):
        if self.reference is None:
            self.reference = loss
        elif loss > self.factor * self.reference:
            raise NonFiniteLossError(
                f"the loss exploded at epoch {epoch}, step {step} (rate {rate:.3g}): {loss:.6g}, more than "
                f"{self.factor:g} times the run's first loss {self.reference:.4g}. Try a lower --learning_rate")


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

    def in_float32(self):
        """The same place and memory format without autocast."""
        return dataclasses.replace(self, amp_dtype=None)

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
                    should_stop=None, on_precision_fallback=None, explosion_watch=None, on_step=None):
    """One pass over ``loader`` (the part after ``progress.steps`` when resuming mid-epoch).

    ``progress`` (an EpochProgress) is updated after every step. ``should_stop`` (a callable) is
    asked after every step; when it says yes the loop raises KeyboardInterrupt there, between two
    steps, where the saved state is consistent. Returns {'loss', 'cls_loss', 'box_loss', 'lr',
    'seconds', 'images_per_second', 'images', 'skipped_images'}: losses averaged over the epoch's
    steps (and over processes), 'lr' the rate of the last step. ``on_precision_fallback(reason)`` is
    called when a step had to be taken in float32 (``training_step``); the rest of the epoch then
    runs in float32. ``explosion_watch`` (a LossExplosionWatch) is shown every step's loss.
    ``on_step(step, values, lr)`` is called after every step with its losses (loss, cls, box) and rate.
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
        values, fallback = training_step(model, criterion, optimizer, device_config.move(images), targets,
                                         device_config, scaler, grad_clip, epoch, step)
        if fallback is not None:
            device_config = device_config.in_float32()
            if on_precision_fallback is not None:
                on_precision_fallback(fallback)
        last_lr = optimizer.param_groups[0]["lr"]
        if explosion_watch is not None:
            explosion_watch.check(float(values[0]), epoch, step, last_lr)
        lr_scheduler.step()
        sums += values
        images_this_call += images.shape[0]
        progress.sums, progress.steps, progress.images = sums.tolist(), step, progress.images + images.shape[0]
        if on_step is not None:
            on_step(step, values, last_lr)
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
    """Forward, loss, backward, clip, step. Returns ((loss, cls_loss, box_loss) float64 CPU tensor,
    None or the reason the step was taken in float32).

    Under reduced precision (bfloat16 without a gradient scaler), a non-finite loss or gradient is
    retried once in float32 on the same batch before anything is changed: when float32 is finite
    the step is taken in float32 and the reason is returned, so that the caller keeps the rest of
    the run in float32; when float32 fails too, the rate or the data is at fault and
    NonFiniteLossError says so. (A retried step updates BatchNorm running statistics twice; the
    default frozen or group norms have none.)"""
    rate = optimizer.param_groups[0]["lr"]
    retry = device_config.amp_dtype is not None and scaler is None
    values, norm, problem = _forward_backward(model, criterion, optimizer, images, targets, device_config, scaler)
    fallback = None
    if problem is not None and retry:
        reduced_problem, reduced_values = problem, values
        values, norm, problem = _forward_backward(model, criterion, optimizer, images, targets,
                                                  device_config.in_float32(), scaler)
        if problem is None:
            fallback = (f"{_dtype_name(device_config.amp_dtype)} gave a non-finite {reduced_problem} at epoch "
                        f"{epoch}, step {step} ({_format_losses(reduced_values)}), float32 a finite one on "
                        "the same batch: the precision was at fault, so the run goes on in float32")
        else:
            raise NonFiniteLossError(
                f"non-finite {problem} at epoch {epoch}, step {step} (rate {rate:.3g}) in "
                f"{_dtype_name(device_config.amp_dtype)} and again in float32 on the same batch "
                f"({_format_losses(values)}): not the precision. Try a lower --learning_rate")
    elif problem is not None:
        raise NonFiniteLossError(
            f"non-finite {problem} at epoch {epoch}, step {step} (rate {rate:.3g}, "
            f"{_dtype_name(device_config.amp_dtype or torch.float32)}): {_format_losses(values)}. "
            "Try a lower --learning_rate")
    if grad_clip and grad_clip > 0:
        _clip_gradients(model, norm, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return values, fallback


def _forward_backward(model, criterion, optimizer, images, targets, device_config, scaler):
    """(losses as a float64 CPU tensor, the gradient norm on the device, None or what was not finite:
    'loss' or 'gradient'). The gradients are left in the parameters (unscaled) for the step."""
    with device_config.autocast():
        outputs = model(images)
    losses = criterion(outputs, targets)
    loss = losses["loss"]
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    norm = _gradient_norm(model)
    # One device-to-host copy per step serves the checks and the running averages.
    host = torch.stack([loss.detach(), losses["cls_loss"].detach(), losses["box_loss"].detach(),
                        norm.to(loss.device, loss.dtype)]).double().cpu()
    values = host[:3]
    if not torch.isfinite(values).all():
        return values, norm, "loss"
    # With a gradient scaler (float16) non-finite gradients are expected: the scaler skips the step.
    if scaler is None and not torch.isfinite(host[3]):
        return values, norm, "gradient"
    return values, norm, None


def _gradient_norm(model):
    """The 2-norm of all gradients as one tensor on the device (inf or NaN when any is not finite)."""
    grads = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grad, dtype=torch.float32)
                                                 for grad in grads]))


def _clip_gradients(model, norm, max_norm):
    """Scale the gradients so that their norm is at most ``max_norm`` (as clip_grad_norm_, reusing
    ``norm``, so the device is not asked twice)."""
    factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for parameter in model.parameters():
        if parameter.grad is not None:
            parameter.grad.mul_(factor.to(parameter.grad.device, parameter.grad.dtype))


def _format_losses(values):
    return f"cls_loss={values[1].item():.4g}, box_loss={values[2].item():.4g}"


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


@torch.no_grad()
def detect_batch(model, images, targets, *, postprocessor, device_config):
    """images (B, 3, H, W) padded, targets with ``size`` and ``scale`` -> one dict per image with
    ``boxes`` (D, 4) xyxy in original-image pixels, ``scores`` (D,), ``labels`` (D,) contiguous."""
    with device_config.autocast():
        outputs = model(device_config.move(images))
    return postprocessor(outputs, [t["size"] for t in targets], [t["scale"] for t in targets],
                         [t.get("orig_size") for t in targets])


@torch.no_grad()
def predict(model, loader, *, postprocessor, device_config, label_to_category_id, progress_desc="inference",
            stats=None, should_stop=None):
    """Run the model over ``loader`` and return detections as a COCO results list.

    Images that fail to decode (a dataset built with ``skip_unreadable=True``) are skipped; their
    number is stored as ``stats['skipped_images']`` when a ``stats`` dict is given. ``should_stop``
    (a callable) is asked after every batch; when it says yes, KeyboardInterrupt is raised there."""
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
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt
    if stats is not None:
        stats["skipped_images"] = skipped
    return results


def evaluate(model, loader, *, postprocessor, device_config, evaluator="faster", stats=None, should_stop=None):
    """Predict on ``loader``'s COCO set (sharded over processes) and score it on the main process.

    Returns (results, evaluation dict or None); the evaluation is None on other processes and for
    a set without annotations (see ``evaluation.coco_eval.evaluate_detections`` for its keys).
    ``stats``, when given, receives ``skipped_images``: images that failed to decode, over all
    processes (they count as images without detections). ``should_stop``: as for ``predict``.
    """
    dataset = loader.dataset
    own = {}
    results = predict(model, loader, postprocessor=postprocessor, device_config=device_config,
                      label_to_category_id=dataset.label_to_category_id, stats=own, should_stop=should_stop)
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
