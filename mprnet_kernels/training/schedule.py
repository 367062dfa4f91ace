"""The learning-rate schedule: linear warm-up, then cosine annealing, stepped once per epoch.

Epoch e (0-based) of E, with W warm-up epochs and base rate lr:
    e <  W:  lr * (e + 1) / W                         (lr / W, 2 lr / W, ..., lr)
    e >= W:  min_lr + (lr - min_lr) * (1 + cos(pi * k / (E - W))) / 2,  k = e - W + 1
so the warm-up ends at lr and the last epoch trains at exactly min_lr.

It is a closed form of the epoch rather than a chain of multiplicative updates (as torch's
CosineAnnealingLR computes it), so any epoch can be jumped to: that is how a run resumes from an
upstream checkpoint that saved no scheduler, and why extending --epochs on resume just
stretches the cosine. The state it saves is informative; loading trusts only the epoch.
"""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LRScheduler


def lr_at(epoch: int, lr: float, min_lr: float, warmup_epochs: int, epochs: int) -> float:
    if epoch < warmup_epochs:
        return lr * (epoch + 1) / warmup_epochs
    remaining = epochs - warmup_epochs
    if remaining <= 0:
        return lr
    k = min(epoch - warmup_epochs + 1, remaining)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * k / remaining))


class WarmupCosine(LRScheduler):
    """Sets every parameter group's lr to lr_at(last_epoch, ...); step() once per epoch."""

    def __init__(self, optimizer, lr: float, min_lr: float, warmup_epochs: int, epochs: int):
        self.lr, self.min_lr, self.warmup_epochs, self.epochs = lr, min_lr, warmup_epochs, epochs
        super().__init__(optimizer)

    def _rate(self) -> float:
        return lr_at(self.last_epoch, self.lr, self.min_lr, self.warmup_epochs, self.epochs)

    def get_lr(self):
        return [self._rate() for _ in self.optimizer.param_groups]

    def seek(self, epoch: int) -> None:
        """Make `epoch` (0-based, the next one to train) the current epoch and set the lr."""
        self.last_epoch = epoch
        rate = self._rate()
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self._last_lr = [rate for _ in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "lr": self.lr, "min_lr": self.min_lr,
                "warmup_epochs": self.warmup_epochs, "epochs": self.epochs}

    def load_state_dict(self, state_dict) -> None:
        self.seek(int(state_dict["last_epoch"]))
