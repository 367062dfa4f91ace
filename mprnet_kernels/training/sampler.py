"""Which samples each process trains on, step by step: a distributed sampler whose shards add up
to the single-process batch, with the augmentation seeds drawn alongside the order.

Why not torch's DistributedSampler: it yields bare indices (the crop and flip would then come
from each worker's RNG, which depends on the number of workers and on history), and it pads an
uneven epoch with repeats per rank. Here an epoch is a fixed list of (pair index, seed) items
drawn from a generator seeded with (seed, epoch) alone; it has ceil(N / batch) full batches
(when N is not a multiple of the batch the order continues into a second shuffle, so every
step has a whole batch and every pair is seen at least once). Process r of W takes positions
r, r + W, r + 2W, ...; with batch/W items per step per process, step t of every process draws
from positions [t * batch, (t + 1) * batch): together exactly the single-process batch t. Like
DistributedSampler, call set_epoch(epoch) before each epoch.
"""

from __future__ import annotations

import math
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler

from .errors import SetupError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator that depends on (seed, epoch) only; SeedSequence mixes the two so nearby
    seeds and epochs give unrelated streams."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class EpochSampler(Sampler):
    """Yields (pair index, augmentation seed) for this process; see the module docstring."""

    def __init__(self, size: int, batch: int, rank: int = 0, world: int = 1, seed: int = 0,
                 max_steps: Optional[int] = None):
        if size < 1:
            raise SetupError("training set: no pairs to sample from")
        if batch % world:
            raise SetupError(f"--batch {batch}: the batch is global (summed over processes) and must be "
                             f"a multiple of the number of processes, {world}")
        self.size, self.batch, self.rank, self.world, self.seed = size, batch, rank, world, seed
        self.steps = math.ceil(size / batch)
        if max_steps is not None:
            self.steps = min(self.steps, max_steps)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self) -> Tuple[List[int], List[int]]:
        """The epoch's (indices, seeds) over all processes, in global position order."""
        g = epoch_generator(self.seed, self.epoch)
        total = self.steps * self.batch
        order = torch.cat([torch.randperm(self.size, generator=g)
                           for _ in range(math.ceil(total / self.size))])[:total]
        seeds = torch.randint(0, 2 ** 62, (total,), generator=g)
        return order.tolist(), seeds.tolist()

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order, seeds = self.plan()
        for position in range(self.rank, len(order), self.world):
            yield order[position], seeds[position]

    def __len__(self) -> int:
        return self.steps * self.batch // self.world
