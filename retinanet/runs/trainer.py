"""The training run behind train.py: set-up, the epoch loop, evaluation, checkpoints and logs.

``Trainer`` orchestrates; the loops are ``engine.train_one_epoch`` / ``engine.evaluate``, the
files belong to a ``RunDir``, and the building blocks are the small functions below.
"""
import os
import signal
import threading
import time

import torch

from retinanet.data.check import validate_or_raise
from retinanet.data.coco import CocoDetection
from retinanet.data.loader import build_loader
from retinanet.data.transforms import EvalTransform, TrainTransform
from retinanet.engine import (DeviceConfig, EpochProgress, NonFiniteLossError, TooManySkippedImagesError, evaluate,
                              train_one_epoch)
from retinanet.models.backbone import load_pretrained_backbone
from retinanet.models.loss import RetinaNetLoss
from retinanet.models.postprocess import PostProcessor
from retinanet.models.retinanet import MODEL_ARG_NAMES, build_model
from retinanet.optim import build_lr_scheduler, build_optimizer
from retinanet.runs.checkpoint import capture_rng_states, model_from_checkpoint, restore_rng_states
from retinanet.runs.options import resolve_training_args
from retinanet.runs.run_dir import RunDir, RunDirError, next_run_name
from retinanet.util import distributed
from retinanet.util.device import choose_precision, resolve_device


class Trainer:
    """One training run. ``args``: train.py's flags (missing ones take train.py's defaults);
    ``resume_state``: a checkpoint dict to continue from."""

    def __init__(self, args, resume_state=None):
        self.args = args = resolve_training_args(args)
        device = _resolve_device(args.device)
        self.rank, self.world_size, local_rank = distributed.init_from_environment(device.type)
        if device.type == "cuda" and self.world_size > 1:
            device = torch.device("cuda", local_rank)
        self.is_main = self.rank == 0
        amp_dtype, self.precision = choose_precision(device, args.amp)
        self.device_config = DeviceConfig(device, amp_dtype, args.channels_last)
        torch.manual_seed(args.seed)
        if self.is_main and not args.skip_dataset_check:
            check_datasets(args)
        self.train_set, self.train_loader, self.val_loader = build_data(args, device, self.rank, self.world_size)
        if resume_state is not None:
            check_resumable(args, resume_state)
        self.run = RunDir(args.output_path, args.log_dir, _run_name(args, resume_state))
        self.log = self._open_run(resuming=resume_state is not None)
        self.model_without_ddp, self.model = build_training_model(self.train_set.num_classes, args, device,
                                                                  self.world_size, self.log)
        self.criterion = RetinaNetLoss(args.alpha, args.gamma, low_quality_matches=args.low_quality_matches)
        self.optimizer = build_optimizer(self.model.parameters(), args.optimizer, args.learning_rate,
                                         args.weight_decay, args.momentum)
        needs_scaler = self.device_config.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(device.type) if needs_scaler else None
        self.postprocessor = PostProcessor(args.score_threshold, args.nms_iou, max_detections=args.max_detections)
        state = resume_state or {}
        self.start_epoch = state.get("epoch", 0)
        self.best_metric, self.best_epoch = state.get("best_metric"), state.get("best_epoch")
        self.loss_history = list(state.get("loss_history", []))
        self.progress = EpochProgress.from_dict(state.get("partial_epoch"))
        start_iteration = self._load_resume_state(state) if resume_state is not None else 0
        self.lr_scheduler = build_lr_scheduler(self.optimizer, args, len(self.train_loader), start_iteration)
        self.stop = StopRequest()
        self.fit_started = None

    def _open_run(self, resuming):
        """Claim the run folder and start its log (main process); other processes just print."""
        if not self.is_main:
            return print
        try:
            self.run.claim(resuming)
        except RunDirError as error:
            raise SystemExit(f"error: {error}") from None
        log = self.run.open_log()
        self.run.write_config(dict(vars(self.args), run_name=self.run.name, class_names=self.train_set.class_names,
                                   world_size=self.world_size, device_used=str(self.device_config.device),
                                   precision=self.precision, num_train_images=len(self.train_set)))
        log(f"run {self.run.name}: {len(self.train_set)} training images, {self.train_set.num_classes} classes, "
            f"device {self.device_config.device}, {self.world_size} process(es); writing to {self.run.path}")
        log(f"precision: {self.precision}")
        return log

    def _load_resume_state(self, state):
        """Load weights, optimizer, scaler and RNG states; returns the iteration to continue the schedule at.

        The schedule itself comes from this command's flags, so a run can be extended (--epochs,
        --milestones) or continued at a lower --learning_rate."""
        self.model_without_ddp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.args.learning_rate
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if "rng_states" in state:
            restore_rng_states(state["rng_states"])
        if self.is_main:
            self.run.truncate_metrics(self.start_epoch)
        self.log(f"resumed from {self.args.resume}: {self.start_epoch} epochs done"
                 + (f", {self.progress.steps} steps into epoch {self.start_epoch + 1}" if self.progress.steps else ""))
        return state["lr_scheduler"]["last_epoch"]

    # ----- the loop -----------------------------------------------------------------------
    def fit(self):
        started = self.fit_started = time.perf_counter()
        epoch = self.start_epoch
        try:
            with self.stop.on_ctrl_c():
                for epoch in range(self.start_epoch, self.args.epochs):
                    self._train_epoch(epoch)
        except KeyboardInterrupt:
            self._save_interrupted(epoch, "interrupted by Ctrl-C")
            raise SystemExit(130)
        except (NonFiniteLossError, TooManySkippedImagesError) as error:
            self._save_interrupted(epoch, str(error))
            raise SystemExit(f"error: {error}")
        if self.is_main:
            self._finish(time.perf_counter() - started)

    def _train_epoch(self, epoch):
        args = self.args
        sampler = self.train_loader.batch_sampler
        sampler.set_epoch(epoch)
        if epoch != self.start_epoch:
            self.progress = EpochProgress()
        sampler.skip_batches = self.progress.steps
        record = {"epoch": epoch + 1, **train_one_epoch(
            self.model, self.criterion, self.optimizer, self.lr_scheduler, self.train_loader, epoch=epoch + 1,
            device_config=self.device_config, progress=self.progress, scaler=self.scaler, grad_clip=args.grad_clip,
            max_skipped_images=args.max_skipped_images, print_every=args.print_every, log=self.log,
            should_stop=self.stop.requested)}
        self.loss_history.append(record["loss"])
        last = epoch + 1 == args.epochs
        if self.val_loader is not None and (last or (args.eval_every and (epoch + 1) % args.eval_every == 0)):
            _, evaluation = evaluate(self.model_without_ddp, self.val_loader, postprocessor=self.postprocessor,
                                     device_config=self.device_config, evaluator=args.evaluator)
            if evaluation is not None:
                record["coco"] = evaluation["stats"]
                if self.best_metric is None or evaluation["stats"]["AP"] > self.best_metric:
                    self.best_metric, self.best_epoch = evaluation["stats"]["AP"], epoch + 1
        if self.is_main:
            self.log(format_epoch_line(record, args.epochs) + time_left(
                time.perf_counter() - self.fit_started, epoch + 1 - self.start_epoch, args.epochs - epoch - 1))
            self.run.append_metrics(record)
            self.run.plot_curves()
            self._save_checkpoints(epoch + 1, is_best=self.best_epoch == epoch + 1)
        distributed.barrier()

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
            "args": dict(vars(self.args), run_name=self.run.name),
            "class_names": list(self.train_set.class_names),
            "category_ids": list(self.train_set.label_to_category_id),
        }

    def _save_checkpoints(self, epoch, is_best):
        state = self._state(epoch)
        self.run.save_checkpoint(state, "checkpoint_last.pt")
        if is_best:
            self.run.save_checkpoint(state, "checkpoint_best.pt")
        if self.args.save_every and epoch % self.args.save_every == 0:
            self.run.save_checkpoint(state, f"checkpoint_epoch{epoch}.pt")
        self.run.remove("checkpoint_interrupted.pt")

    def _save_interrupted(self, epoch, reason):
        if not self.is_main:
            return
        partial = self.progress.as_dict() if self.progress.steps else None
        path = self.run.save_checkpoint(self._state(epoch, partial), "checkpoint_interrupted.pt")
        self.log(f"{reason}; saved a resumable checkpoint: {path}\n"
                 f"continue with: python train.py --resume {path} [same flags]")

    def _finish(self, seconds):
        final_path = self.run.save_checkpoint(self._state(self.args.epochs), "model_final.pt")
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
        if self.log is not print:
            self.log.close()
        distributed.cleanup()


# ----- building blocks ------------------------------------------------------------------------
class StopRequest:
    """First Ctrl-C: finish the current step, save, exit. A second one stops at once."""

    def __init__(self):
        self._requested = False

    def requested(self):
        return self._requested

    def _handle(self, signum, frame):
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (press again to stop now)", flush=True)

    def on_ctrl_c(self):
        """Context manager installing the handler (only the main thread may install signal handlers)."""
        return _SignalHandler(signal.SIGINT, self._handle)


class _SignalHandler:
    def __init__(self, signum, handler):
        self.signum, self.handler, self.previous = signum, handler, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(self.signum, self.handler)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(self.signum, self.previous)


def _resolve_device(name):
    try:
        return resolve_device(name)
    except ValueError as error:
        raise SystemExit(f"error: --device: {error}") from None


def _run_name(args, resume_state):
    """--run_name, else the resumed run's name, else the next free automatic name."""
    saved = resume_state["args"].get("run_name") if resume_state is not None else None
    return args.run_name or saved or next_run_name(args.output_path, args.log_dir, args.depth, args.epochs)


def check_datasets(args):
    """The dataset check train.py runs before anything is written; raises DatasetError."""
    sets = [args.train_set] + ([args.val_set] if _has_val_set(args) else [])
    for set_name in sets:
        report = validate_or_raise(args.coco_path, set_name)
        if report.fixes:
            print(report.format(max_lines=10))


def _has_val_set(args):
    return bool(args.val_set) and os.path.exists(os.path.join(args.coco_path, f"{args.val_set}.json"))


def build_data(args, device, rank, world_size):
    """(training set, training loader, validation loader or None)."""
    train_set = CocoDetection(args.coco_path, args.train_set, TrainTransform(args.min_side, args.max_side),
                              skip_unreadable=True)
    pin_memory = device.type == "cuda"
    train_loader = build_loader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=args.drop_last,
                                seed=args.seed, workers=args.workers, pin_memory=pin_memory, rank=rank,
                                world_size=world_size)
    if len(train_loader) == 0:
        raise SystemExit(f"error: {train_set.json_path}: no full batch of {args.batch_size} images "
                         "(lower --batch_size or drop --drop_last)")
    val_loader = None
    if _has_val_set(args):
        val_set = CocoDetection(args.coco_path, args.val_set, EvalTransform(args.min_side, args.max_side))
        val_loader = build_loader(val_set, batch_size=args.eval_batch_size, seed=args.seed,
                                  workers=min(args.workers, 2), pin_memory=pin_memory, rank=rank,
                                  world_size=world_size)
    return train_set, train_loader, val_loader


def check_resumable(args, state):
    """Refuse a checkpoint of another model before anything is written."""
    saved = state.get("args", {})
    different = [f"--{name} {saved.get(name)} (checkpoint) vs {getattr(args, name)}" for name in MODEL_ARG_NAMES
                 if name in saved and saved[name] != getattr(args, name)]
    if different:
        raise SystemExit(f"error: {args.resume} was trained with another model: {'; '.join(different)}")
    model_from_checkpoint(state, args.resume)  # validates the weights against the description


def build_training_model(num_classes, args, device, world_size, log):
    """(model, model wrapped for DistributedDataParallel or the same model in one process)."""
    model = build_model(num_classes, args)
    if args.pretrained:
        missing, unexpected = load_pretrained_backbone(model.backbone, args.pretrained)
        log(f"loaded backbone weights from {args.pretrained}: {len(missing)} missing keys"
            f"{' ' + str(missing[:5]) if missing else ''}, {len(unexpected)} unexpected keys"
            f"{' ' + str(unexpected[:5]) if unexpected else ''}")
    if args.sync_bn and world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if world_size == 1:
        return model, model
    device_ids = [device.index] if device.type == "cuda" else None
    return model, torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


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
    return line
