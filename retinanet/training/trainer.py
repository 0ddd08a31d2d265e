"""The training run behind train.py: set-up, the epoch loop, evaluation, checkpoints and logs.

``Trainer`` orchestrates; its parts come from ``training.setup.set_up_training``, the loops are
``engine.train_one_epoch`` / ``engine.evaluate``, and the files belong to a ``RunDir``.
"""
import sys
import time

import torch

from retinanet.data.augment import describe, resolved_settings
from retinanet.data.box_stats import training_report_lines
from retinanet.engine import (EpochProgress, LossExplosionWatch, NonFiniteLossError, TooManySkippedImagesError,
                              evaluate, train_one_epoch)
from retinanet.models.postprocess import PostProcessor
from retinanet.optim import build_lr_scheduler
from retinanet.models.checkpoint import (capture_rng_states, load_model_weights, model_checkpoint, restore_rng_states,
                                         training_state_beside)
from retinanet.config import CONFIG_VERSION, resolve_training_args
from retinanet.runs.run_dir import CheckpointWriteError, RunDir, RunDirError, next_run_name
from retinanet.runs.trackers import MissingTrackerError, TrackerError, Trackers, check_loggers
from retinanet.training.setup import TrainingError, resolve_device, set_up_training
from retinanet.training.messages import divergence_advice, format_epoch_line, time_left, why_stopped
from retinanet.training.signals import StopRequest
from retinanet.util import distributed
from retinanet.util.io import WriteError

class Trainer:
    """One training run. ``args``: train.py's flags (missing ones take train.py's defaults);
    ``resume_state``: a checkpoint dict to continue from; ``typed_flags``: the names of the flags
    given on the command line (None: those that differ from the defaults), which --init_from
    checks against its source's network."""

    def __init__(self, args, resume_state=None, typed_flags=None):
        self.args = args = resolve_training_args(args)
        try:  # before anything is loaded: a tracker that is not installed is a one-line error
            check_loggers(args.logger)
        except MissingTrackerError as error:
            raise TrainingError(str(error)) from None
        device = resolve_device(args.device)
        self.rank, self.world_size, local_rank = distributed.init_from_environment(device.type)
        if device.type == "cuda" and self.world_size > 1:
            device = torch.device("cuda", local_rank)
        self.is_main = self.rank == 0
        state = resume_state or {}
        self.precision_fallback = state.get("precision_fallback")
        parts = set_up_training(args, device, rank=self.rank, world_size=self.world_size, resume_state=resume_state,
                                typed_flags=typed_flags, precision_fallback=self.precision_fallback)
        self.train_set, self.train_loader, self.val_loader = parts.train_set, parts.train_loader, parts.val_loader
        self.train_data, change = parts.train_data, parts.train_data_change
        self.train_data_changes = list(state.get("train_data_changes") or []) + ([change] if change is not None else [])
        self.model_without_ddp, self.model = parts.model, parts.trained
        self.device_config, self.precision, self.precision_check = parts.device_config, parts.precision, \
            parts.precision_check
        self.criterion, self.optimizer, self.scaler = parts.criterion, parts.optimizer, parts.scaler
        self.run = RunDir(args.output_path, args.log_dir, _run_name(args, resume_state, create=self.is_main))
        self.log = self._open_run(resume_state)
        if change is not None:
            self._warn(f"warning: {change['message']}")
        if parts.start is not None:
            self._log_start(parts.start, parts.start_lines + parts.weight_lines)
        if self.is_main and not args.skip_dataset_check:  # the boxes the anchors cannot reach, and better anchors
            self.log("\n".join(training_report_lines(self.train_set, vars(args), resolved_settings(vars(args)))))
        self.postprocessor = PostProcessor(args.score_threshold, args.nms_iou, max_detections=args.max_detections)
        self.start_epoch = state.get("epoch", 0)
        self.best_metric, self.best_epoch = state.get("best_metric"), state.get("best_epoch")
        self.loss_history = list(state.get("loss_history", []))
        self.progress = EpochProgress.from_dict(state.get("partial_epoch"))
        self.explosion_watch = LossExplosionWatch(reference=state.get("first_loss"))
        self.earlier_seconds = float(state.get("wall_seconds") or 0.0)  # training time of earlier segments
        self.epochs_done = self.start_epoch
        start_iteration = self._load_resume_state(state) if resume_state is not None else 0
        try:
            self.trackers = Trackers(self.run.path, args.logger, self._config(), None if resume_state is None
                                     else start_iteration) if self.is_main else None
        except TrackerError as error:
            self.close()
            raise TrainingError(str(error)) from None
        self.lr_scheduler = build_lr_scheduler(self.optimizer, args, len(self.train_loader), start_iteration)
        self.stop = StopRequest()
        self.fit_started = None
        self.saved_epoch = None  # the epoch whose checkpoint_last.pt this process wrote last
        self.best_saved_epoch = None  # the epoch whose checkpoint_best.pt this process wrote last

    def _open_run(self, resume_state):
        """Claim the run folder and start its log (main process); other processes just print."""
        if not self.is_main:
            return print
        resumed_run = resume_state["args"].get("run_name") if resume_state is not None else None
        try:
            self.run.claim(resuming=resume_state is not None, resumed_run=resumed_run)
        except RunDirError as error:
            raise TrainingError(str(error)) from None
        log = self.run.open_log()
        if self.run.stale_temporaries:
            log(f"removed {len(self.run.stale_temporaries)} temporary file(s) of an interrupted save from "
                f"{self.run.path} ({sum(size for _, size in self.run.stale_temporaries) / 1e6:.0f} MB): "
                f"{', '.join(name for name, _ in self.run.stale_temporaries)}")
        self._write_config()
        log(f"run {self.run.name}: {len(self.train_set)} training images, {self.train_set.num_classes} classes, "
            f"device {self.device_config.device}, {self.world_size} process(es); writing to {self.run.path}")
        log(f"precision: {self.precision}")
        log(f"augmentation: {describe(resolved_settings(vars(self.args)), self.args.max_side)}")
        return log

    def _config(self):
        """config.json's contents: every flag and the facts of this run."""
        check = self.precision_check.as_dict() if self.precision_check is not None else None
        return dict(vars(self.args), run_name=self.run.name, config_version=CONFIG_VERSION,
                    class_names=self.train_set.class_names, world_size=self.world_size,
                    device_used=str(self.device_config.device), precision=self.precision, precision_check=check,
                    precision_fallback=self.precision_fallback, num_train_images=len(self.train_set),
                    train_data=self.train_data, train_data_changes=self.train_data_changes)

    def _write_config(self):
        self.run.write_config(self._config())

    def _fall_back_to_float32(self, reason):
        """A step was only finite in float32 (engine.training_step): the rest of the run uses float32."""
        self.device_config = self.device_config.in_float32()
        self.precision_fallback = reason
        self.precision = f"float32 (switched during training: {reason})"
        self._warn(f"warning: {reason}")
        if self.is_main:
            self._write_config()

    def _warn(self, line):
        """A log line that must be seen (main process): in the log file, and on the console through
        stderr, which stays there when stdout goes to a file (once: not on stdout as well)."""
        if self.is_main:
            self.log(line, file=sys.stderr)

    def _log_start(self, start, lines):
        """The start's lines, first in the log; a warning also on stderr, so that it is seen."""
        self.log(f"start: {start.description}; backbone stages trained: {self.args.trainable_layers} of 5")
        for line in lines:
            self.log(line)
        if start.warning:
            self._warn(start.warning)

    def _load_resume_state(self, state):
        """Load weights, optimizer, scaler and RNG states; returns the iteration to continue the schedule at."""
        start_iteration = restore_training_state(state, self.model_without_ddp, self.optimizer, self.scaler,
                                                 self.args.learning_rate, self.args.resume)
        if self.is_main:
            self.run.truncate_metrics(self.start_epoch)
        self.log(f"resumed from {self.args.resume}: {self.start_epoch} epochs done"
                 + (f", {self.progress.steps} steps into epoch {self.start_epoch + 1}" if self.progress.steps else ""))
        return start_iteration

    # ----- the loop -----------------------------------------------------------------------
    def fit(self):
        try:
            self._fit()
        except (CheckpointWriteError, WriteError) as error:
            raise TrainingError(str(error)) from None

    def _fit(self):
        self.fit_started = time.perf_counter()
        # The handlers stay installed while the interrupted state is saved, so that a second signal
        # waits for that write instead of killing the process in the middle of it.
        with self.stop.on_stop_signals():
            try:
                for epoch in range(self.start_epoch, self.args.epochs):
                    self._train_epoch(epoch)
            except (KeyboardInterrupt, NonFiniteLossError, TooManySkippedImagesError, RuntimeError,
                    WriteError) as error:
                reason, outcome = why_stopped(error, self.stop, self.args, self.run.path)  # re-raises others
                self._save_interrupted(reason, diverged=isinstance(error, NonFiniteLossError))
                if isinstance(outcome, int):  # a stop signal: the process ends with 130 or 143
                    raise SystemExit(outcome) from None
                raise TrainingError(outcome) from None
            if self.is_main:
                with self.stop.saving(stop_after=False):
                    self._finish(self._wall_seconds())

    def _train_epoch(self, epoch):
        args = self.args
        sampler = self.train_loader.batch_sampler
        sampler.set_epoch(epoch, skip_batches=self.progress.steps)
        record = {"epoch": epoch + 1, **train_one_epoch(
            self.model, self.criterion, self.optimizer, self.lr_scheduler, self.train_loader, epoch=epoch + 1,
            device_config=self.device_config, progress=self.progress, scaler=self.scaler, grad_clip=args.grad_clip,
            max_skipped_images=args.max_skipped_images, print_every=args.print_every, log=self.log,
            should_stop=self.stop.requested, on_precision_fallback=self._fall_back_to_float32,
            explosion_watch=self.explosion_watch,
            on_step=(lambda step, values, lr: self._on_step(epoch, step, values, lr)) if self.is_main else None)}
        self.loss_history.append(record["loss"])
        self.epochs_done, self.progress = epoch + 1, EpochProgress()
        last = epoch + 1 == args.epochs
        if self.val_loader is not None and (last or (args.eval_every and (epoch + 1) % args.eval_every == 0)):
            stats = {}
            try:
                if self.is_main:  # the epoch's work is kept even if the evaluation fails
                    self._save_checkpoints(epoch + 1, is_best=False)
                results, evaluation = evaluate(self.model_without_ddp, self.val_loader,
                                               postprocessor=self.postprocessor, device_config=self.device_config,
                                               evaluator=args.evaluator, stats=stats, should_stop=self.stop.requested)
            except KeyboardInterrupt:  # a stop signal: the epoch's record is kept, its evaluation is not run
                if self.is_main:
                    self.run.append_metrics(dict(record, evaluation="interrupted"))
                raise
            record["val_skipped_images"] = stats["skipped_images"]
            if evaluation is not None:
                record["coco"] = evaluation["stats"]
                if self.best_metric is None or evaluation["stats"]["AP"] > self.best_metric:
                    self.best_metric, self.best_epoch = evaluation["stats"]["AP"], epoch + 1
        if self.is_main:  # the record and the checkpoint first: a log or plot that cannot be written loses nothing
            self.run.append_metrics(record)
            self._save_checkpoints(epoch + 1, is_best=self.best_epoch == epoch + 1)
            self.log(format_epoch_line(record, args.epochs) + time_left(
                time.perf_counter() - self.fit_started, epoch + 1 - self.start_epoch, args.epochs - epoch - 1))
            self.trackers.epoch(record)
            self.run.plot_curves()
            if "coco" in record:  # report.html follows every evaluation; matplotlib is loaded only then
                from retinanet.reporting.page import update_after_evaluation
                from retinanet.reporting.prediction_grid import grid_path
                update_after_evaluation(self.run.path, self.val_loader.dataset, results, epoch + 1)
                self.trackers.image(grid_path(self.run.path, self.val_loader.dataset.set_name), epoch + 1)
        distributed.barrier()

    def _on_step(self, epoch, step, values, lr):
        """One row of steps.csv (and the trackers') per training step; ``epoch`` is 0-based."""
        self.trackers.step({"iteration": epoch * len(self.train_loader) + step, "epoch": epoch + 1, "step": step,
                            "loss": float(values[0]), "cls_loss": float(values[1]), "box_loss": float(values[2]),
                            "lr": lr, "seconds": round(time.perf_counter() - self.fit_started, 3)})

    # ----- checkpoints --------------------------------------------------------------------
    def _state(self, epoch, partial=None):
        return {
            "model": self.model_without_ddp.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch,
            "partial_epoch": partial,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "loss_history": list(self.loss_history),
            "rng_states": capture_rng_states(),
            "precision_fallback": self.precision_fallback,
            "first_loss": self.explosion_watch.reference,
            "wall_seconds": self._wall_seconds(),
            "train_data": self.train_data,
            "train_data_changes": list(self.train_data_changes),
            "args": dict(vars(self.args), run_name=self.run.name, config_version=CONFIG_VERSION),
            "class_names": list(self.train_set.class_names),
            "category_ids": list(self.train_set.label_to_category_id),
        }

    def _save_checkpoints(self, epoch, is_best):
        """checkpoint_last.pt (and best, every-N) of a finished epoch; a second stop signal during the
        writes waits for them, then stops the run (StopRequest.saving)."""
        state = self._state(epoch)
        with self.stop.saving():
            self.run.save_checkpoint(state, "checkpoint_last.pt")
            if is_best:
                self.run.save_checkpoint(model_checkpoint(state), "checkpoint_best.pt")
                self.best_saved_epoch = epoch
            if self.args.save_every and epoch % self.args.save_every == 0:
                self.run.save_checkpoint(state, f"checkpoint_epoch{epoch}.pt")
            self.run.remove("checkpoint_interrupted.pt")
            self.saved_epoch = epoch

    def _save_interrupted(self, reason, diverged=False):
        """Save checkpoint_interrupted.pt (the finished epochs and the steps of the current one) and
        say how to continue; after a non-finite loss, from the last good checkpoint at a lower rate."""
        if not self.is_main:
            return
        partial = self.progress.as_dict() if self.progress.steps else None
        if partial is None and not diverged and self.saved_epoch == self.epochs_done:
            last = self.run.file("checkpoint_last.pt")  # nothing since it was written: no second copy
            self.log(f"{reason} after the checkpoint of epoch {self.epochs_done} was written\n"
                     f"continue with: python train.py --resume {last}")
            return
        try:
            with self.stop.saving(stop_after=False):
                path = self.run.save_checkpoint(self._state(self.epochs_done, partial), "checkpoint_interrupted.pt")
        except CheckpointWriteError as error:
            raise CheckpointWriteError(f"{reason}; {error}") from None
        if diverged:
            self.log(f"{reason}\nsaved the state at the failure for inspection (its weights may have diverged): "
                     f"{path}\n{divergence_advice(self.run.file('checkpoint_last.pt'), self.args.learning_rate)}")
        else:
            self.log(f"{reason}; saved a resumable checkpoint: {path}\ncontinue with: python train.py --resume {path}")

    def _wall_seconds(self):
        """Training time of the run so far, earlier segments (before a resume) included."""
        running = time.perf_counter() - self.fit_started if self.fit_started is not None else 0.0
        return self.earlier_seconds + running

    def _finish(self, seconds):
        """model_final.pt (weights, flags, classes; a hard link to checkpoint_best.pt when that holds
        the same final epoch), checkpoint_last.pt without the weights it shares with model_final.pt,
        the summary and the closing log lines."""
        state = self._state(self.args.epochs)
        final = model_checkpoint(state)
        with self.stop.saving(stop_after=False):  # a signal now waits for the files; the run is done
            if self.best_saved_epoch == self.args.epochs:  # written by this process from this very state
                final_path = self.run.save_same_as(final, "model_final.pt", "checkpoint_best.pt")
            else:
                final_path = self.run.save_checkpoint(final, "model_final.pt")
            self.run.save_checkpoint(training_state_beside(state, final_path), "checkpoint_last.pt")
        evaluated = [record for record in self.run.read_metrics() if "coco" in record]
        self.run.write_summary({"best_metric": self.best_metric, "best_epoch": self.best_epoch,
                                "wall_seconds": seconds, "final_loss": (self.loss_history or [None])[-1],
                                "epoch_loss_list": self.loss_history,
                                "final_coco": evaluated[-1]["coco"] if evaluated else None})
        self.log(f"epoch_loss_list: {[round(loss, 6) for loss in self.loss_history]}")
        if evaluated:
            self.log(f"final val AP {evaluated[-1]['coco']['AP']:.4f}; best AP {self.best_metric:.4f} at epoch "
                     f"{self.best_epoch}")
        self.log(f"finished in {seconds / 60:.1f} min; model: {final_path}")

    def close(self):
        for loader in (self.train_loader, self.val_loader):
            if loader is not None:
                loader.shutdown()
        if getattr(self, "trackers", None) is not None:
            self.trackers.close()
        if self.log is not print:
            self.log.close()
            self.run.release()
        distributed.cleanup()


def train_to_end(args, resume_state=None, typed_flags=None):
    """Build the Trainer (see its arguments), train, and close it whatever happens (the log, the
    folder's lock, the loader's worker processes); returns the run folder's path."""
    trainer = Trainer(args, resume_state, typed_flags=typed_flags)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer.run.path


# ----- building blocks ------------------------------------------------------------------------
def _run_name(args, resume_state, create):
    """--run_name, else the resumed run's name, else the next free automatic name (its folder
    created at once when ``create``, so that two runs starting together cannot take the same one)."""
    saved = resume_state["args"].get("run_name") if resume_state is not None else None
    if args.run_name or saved:
        return args.run_name or saved
    try:
        return next_run_name(args.output_path, args.log_dir, args.depth, args.epochs, create=create)
    except OSError as error:
        raise TrainingError(f"cannot write the run folder in {args.output_path} (--output_path): "
                            f"{error.strerror or error}") from None


def restore_training_state(state, model, optimizer, scaler, learning_rate, path):
    """Load a checkpoint's weights, optimizer, scaler and RNG states; return the iteration count.

    The schedule itself comes from this command's flags, so a run can be extended (--epochs,
    --milestones) or continued at a lower --learning_rate: ``initial_lr`` is set to the current
    rate and the scheduler is positioned at the returned iteration."""
    load_model_weights(model, state["model"], path)
    optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:
        group["initial_lr"] = learning_rate
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if "rng_states" in state:
        restore_rng_states(state["rng_states"])
    return state["lr_scheduler"]["last_epoch"]
