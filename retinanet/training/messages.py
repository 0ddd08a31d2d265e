"""The lines a training run writes about itself: the epoch line, the time left, why it stopped and
how to go on after a divergence."""
import os
import re

from retinanet.engine import NonFiniteLossError, TooManySkippedImagesError
from retinanet.util.io import WriteError

# torch's message when a DataLoader worker dies of a signal (SIGKILL from the out-of-memory killer).
WORKER_KILLED = re.compile(r"DataLoader worker \(pid \d+\) is killed by signal: ?([^\n.]*)")


def why_stopped(error, stop, args, run_path):
    """(reason for the log, outcome) of an error that ends training with a checkpoint: the exit
    status of a stop signal, or the TrainingError message of a failure; any other error is raised
    again."""
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted by {stop.signal_name or 'Ctrl-C'}", stop.exit_code()
    if isinstance(error, (NonFiniteLossError, TooManySkippedImagesError, WriteError)):
        return str(error), str(error)
    killed = WORKER_KILLED.search(str(error))
    if killed is None:
        raise error
    if stop.requested():  # the stop signal reached the workers too
        return f"interrupted by {stop.signal_name}", stop.exit_code()
    reason = f"a data-loading worker was killed by signal {killed.group(1)}"
    return reason, (f"{reason}, most often by the system running out of memory; saved a resumable "
                    f"checkpoint in {run_path}; try fewer --workers (now {args.workers}) or a smaller --batch_size "
                    f"(now {args.batch_size})")


def divergence_advice(last_good, learning_rate):
    """How to go on after a non-finite loss: from the last good checkpoint at a tenth of the rate."""
    lower = f"{learning_rate / 10:.3g}"
    if os.path.exists(last_good):
        return f"continue from the last good checkpoint at a lower rate: python train.py --resume {last_good} " \
               f"--learning_rate {lower}"
    return f"no epoch finished before it: start again with a lower --learning_rate (e.g. {lower})"


def time_left(seconds, epochs_run, epochs_remaining):
    """', about N min left' at the pace of the epochs run so far (evaluations included)."""
    if epochs_remaining <= 0 or epochs_run <= 0:
        return ""
    return f", about {seconds / epochs_run * epochs_remaining / 60:.1f} min left"


def format_epoch_line(record, epochs):
    line = (f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f} (cls {record['cls_loss']:.4f}, "
            f"box {record['box_loss']:.4f}), lr {record['lr']:.3g}, {record['seconds']:.0f}s, "
            f"{record['images_per_second']:.1f} img/s")
    if "coco" in record:
        line += f", val AP {record['coco']['AP']:.4f} AP50 {record['coco']['AP50']:.4f}"
    if record.get("val_skipped_images"):
        line += f", {record['val_skipped_images']} val images skipped (could not be decoded)"
    return line
