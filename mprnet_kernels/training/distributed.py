"""The process group for multi-GPU (or multi-process CPU) training, as torchrun sets it up.

torchrun exports RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/PORT); without them the run
is a single process and nothing here touches torch.distributed. The backend is nccl on CUDA and
gloo on CPU, so the same code path is tested on a CPU machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from .errors import SetupError


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise SetupError(f"environment variable {name}: expected an integer, got {value!r}") from None


def setup(device: Optional[str] = None) -> Dist:
    """Read torchrun's environment, choose the device (cuda:LOCAL_RANK when CUDA is used) and
    join the process group when WORLD_SIZE > 1."""
    world, rank, local_rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    try:
        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    except RuntimeError as e:
        raise SetupError(f"--device: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SetupError(f"--device {device}: CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
        owns = True
    return Dist(rank, world, local_rank, dev, owns)


def all_reduce_sum(values: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum a tensor over processes (a no-op for one process). Done in float64 on the process's
    device (gloo reduces CPU tensors, nccl CUDA ones)."""
    if not d.active:
        return values
    values = values.to(device=d.device, dtype=torch.float64)
    dist.all_reduce(values)
    return values


def cleanup(d: Dist, finished: bool = True) -> None:
    """Leave the process group. After a finished run every process first waits for the others
    (rank 0 ends later: it writes the checkpoints): a rank that tore its gloo group down and
    exited while rank 0 was still at work aborted now and then at exit ("terminate called
    without an active exception", SIGABRT, about 1 run in 15 of the 2-process test). After an
    error there is no barrier: the other processes may never reach it."""
    if d.owns_group and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
