"""The fast MPRNet under DistributedDataParallel (gloo, 2 CPU processes): gradients equal the
single-process gradients of the full batch, as DDP's averaging promises."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import rel_err
from mprnet_kernels import MPRNet, MPRNetLoss

CONFIG = dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, state, x, y, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = MPRNet(**CONFIG).double()
        model.load_state_dict(state)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        shard = slice(rank * x.shape[0] // world, (rank + 1) * x.shape[0] // world)
        MPRNetLoss()(ddp(x[shard]), y[shard]).backward()
        if rank == 0:
            out.update({k: p.grad.clone() for k, p in model.named_parameters()})
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_match_single_process():
    torch.manual_seed(0)
    # float64, so that the comparison sees DDP's averaging rather than float32 summation order.
    model = MPRNet(**CONFIG).double()
    x, y = torch.rand(2, 3, 16, 16, dtype=torch.float64), torch.rand(2, 3, 16, 16, dtype=torch.float64)
    # DDP averages the per-rank gradients of per-rank mean losses: the mean of the two halves.
    for half in (slice(0, 1), slice(1, 2)):
        MPRNetLoss()(model(x[half]), y[half]).backward()
    expected = {k: p.grad / 2 for k, p in model.named_parameters()}

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), model.state_dict(), x, y, out), nprocs=2, join=True)
        got = dict(out)
    assert got.keys() == expected.keys()
    for name in expected:
        assert rel_err(got[name], expected[name]) < 1e-10, name


def test_every_gradient_has_its_parameters_strides():
    # DDP builds its gradient buckets as views with each parameter's strides and warns and copies
    # on every step when a gradient comes back with other strides. With channels_last, a 1x1
    # weight's strides are (C, 1, C, C): the fused kernels and the merged 1x1 paths must hand back
    # gradients with exactly those strides, not the contiguous (C, 1, 1, 1) of the same memory.
    torch.manual_seed(0)
    model = MPRNet(**CONFIG)
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    MPRNetLoss()(model(x), y).backward()
    mismatched = {name: (p.stride(), p.grad.stride()) for name, p in model.named_parameters()
                  if p.grad.stride() != p.stride()}
    assert not mismatched
