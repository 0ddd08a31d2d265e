"""Learning-rate range test: train a fresh model for a few hundred steps at a rate that grows
exponentially, and read a good rate off the loss curve (Smith, "Cyclical Learning Rates", 2017).

The model, data, loss and optimizer are train.py's, built by the same functions from the same
flags (``training.trainer``), and each step is the training step itself (``engine.training_step``:
autocast, gradient clipping, the non-finite check), so the curve measures what training would
do. Nothing of the model is kept and no run folder is written.

Rules, stated where they are applied:

- the rate at step i of S is ``start_lr * (end_lr / start_lr) ** (i / (S - 1))``;
- the loss is smoothed by an exponential moving average (``SMOOTHING`` 0.95, bias-corrected);
- the test stops early when the smoothed loss exceeds ``DIVERGENCE_FACTOR`` (4) times the lowest
  smoothed loss so far, or when a loss is not finite;
- the suggested rate is a tenth of the rate at the lowest smoothed loss (looked for after the
  first tenth of the steps, where the average is still settling), still on the descent and clear
  of the divergence beyond the minimum; none when the loss never fell. (The steepest descent, the
  other common rule, points at the noise of the first steps when batches of 2-4 images make the
  loss jump by a third from one step to the next, as it does on the default data.)
"""
import dataclasses
import itertools

import numpy as np

from retinanet.engine import NonFiniteLossError, TooManySkippedImagesError, training_step
from retinanet.config import resolve_training_args
from retinanet.training.setup import resolve_device, set_up_training
from retinanet.util.io import write_figure_png, write_json

SMOOTHING = 0.95
DIVERGENCE_FACTOR = 4.0
SUGGESTION_FACTOR = 10.0
RULE = "a tenth of the rate at the lowest smoothed loss (moving average 0.95)"


@dataclasses.dataclass
class RangeTest:
    """The curve of one range test: per step (S,) the rate, the loss and the smoothed loss."""
    learning_rates: list
    losses: list
    smoothed: list
    stop_reason: str
    suggested_index: int = None

    @property
    def suggested_lr(self):
        return None if self.suggested_index is None else self.learning_rates[self.suggested_index]

    @property
    def lowest_index(self):
        return lowest_index(self.smoothed)

    def as_dict(self):
        return dict(dataclasses.asdict(self), suggested_lr=self.suggested_lr, rule=RULE,
                    smoothing=SMOOTHING, divergence_factor=DIVERGENCE_FACTOR)


def exponential_rates(start_lr, end_lr, num_steps):
    """(num_steps,) rates from ``start_lr`` to ``end_lr``, a constant factor apart."""
    return np.geomspace(start_lr, end_lr, num_steps)


def smooth(losses, beta=SMOOTHING):
    """Bias-corrected exponential moving average of ``losses``: a list of the same length."""
    average, smoothed = 0.0, []
    for step, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta ** step))
    return smoothed


def settled_index(num_steps):
    """The first step past the first tenth, where the moving average has settled."""
    return num_steps // 10


def lowest_index(smoothed):
    """The step of the lowest smoothed loss after the first tenth, or None without steps."""
    if not smoothed:
        return None
    first = settled_index(len(smoothed))
    return first + int(np.argmin(smoothed[first:]))


def suggest_index(learning_rates, smoothed):
    """The step of the suggested rate (module docstring), or None when the loss never fell."""
    if len(smoothed) < 3:
        return None
    first, lowest = settled_index(len(smoothed)), lowest_index(smoothed)
    if lowest - first < 2 or not smoothed[first] > smoothed[lowest]:
        return None
    rates = np.asarray(learning_rates, dtype=float)
    index = int(np.searchsorted(rates, rates[lowest] / SUGGESTION_FACTOR, side="right")) - 1
    return max(index, first)


def run_range_test(args, start_lr, end_lr, num_steps, log=print, typed_flags=None):
    """The range test of train.py's flags ``args`` (a Namespace); returns a RangeTest.

    Raises DatasetError / DatasetLoadError for an unusable training set, TrainingError (one
    line) for an unusable start (--pretrained, --init_from) or device, as train.py does, and
    TooManySkippedImagesError past --max_skipped_images undecodable images. typed_flags: the
    flags given on the command line, which --init_from checks against its source's network."""
    args = resolve_training_args(args, val_set="")  # no evaluation: only the training set is read
    model, loader, criterion, optimizer, scaler, device_config = _set_up(args, start_lr, log, typed_flags)
    log(f"lr range test: {len(loader.dataset)} training images, batch {args.batch_size}, {args.optimizer}; "
        f"{num_steps} steps from {start_lr:.3g} to {end_lr:.3g}")
    model.train()
    losses, smoothed, stop_reason = [], [], f"reached --end_lr {end_lr:.3g}"
    report_every = max(1, num_steps // 10)
    batches = _batches(loader, args.max_skipped_images)
    for step, (rate, (epoch, images, targets)) in enumerate(zip(exponential_rates(start_lr, end_lr, num_steps),
                                                                batches), start=1):
        for group in optimizer.param_groups:
            group["lr"] = float(rate)
        try:
            values, fallback = training_step(model, criterion, optimizer, device_config.move(images), targets,
                                             device_config, scaler, args.grad_clip, epoch + 1, step)
        except NonFiniteLossError:
            stop_reason = f"the loss was not finite at rate {rate:.3g}"
            break
        if fallback is not None:
            device_config = device_config.in_float32()
            log(f"warning: {fallback}")
        losses.append(float(values[0]))
        smoothed = smooth(losses)
        if step % report_every == 0:
            log(f"step {step}/{num_steps}: rate {rate:.3g}, loss {losses[-1]:.4f} (smoothed {smoothed[-1]:.4f})")
        if smoothed[-1] > DIVERGENCE_FACTOR * min(smoothed):
            stop_reason = (f"diverged at rate {rate:.3g}: smoothed loss {smoothed[-1]:.4f} > "
                           f"{DIVERGENCE_FACTOR:g} x the lowest {min(smoothed):.4f}")
            break
    rates = [float(rate) for rate in exponential_rates(start_lr, end_lr, num_steps)[:len(losses)]]
    return RangeTest(rates, losses, smoothed, stop_reason, suggest_index(rates, smoothed))


def _set_up(args, start_lr, log, typed_flags=None):
    """train.py's model (with its start), loader, loss, optimizer (at ``start_lr``), scaler and DeviceConfig."""
    device = resolve_device(args.device)
    parts = set_up_training(args, device, typed_flags=typed_flags, learning_rate=start_lr)
    for line in ([f"start: {parts.start.description}"] + parts.start_lines + parts.weight_lines
                 + [f"device {device}, {parts.precision}"]):
        log(line)
    return parts.model, parts.train_loader, parts.criterion, parts.optimizer, parts.scaler, parts.device_config


def _batches(loader, max_skipped_images):
    """(epoch, images, targets) without end, reshuffled every epoch; batches whose images all
    failed to decode are passed over, up to ``max_skipped_images`` images in all."""
    skipped = 0
    for epoch in itertools.count():
        loader.batch_sampler.set_epoch(epoch)
        for images, targets, num_skipped in loader:
            skipped += num_skipped
            if skipped > max_skipped_images:
                raise TooManySkippedImagesError(
                    f"{skipped} images could not be decoded (limit --max_skipped_images {max_skipped_images}); "
                    "run tools/check_dataset.py to list them")
            if images is not None:
                yield epoch, images, targets


def describe(test):
    """The lines to print: how the test ended and the suggested --learning_rate with its rule."""
    lines = [f"stopped after {len(test.losses)} steps: {test.stop_reason}"]
    if test.suggested_index is None:
        lines.append("no suggestion: the smoothed loss never fell; try a lower --start_lr or more --num_steps")
    else:
        lowest = test.lowest_index
        lines.append(f"lowest smoothed loss {test.smoothed[lowest]:.4f} at rate {test.learning_rates[lowest]:.3g}")
        lines.append(f"suggested --learning_rate {test.suggested_lr:.2g} ({RULE})")
    return lines


def write_range_test(test, png_path, title=None):
    """The loss-against-rate plot at ``png_path`` and the curve as JSON beside it (same name, .json);
    returns the JSON's path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.plot(test.learning_rates, test.losses, color="tab:blue", alpha=0.3, label="loss")
    axes.plot(test.learning_rates, test.smoothed, color="tab:blue", label=f"smoothed (moving average {SMOOTHING})")
    if test.suggested_index is not None:
        axes.plot(test.suggested_lr, test.smoothed[test.suggested_index], "o", color="tab:red",
                  label=f"suggested {test.suggested_lr:.2g} (a tenth of the lowest)")
    if test.smoothed:
        lowest = test.lowest_index
        axes.plot(test.learning_rates[lowest], test.smoothed[lowest], "v", color="black",
                  label=f"lowest smoothed loss at {test.learning_rates[lowest]:.2g}")
        # Up to the highest smoothed loss before the lowest: the divergence runs off the top.
        axes.set_ylim(min(test.losses + test.smoothed) * 0.95, max(test.smoothed[:lowest + 1]) * 1.15)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title(title or "learning-rate range test", fontsize="medium")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    write_figure_png(png_path, figure)
    json_path = png_path[: -len(".png")] + ".json" if png_path.endswith(".png") else png_path + ".json"
    write_json(json_path, test.as_dict())
    return json_path
