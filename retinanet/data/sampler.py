"""Batch sampler that never mixes aspect-ratio groups.

Images are grouped by aspect ratio (by default landscape, width >= height, versus portrait),
read from the dataset JSON rather than by decoding images. Every epoch the images are
reshuffled under ``(seed, epoch)``, batched within their group, and the batches shuffled, so a
resumed run sees exactly the batches an uninterrupted one would. Each index comes with a
per-sample augmentation seed, which makes augmentation independent of worker count, and with the
batch's seed, for the draws a whole batch shares (``--rot90``'s orientation, so that a batch of
non-square images keeps one shape): items are ``(index, sample seed, batch seed)``.

For several processes (``num_replicas`` > 1) every rank builds the same batch list and takes
every ``num_replicas``-th batch, the list padded by repetition so all ranks step equally often.
"""
import bisect

import numpy as np
from torch.utils.data import Sampler


class AspectRatioBatchSampler(Sampler):
    def __init__(self, aspect_ratios, batch_size, drop_last=False, shuffle=True, seed=3407,
                 group_boundaries=(1.0,), num_replicas=1, rank=0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.groups = np.array([bisect.bisect_right(group_boundaries, ratio) for ratio in aspect_ratios])
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        # Batches to leave out at the start of every pass over this epoch (resuming inside an epoch).
        # Not spent by a pass: torch's multi-process loader calls iter() on the sampler twice.
        self.skip_batches = 0
        self._cached = None

    def set_epoch(self, epoch, skip_batches=0):
        """Iterate over ``epoch``'s batches from now on, leaving out its first ``skip_batches``."""
        self.epoch = epoch
        self.skip_batches = skip_batches

    def _all_batches(self):
        # The batches depend only on the epoch; len() and iteration share one computation.
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        count = len(self.groups)
        order = rng.permutation(count) if self.shuffle else np.arange(count)
        augmentation_seeds = rng.integers(0, 2**31 - 1, size=count)
        # Batch seeds from a generator of their own, so the order and the sample seeds above do not
        # depend on them.
        batch_seeds = np.random.default_rng([self.seed, self.epoch, 1]).integers(0, 2**31 - 1, size=count)
        batches = []
        for group in np.unique(self.groups):
            members = order[self.groups[order] == group]
            for start in range(0, len(members), self.batch_size):
                batch = members[start:start + self.batch_size]
                if len(batch) < self.batch_size and self.drop_last:
                    continue
                batch_seed = int(batch_seeds[len(batches)])
                batches.append([(int(index), int(augmentation_seeds[index]), batch_seed) for index in batch])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.num_replicas > 1 and self.shuffle and batches:
            # Training: every rank must run the same number of steps.
            padding = (-len(batches)) % self.num_replicas
            batches += [batches[i % len(batches)] for i in range(padding)]
        self._cached = (self.epoch, batches)
        return batches

    def __iter__(self):
        batches = self._all_batches()[self.rank::self.num_replicas]
        return iter(batches[self.skip_batches:])

    def __len__(self):
        return len(self._all_batches()[self.rank::self.num_replicas])
