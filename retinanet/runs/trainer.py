"""The training run behind train.py: set-up, the epoch loop, evaluation, checkpoints, logs."""
import os
import signal
import threading
import time

import torch
from torch.utils.data import DataLoader

from retinanet.util import distributed
from retinanet.runs import run_dir as experiment
from retinanet.models.backbone import load_pretrained_backbone
from retinanet.runs.checkpoint import (atomic_torch_save, capture_rng_states, model_from_checkpoint, restore_rng_states)
from retinanet.runs.options import amp_dtype_for, resolve_device
from retinanet.data.coco import CocoDetection, collate
from retinanet.data.check import validate_or_raise
from retinanet.engine import NonFiniteLossError, TooManySkippedImagesError, predict, train_one_epoch
from retinanet.evaluation.coco_eval import evaluate_detections
from retinanet.models.loss import RetinaNetLoss
from retinanet.models.retinanet import MODEL_ARG_NAMES, build_model
from retinanet.optim import build_lr_scheduler, build_optimizer
from retinanet.models.postprocess import PostProcessor
from retinanet.data.sampler import AspectRatioBatchSampler
from retinanet.data.transforms import EvalTransform, TrainTransform


def _ignore_ctrl_c(worker_id):
    # Ctrl-C is handled by the main process, which stops between two steps; workers keep serving.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(dataset, batch_size, shuffle, drop_last, seed, workers, device, rank=0, world_size=1):
    sampler = AspectRatioBatchSampler(dataset.aspect_ratios(), batch_size, drop_last=drop_last, shuffle=shuffle,
                                      seed=seed, num_replicas=world_size, rank=rank)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      worker_init_fn=_ignore_ctrl_c if workers > 0 else None)


def evaluate_on(model, loader, device, args, amp_dtype=None):
    """Predict on ``loader``'s dataset (sharded over processes) and score it on the main process.

    Returns (results, evaluation dict or None). The evaluation is None on other processes and
    for a set without annotations."""
    dataset = loader.dataset
    postprocessor = PostProcessor(args.score_threshold, args.nms_iou, max_detections=args.max_detections)
    results = predict(model, postprocessor, loader, device, dataset.label_to_category_id,
                      amp_dtype=amp_dtype, channels_last=args.channels_last)
    results = [entry for part in distributed.all_gather_objects(results) for entry in part]
    if not distributed.is_main_process() or not dataset.has_annotations:
        return results, None
    return results, evaluate_detections(dataset.json_path, results, evaluator=args.evaluator)


class Trainer:
    def __init__(self, args, resume_state=None):
        self.args = args
        self.device = resolve_device(args.device)
        self.rank, self.world_size, _ = distributed.init_from_environment(self.device.type)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.is_main = self.rank == 0
        self.amp_dtype = amp_dtype_for(self.device, args.amp)
        torch.manual_seed(args.seed)
        self._check_dataset()
        self._build_data()
        self._start_run(resume_state)
        self._build_model()
        self.start_epoch, self.skip_steps, self.partial = 0, 0, None
        self.best_metric, self.best_epoch, self.loss_history = None, None, []
        if resume_state is not None:
            self._resume(resume_state)

    # ----- set-up -------------------------------------------------------------------------
    def _check_dataset(self):
        if self.args.skip_dataset_check or not distributed.is_main_process():
            return
        sets = [self.args.train_set]
        if self.args.val_set and os.path.exists(os.path.join(self.args.coco_path, f"{self.args.val_set}.json")):
            sets.append(self.args.val_set)
        for set_name in sets:
            report = validate_or_raise(self.args.coco_path, set_name)
            if report.fixes:
                print(report.format(max_lines=10))

    def _build_data(self):
        args = self.args
        self.train_set = CocoDetection(args.coco_path, args.train_set, TrainTransform(args.min_side, args.max_side),
                                       skip_unreadable=True)
        self.train_loader = build_loader(self.train_set, args.batch_size, True, args.drop_last, args.seed,
                                         args.workers, self.device, self.rank, self.world_size)
        if len(self.train_loader) == 0:
            raise SystemExit(f"error: {self.train_set.json_path}: no full batch of {args.batch_size} images "
                             "(lower --batch_size or drop --drop_last)")
        self.val_loader = None
        if args.val_set and os.path.exists(os.path.join(args.coco_path, f"{args.val_set}.json")):
            val_set = CocoDetection(args.coco_path, args.val_set, EvalTransform(args.min_side, args.max_side))
            self.val_loader = build_loader(val_set, args.eval_batch_size, False, False, args.seed,
                                           min(args.workers, 2), self.device, self.rank, self.world_size)

    def _start_run(self, resume_state):
        args = self.args
        if args.run_name is None and resume_state is not None:
            args.run_name = resume_state["args"].get("run_name")
        if args.run_name is None:
            args.run_name = experiment.next_run_name(args.output_path, args.log_dir, args.depth, args.epochs)
        self.run_dir = os.path.join(args.output_path, args.run_name)
        self.log = print
        if not self.is_main:
            return
        if resume_state is None and os.path.exists(os.path.join(self.run_dir, "metrics.jsonl")):
            raise SystemExit(f"error: {self.run_dir} already holds a run; pick another --run_name, or continue it "
                             f"with --resume {os.path.join(self.run_dir, 'checkpoint_last.pt')}")
        probe = os.path.join(self.run_dir, ".write-test")
        try:  # fail now, not after the first epoch, if unwritable
            os.makedirs(self.run_dir, exist_ok=True)
            with open(probe, "wb") as handle:
                handle.write(b"0" * 4096)
            os.remove(probe)
        except OSError as error:
            raise SystemExit(f"error: cannot write the run folder {self.run_dir} (--output_path): "
                             f"{error.strerror or error}") from None
        self.log = experiment.RunLog(os.path.join(args.log_dir, f"{args.run_name}.log"))
        self.metrics_path = os.path.join(self.run_dir, "metrics.jsonl")
        saved = dict(vars(args), class_names=self.train_set.class_names, world_size=self.world_size,
                     device_used=str(self.device), num_train_images=len(self.train_set))
        experiment.write_json(os.path.join(self.run_dir, "config.json"), saved)
        self.log(f"run {args.run_name}: {len(self.train_set)} training images, {self.train_set.num_classes} classes, "
                 f"device {self.device}, {self.world_size} process(es); writing to {self.run_dir}")

    def _build_model(self):
        args = self.args
        self.model = build_model(self.train_set.num_classes, args)
        if args.pretrained:
            missing, unexpected = load_pretrained_backbone(self.model.backbone, args.pretrained)
            self.log(f"loaded backbone weights from {args.pretrained}: {len(missing)} missing keys"
                     f"{' ' + str(missing[:5]) if missing else ''}, {len(unexpected)} unexpected keys"
                     f"{' ' + str(unexpected[:5]) if unexpected else ''}")
        if args.sync_bn and self.world_size > 1:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model_without_ddp = self.model
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.criterion = RetinaNetLoss(args.alpha, args.gamma, low_quality_matches=args.low_quality_matches)
        self.optimizer = build_optimizer(self.model.parameters(), args.optimizer, args.learning_rate,
                                         args.weight_decay, args.momentum)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, args, len(self.train_loader))
        needs_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_scaler else None

    def _resume(self, state):
        args = self.args
        saved = state.get("args", {})
        different = [f"--{name} {saved.get(name)} (checkpoint) vs {getattr(args, name)}" for name in MODEL_ARG_NAMES
                     if name in saved and saved[name] != getattr(args, name)]
        if different:
            raise SystemExit(f"error: {args.resume} was trained with another model: {'; '.join(different)}")
        model_from_checkpoint(state, args.resume)  # validates the weights against the description
        self.model_without_ddp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # Keep the iteration count, but let this command's flags define the schedule, so a run
        # can be extended (--epochs, --milestones) or continued at a lower --learning_rate.
        schedule = self.lr_scheduler.lr_lambdas
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.lr_scheduler.lr_lambdas = schedule
        self.lr_scheduler.base_lrs = [args.learning_rate] * len(self.lr_scheduler.base_lrs)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"]
        self.best_metric, self.best_epoch = state.get("best_metric"), state.get("best_epoch")
        self.loss_history = list(state.get("loss_history", []))
        self.partial = state.get("partial_epoch")
        self.skip_steps = self.partial["steps"] if self.partial else 0
        if "rng_states" in state:
            restore_rng_states(state["rng_states"])
        if self.is_main:
            experiment.truncate_metrics(self.metrics_path, self.start_epoch)
        self.log(f"resumed from {args.resume}: {self.start_epoch} epochs done"
                 + (f", {self.skip_steps} steps into epoch {self.start_epoch + 1}" if self.skip_steps else ""))

    # ----- the loop -----------------------------------------------------------------------
    def fit(self):
        args = self.args
        started = time.perf_counter()
        epoch = self.start_epoch
        self._stop_requested = False
        previous_handler = self._install_ctrl_c_handler()
        try:
            for epoch in range(self.start_epoch, args.epochs):
                self._train_epoch(epoch)
        except KeyboardInterrupt:
            self._save_interrupted(epoch, "interrupted by Ctrl-C")
            raise SystemExit(130)
        except (NonFiniteLossError, TooManySkippedImagesError) as error:
            self._save_interrupted(epoch, str(error))
            raise SystemExit(f"error: {error}")
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
        if self.is_main:
            self._finish(time.perf_counter() - started)

    def _install_ctrl_c_handler(self):
        """First Ctrl-C: finish the current step, save, exit. A second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def request_stop(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            print("\nCtrl-C: stopping after this step and saving a checkpoint (press again to stop now)", flush=True)

        return signal.signal(signal.SIGINT, request_stop)

    def _train_epoch(self, epoch):
        args = self.args
        self.train_loader.batch_sampler.set_epoch(epoch)
        self.train_loader.batch_sampler.skip_batches = self.skip_steps
        self.progress = self.partial or {}
        self.partial, self.skip_steps = None, 0
        stats = train_one_epoch(
            self.model, self.criterion, self.optimizer, self.lr_scheduler, self.train_loader, self.device, epoch + 1,
            scaler=self.scaler, amp_dtype=self.amp_dtype, grad_clip=args.grad_clip, channels_last=args.channels_last,
            max_skipped_images=args.max_skipped_images, print_every=args.print_every, log=self.log,
            progress=self.progress, stop_requested=lambda: self._stop_requested)
        self.loss_history.append(stats["loss"])
        record = {"epoch": epoch + 1, **stats}
        last = epoch + 1 == args.epochs
        if self.val_loader is not None and (last or (args.eval_every and (epoch + 1) % args.eval_every == 0)):
            _, evaluation = evaluate_on(self.model_without_ddp, self.val_loader, self.device, args, self.amp_dtype)
            if evaluation is not None:
                record["coco"] = evaluation["stats"]
                if self.best_metric is None or evaluation["stats"]["AP"] > self.best_metric:
                    self.best_metric, self.best_epoch = evaluation["stats"]["AP"], epoch + 1
        if self.is_main:
            self._log_epoch(record)
            self._save_checkpoints(epoch + 1, is_best=self.best_epoch == epoch + 1)
        distributed.barrier()

    def _log_epoch(self, record):
        line = (f"epoch {record['epoch']}/{self.args.epochs}: loss {record['loss']:.4f} (cls {record['cls_loss']:.4f}, "
                f"box {record['box_loss']:.4f}), lr {record['lr']:.3g}, {record['seconds']:.0f}s, "
                f"{record['images_per_second']:.1f} img/s")
        if "coco" in record:
            line += f", val AP {record['coco']['AP']:.4f} AP50 {record['coco']['AP50']:.4f}"
        self.log(line)
        experiment.append_metrics(self.metrics_path, record)
        try:
            from retinanet.runs.plots import plot_run_curves
            plot_run_curves(experiment.read_metrics(self.metrics_path), os.path.join(self.run_dir, "curves.png"),
                            title=self.args.run_name)
        except ImportError:
            pass

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
            "args": dict(vars(self.args)),
            "class_names": list(self.train_set.class_names),
            "category_ids": list(self.train_set.label_to_category_id),
        }

    def _save_checkpoints(self, epoch, is_best):
        state = self._state(epoch)
        path = os.path.join(self.run_dir, "checkpoint_last.pt")
        atomic_torch_save(state, path)
        if is_best:
            atomic_torch_save(state, os.path.join(self.run_dir, "checkpoint_best.pt"))
        if self.args.save_every and epoch % self.args.save_every == 0:
            atomic_torch_save(state, os.path.join(self.run_dir, f"checkpoint_epoch{epoch}.pt"))
        stale = os.path.join(self.run_dir, "checkpoint_interrupted.pt")
        if os.path.exists(stale):
            os.remove(stale)

    def _save_interrupted(self, epoch, reason):
        if not self.is_main:
            return
        partial = {key: value for key, value in getattr(self, "progress", {}).items()}
        state = self._state(epoch, partial if partial.get("steps") else None)
        path = os.path.join(self.run_dir, "checkpoint_interrupted.pt")
        atomic_torch_save(state, path)
        self.log(f"{reason}; saved a resumable checkpoint: {path}\n"
                 f"continue with: python train.py --resume {path} [same flags]")

    def _finish(self, seconds):
        args = self.args
        final_path = os.path.join(self.run_dir, "model_final.pt")
        atomic_torch_save(self._state(args.epochs), final_path)
        records = experiment.read_metrics(self.metrics_path)
        evaluated = [r for r in records if "coco" in r]
        summary = {
            "best_metric": self.best_metric, "best_epoch": self.best_epoch, "wall_seconds": seconds,
            "final_loss": self.loss_history[-1] if self.loss_history else None,
            "epoch_loss_list": self.loss_history, "final_coco": evaluated[-1]["coco"] if evaluated else None,
        }
        experiment.write_json(os.path.join(self.run_dir, "summary.json"), summary)
        self.log(f"epoch_loss_list: {[round(loss, 6) for loss in self.loss_history]}")
        if evaluated:
            self.log(f"final val AP {evaluated[-1]['coco']['AP']:.4f}; best AP {self.best_metric:.4f} at epoch "
                     f"{self.best_epoch}")
        self.log(f"finished in {seconds / 60:.1f} min; model: {final_path}")

    def close(self):
        if isinstance(self.log, experiment.RunLog):
            self.log.close()
        distributed.cleanup()
