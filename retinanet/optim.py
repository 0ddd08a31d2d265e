"""Optimizers and learning-rate schedules, chosen by flags.

The schedule is a per-iteration factor on the base learning rate: an optional linear warm-up
over ``warmup_iters`` iterations (from ``warmup_factor`` to 1), times either MultiStep decay
(``lr_gamma`` at each epoch in ``milestones``) or a cosine decay to zero over all epochs.
"""
import bisect
import math

import torch

OPTIMIZER_CHOICES = ("adam", "adamw", "sgd")
SCHEDULE_CHOICES = ("multistep", "cosine")


def build_optimizer(parameters, name, learning_rate, weight_decay=0.0, momentum=0.9):
    parameters = [p for p in parameters if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZER_CHOICES}")


class LearningRateFactor:
    """Callable iteration -> factor, picklable so that the scheduler state round-trips."""

    def __init__(self, iters_per_epoch, epochs, schedule="multistep", milestones=(), lr_gamma=0.1,
                 warmup_iters=0, warmup_factor=0.001):
        self.iters_per_epoch = max(1, iters_per_epoch)
        self.total_iters = self.iters_per_epoch * max(1, epochs)
        self.schedule = schedule
        self.milestones = sorted(milestones or ())
        self.lr_gamma = lr_gamma
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor

    def __call__(self, iteration):
        if self.schedule == "cosine":
            factor = 0.5 * (1 + math.cos(math.pi * min(iteration, self.total_iters) / self.total_iters))
        else:
            epoch = iteration // self.iters_per_epoch
            factor = self.lr_gamma ** bisect.bisect_right(self.milestones, epoch)
        if iteration < self.warmup_iters:
            progress = iteration / self.warmup_iters
            factor *= self.warmup_factor + (1 - self.warmup_factor) * progress
        return factor


def build_lr_scheduler(optimizer, args, iters_per_epoch, start_iteration=0):
    """LambdaLR over ``LearningRateFactor``, positioned at ``start_iteration`` (a resumed run).

    When resuming, each parameter group's ``initial_lr`` must hold the base rate; the first
    rate is then ``initial_lr * factor(start_iteration)``, exactly what an uninterrupted run has."""
    factor = LearningRateFactor(iters_per_epoch, args.epochs, args.lr_schedule, args.milestones, args.lr_gamma,
                                args.warmup_iters)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=start_iteration - 1)
