"""The training and evaluation loops, shared by the scripts, the benchmarks and the tests."""
import sys
import time
from contextlib import nullcontext

import torch
from tqdm import tqdm

from retinanet.util import distributed


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class TooManySkippedImagesError(RuntimeError):
    """More training images failed to decode than --max_skipped_images allows."""


def autocast_context(device, amp_dtype):
    """bfloat16/float16 autocast when ``amp_dtype`` is set, else a no-op context."""
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def move_images(images, device, channels_last=False):
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def train_one_epoch(model, criterion, optimizer, lr_scheduler, loader, device, epoch, *, scaler=None,
                    amp_dtype=None, grad_clip=0.1, channels_last=False, max_skipped_images=10,
                    print_every=50, log=print, progress=None, stop_requested=None):
    """One pass over ``loader``; the scheduler steps every iteration.

    ``progress`` (a dict, updated in place after every step) holds the running sums, so that an
    interrupted epoch can be saved and finished later with the same averages: ``sums`` (loss,
    cls_loss, box_loss), ``steps``, ``images`` and ``skipped``. Returns {'loss', 'cls_loss',
    'box_loss', 'lr', 'seconds', 'images_per_second', 'images', 'skipped_images'}, the losses
    averaged over the epoch's steps (and over processes), 'lr' the rate of the last step.
    ``stop_requested`` (a callable) is asked after every step; when it says yes the loop raises
    KeyboardInterrupt there, between two steps, where the saved state is consistent.
    """
    model.train()
    progress = {} if progress is None else progress
    progress.setdefault("sums", [0.0, 0.0, 0.0])
    for key in ("steps", "images", "skipped"):
        progress.setdefault(key, 0)
    sums = torch.tensor(progress["sums"], dtype=torch.float64)
    start = time.perf_counter()
    images_this_call = 0
    last_lr = optimizer.param_groups[0]["lr"]
    show_bar = distributed.is_main_process() and sys.stderr.isatty()
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not show_bar, dynamic_ncols=True, leave=False,
               initial=progress["steps"], total=len(loader))
    for images, targets, num_skipped in bar:
        progress["skipped"] += num_skipped
        if progress["skipped"] > max_skipped_images:
            raise TooManySkippedImagesError(
                f"{progress['skipped']} images could not be decoded (limit --max_skipped_images "
                f"{max_skipped_images}); run tools/check_dataset.py to list them"
            )
        if images is None:
            continue
        step = progress["steps"] + 1
        images = move_images(images, device, channels_last)
        with autocast_context(device, amp_dtype):
            outputs = model(images)
        losses = criterion(outputs, targets)
        loss = losses["loss"]
        # One device-to-host copy per step serves both the NaN check and the running averages.
        values = torch.stack([loss, losses["cls_loss"], losses["box_loss"]]).detach().double().cpu()
        if not torch.isfinite(values).all():
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch}, step {step}: cls_loss={values[1].item():.4g}, "
                f"box_loss={values[2].item():.4g}. Try a lower --learning_rate"
                + (", or run without --amp" if amp_dtype is not None else "")
            )
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
        last_lr = optimizer.param_groups[0]["lr"]
        lr_scheduler.step()

        sums += values
        images_this_call += images.shape[0]
        progress.update(sums=sums.tolist(), steps=step, images=progress["images"] + images.shape[0])
        if show_bar:
            bar.set_postfix(loss=f"{values[0]:.4f}", cls=f"{values[1]:.4f}", box=f"{values[2]:.4f}")
        elif print_every and step % print_every == 0 and distributed.is_main_process():
            log(f"epoch {epoch} step {step}/{len(loader)} loss {values[0]:.4f} "
                f"(cls {values[1]:.4f}, box {values[2]:.4f}) lr {last_lr:.3g}")
        if stop_requested is not None and stop_requested():
            raise KeyboardInterrupt
    bar.close()
    seconds = time.perf_counter() - start
    totals = distributed.all_reduce_sum(
        torch.cat([sums, torch.tensor([progress["steps"], progress["images"], images_this_call], dtype=torch.float64)]))
    steps_total = max(1.0, float(totals[3]))
    return {
        "loss": float(totals[0]) / steps_total,
        "cls_loss": float(totals[1]) / steps_total,
        "box_loss": float(totals[2]) / steps_total,
        "lr": last_lr,
        "seconds": seconds,
        "images": int(totals[4]),
        "images_per_second": float(totals[5]) / max(seconds, 1e-9),
        "skipped_images": progress["skipped"],
    }


@torch.no_grad()
def predict(model, postprocessor, loader, device, label_to_category_id, *, amp_dtype=None,
            channels_last=False, progress_desc="inference"):
    """Run the model over ``loader`` and return detections as a COCO results list."""
    model.eval()
    results = []
    show_bar = distributed.is_main_process() and sys.stderr.isatty()
    for images, targets, _ in tqdm(loader, desc=progress_desc, disable=not show_bar, leave=False):
        if images is None:
            continue
        images = move_images(images, device, channels_last)
        with autocast_context(device, amp_dtype):
            outputs = model(images)
        detections = postprocessor(outputs, [t["size"] for t in targets], [t["scale"] for t in targets])
        for target, detection in zip(targets, detections):
            results.extend(detections_to_coco(detection, target["image_id"], label_to_category_id))
    return results


def detections_to_coco(detection, image_id, label_to_category_id):
    """One image's detections -> COCO result entries (bbox as x, y, w, h, rounded to 0.01 px)."""
    boxes = detection["boxes"].cpu().double()
    boxes[:, 2:] -= boxes[:, :2]
    entries = []
    for box, score, label in zip(boxes.tolist(), detection["scores"].cpu().tolist(), detection["labels"].cpu().tolist()):
        entries.append({
            "image_id": int(image_id),
            "category_id": label_to_category_id[label],
            "bbox": [round(value, 2) for value in box],
            "score": round(float(score), 5),
        })
    return entries
