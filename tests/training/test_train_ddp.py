"""`train` under DDP: 2 gloo processes on the CPU, each with half the batch, end with the same
parameters as one process with the whole batch (the sampler makes the two shards of every step
add up to the single-process batch; MPRNet has no BatchNorm, so the averaged gradient is the
whole batch's)."""

import os
import socket

import torch
import torch.multiprocessing as mp
from train_helpers import tiny_config

from helpers import rel_err
from mprnet_kernels.training.runlog import read_log
from mprnet_kernels.training.trainer import train

# float32: the halves' convolutions and the gradient average round differently from the
# whole batch's; after 4 Adam steps the worst parameter tensor differs by 1.1e-6 (relative
# norm) here, while giving both processes the same shard makes it 3e-2.
TOLERANCE = 1e-5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, config):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    train(config)


def test_two_processes_match_one_with_the_whole_batch(pairs, tmp_path):
    # 6 pairs, batch 4: 2 steps per epoch, 2 epochs (a new shuffle and a new rate in between).
    common = dict(epochs=2, batch=4)
    train(tiny_config(pairs, tmp_path / "one", **common))
    mp.spawn(_worker, args=(2, _free_port(), tiny_config(pairs, tmp_path / "two", **common)), nprocs=2, join=True)

    one = torch.load(tmp_path / "one" / "last.pth", weights_only=True)
    two = torch.load(tmp_path / "two" / "last.pth", weights_only=True)
    assert two["epoch"] == one["epoch"] == 2
    worst = max(rel_err(two["state_dict"][k], v) for k, v in one["state_dict"].items())
    assert worst < TOLERANCE, worst
    assert two["optimizer"]["state"][0]["step"].item() == 4
    rows_one, rows_two = read_log(tmp_path / "one" / "log.csv"), read_log(tmp_path / "two" / "log.csv")
    for a, b in zip(rows_one, rows_two):  # the logged loss is the mean over both processes
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) <= 1e-5 * float(a["train_loss"])
        assert abs(float(a["val_psnr"]) - float(b["val_psnr"])) < 1e-3
