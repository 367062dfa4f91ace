"""How far tiled restoration is from whole-image restoration, and what it costs against the target.

    python bench/tiling.py                                   # small config: random init, then 300 Adam steps
    python bench/tiling.py --checkpoint CKPT --task denoise  # a trained checkpoint

On synthetic test images from make-demo-data's generator (a seed the training streams do not
use), prints for each tile size the PSNR of tiled vs whole output (worst image / mean), the
largest and mean |difference| on the [0, 1] scale, and the mean PSNR of each against the clean
target. Without --checkpoint it measures the small config (n_feat=16, scale_unetfeats=8,
scale_orsnetfeats=8, num_cab=2) at random init, trains it briefly on fresh synthetic pairs and
measures it again. Results and the commands that made them: bench/results/tiling.md.

Uses only the installed package's public API (mprnet_kernels.restoration, MPRNet, the
checkpoint loader, demo_data's pair generator).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from mprnet_kernels import MPRNet, MPRNetLoss, load_checkpoint
from mprnet_kernels.checkpoint import checkpoint_config
from mprnet_kernels.demo_data import make_pair
from mprnet_kernels.restoration import psnr, tiling_difference
from mprnet_kernels.tasks import TASKS

SMALL = dict(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=2)
TEST_SEED = [10_000]  # training batches use seeds [0], [1], ...: the test images are unseen


def synthetic_batch(task: str, seed: list, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets): count synthetic pairs as (count, 3, size, size) tensors."""
    pairs = [make_pair(task, size, seed, i)[:2] for i in range(count)]
    return tuple(torch.stack([torch.from_numpy(pair[k].transpose(2, 0, 1).copy()) for pair in pairs]) for k in (0, 1))


def load_model(path) -> torch.nn.Module:
    """The fast MPRNet built to fit the checkpoint (its config, else its weights' shapes), in eval mode."""
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    model = MPRNet(**checkpoint_config(checkpoint))
    load_checkpoint(model, checkpoint)
    return model.eval()


def train_briefly(model, task: str, steps: int) -> None:
    """Adam (lr 1e-3) on MPRNetLoss over fresh synthetic 64x64 pairs, 8 a step."""
    optim, loss_fn, t0 = torch.optim.Adam(model.parameters(), lr=1e-3), MPRNetLoss(), time.perf_counter()
    model.train()
    for step in range(steps):
        x, y = synthetic_batch(task, [step], 8, 64)
        optim.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optim.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            print(f"  step {step + 1}: loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)


def print_measurement(label, model, tests, tiles, overlap) -> None:
    x, y = tests
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    print(f"{label}: {x.shape[0]} images {x.shape[-1]}x{x.shape[-2]}, input vs target "
          f"{mean([psnr(a, b) for a, b in zip(x, y)]):.2f} dB (means over images)", flush=True)
    for tile in tiles:
        rows = [tiling_difference(model, a, tile, overlap, target=b) for a, b in zip(x, y)]
        worst = max(r["max_abs"] for r in rows)
        print(f"  tile {tile} overlap {overlap}: tiled vs whole {min(r['psnr'] for r in rows):.1f} dB worst, "
              f"{mean([r['psnr'] for r in rows]):.1f} dB mean; max |diff| {worst:.4f} ({255 * worst:.1f}/255), "
              f"mean |diff| {mean([r['mean_abs'] for r in rows]):.5f}; vs target: whole "
              f"{mean([r['psnr_whole'] for r in rows]):.2f} dB, tiled {mean([r['psnr_tiled'] for r in rows]):.2f} dB",
              flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/tiling.py", description=__doc__.strip().splitlines()[0])
    p.add_argument("--checkpoint", help="measure this checkpoint instead of training the small config")
    p.add_argument("--task", choices=TASKS, default="deblur", help="degradation of the test (and training) images")
    p.add_argument("--steps", type=int, default=300, help="Adam steps, batch 8 of 64x64 pairs (default 300)")
    p.add_argument("--size", type=int, default=512, help="side of the test images (default 512)")
    p.add_argument("--images", type=int, default=4, help="test images (default 4)")
    p.add_argument("--tiles", default="128,256", help="comma list of tile sizes (default 128,256)")
    p.add_argument("--overlap", type=int, default=32, help="(default 32)")
    a = p.parse_args(argv)
    tests = synthetic_batch(a.task, TEST_SEED, a.images, a.size)
    tiles = [int(t) for t in a.tiles.split(",")]
    if a.checkpoint:
        print_measurement(a.checkpoint, load_model(a.checkpoint), tests, tiles, a.overlap)
        return 0
    torch.manual_seed(0)
    model = MPRNet(**SMALL)
    print_measurement("small config, random init", model.eval(), tests, tiles, a.overlap)
    train_briefly(model, a.task, a.steps)
    print_measurement(f"small config, trained {a.steps} steps", model.eval(), tests, tiles, a.overlap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
