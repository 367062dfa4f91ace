"""Write a small synthetic paired set (DIR/{train,val}/{input,target}) for deblur, derain or denoise.

The point is a set that `mprnet-kernels train` can run on, on a CPU, in minutes, with no download:
clean targets are generated (a smooth two-colour gradient under random ellipses, rotated
rectangles, triangles and rings, filled with flat colour, stripes or checks: edges and texture
for a network to restore), and each input is its target degraded for the task:

- deblur: convolved with a random kernel: straight motion blur (5-15 px at any angle), a
  Gaussian (sigma 0.8-2.5 px) or the one after the other; borders reflected.
- derain: 0.2-0.6 streaks per 100 pixels, thin bright slanted lines sharing one angle (within
  30 degrees of vertical, +-3 degrees each), softened by a small Gaussian and screen-blended in,
  so an input is never darker than its target.
- denoise: additive Gaussian noise, sigma 10-50 (of 255) per image, clipped to [0, 1].

Files are 8-bit RGB PNGs with the same name (0000.png, ...) in input/ and target/, size x size
pixels; `size` is a multiple of 8 (at least 16) so whole images fit MPRNet without padding.
DIR/demo_data.json records the arguments and every image's degradation (kernel, sigma, ...).
Everything is drawn from generators seeded by (seed, split, index), so a run is reproducible to
the byte, and image i of a split does not depend on `count`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .reference.model import SIZE_MULTIPLE  # H and W of MPRNet's input are multiples of it
from .tasks import TASKS

DEFAULT_COUNT = 64
DEFAULT_SIZE = 128
MIN_SIZE = 16
SPLITS = ("train", "val")


def default_val_count(count: int) -> int:
    """A quarter of the training pairs, at least 4 (enough for a validation PSNR to mean something)."""
    return max(4, count // 4)


# --------------------------------------------------------------------------- clean images


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) in pixels, float32, each (size, size)."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(c, c, indexing="ij")


def _background(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A linear gradient between two colours in a random direction, with a gentle low-frequency wave."""
    size = y.shape[0]
    c0, c1 = rng.uniform(0.1, 0.9, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    t = (x * math.cos(angle) + y * math.sin(angle)) / size
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    wave = 0.05 * np.sin(2 * math.pi * rng.uniform(0.5, 2.0) * (y / size) + rng.uniform(0, 2 * math.pi))
    return c0 + (c1 - c0) * t[..., None] + wave[..., None]


def _shape_mask(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A random ellipse, rotated rectangle, triangle or ring, as a boolean (size, size) mask."""
    size = y.shape[0]
    cy, cx = rng.uniform(0, size, 2)
    a, b = rng.uniform(0.06, 0.3, 2) * size
    angle = rng.uniform(0, math.pi)
    u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
    v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
    kind = rng.integers(4)
    if kind == 0:  # ellipse
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if kind == 1:  # rotated rectangle
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if kind == 2:  # triangle: inside all three edges (sign of the cross product)
        p = np.stack([cy, cx]) + rng.uniform(-0.3, 0.3, (3, 2)) * size
        signs = [(x - p[i, 1]) * (p[j, 0] - p[i, 0]) - (y - p[i, 0]) * (p[j, 1] - p[i, 1])
                 for i, j in ((0, 1), (1, 2), (2, 0))]
        positive = (signs[0] >= 0) & (signs[1] >= 0) & (signs[2] >= 0)
        return positive | ((signs[0] <= 0) & (signs[1] <= 0) & (signs[2] <= 0))  # either winding
    r = np.sqrt(u ** 2 + v ** 2)  # ring
    return (r <= a) & (r >= a * rng.uniform(0.4, 0.8))


def _fill(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """What a shape is filled with: a flat colour (half the time), stripes or checks (periods of
    3-16 px: the high frequencies a deblurring network has to bring back)."""
    c0, c1 = rng.uniform(0.05, 0.95, (2, 3)).astype(np.float32)
    kind = rng.choice(3, p=(0.5, 0.3, 0.2))
    if kind == 0:
        return np.broadcast_to(c0, y.shape + (3,))
    period = rng.uniform(3, 16)
    angle = rng.uniform(0, math.pi)
    if kind == 1:
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    else:
        t = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
    return c0 + (c1 - c0) * t[..., None]


def clean_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float32 target image in [0, 1]."""
    y, x = _grid(size)
    image = _background(rng, y, x)
    for _ in range(rng.integers(4, 11)):
        image = np.where(_shape_mask(rng, y, x)[..., None], _fill(rng, y, x), image)
    return np.clip(image, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- degradations


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(H, W, 3) image convolved per channel with a normalised odd-sized (k, k) kernel, borders
    reflected so the edges are blurred like the interior."""
    k = kernel.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    x = torch.nn.functional.pad(x, (k // 2,) * 4, mode="reflect")
    w = torch.from_numpy(np.ascontiguousarray(kernel[::-1, ::-1]))[None, None].expand(3, 1, k, k)
    out = torch.nn.functional.conv2d(x, w.float(), groups=3)[0]
    return out.numpy().transpose(1, 2, 0)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised (k, k) Gaussian, k = 2 * ceil(3 sigma) + 1."""
    r = int(math.ceil(3 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised (k, k) kernel of a straight motion of `length` px at `angle` (radians): points
    along the segment splatted bilinearly onto the grid."""
    r = int(math.ceil(length / 2)) + 1
    k = np.zeros((2 * r + 1, 2 * r + 1), dtype=np.float64)
    t = np.linspace(-length / 2, length / 2, max(8, int(4 * length)))
    py, px = r + t * math.sin(angle), r + t * math.cos(angle)
    y0, x0 = np.floor(py).astype(int), np.floor(px).astype(int)
    fy, fx = py - y0, px - x0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(k, (y0 + dy, x0 + dx), w)
    return (k / k.sum()).astype(np.float32)


def _blur(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    kind = rng.choice(("motion", "gaussian", "motion+gaussian"), p=(0.5, 0.25, 0.25))
    params: dict = {"kernel": str(kind)}
    image = clean
    if "motion" in kind:
        params["length"] = float(rng.uniform(5, 15))
        params["angle_deg"] = float(rng.uniform(0, 180))
        image = _convolve(image, motion_kernel(params["length"], math.radians(params["angle_deg"])))
    if "gaussian" in kind:
        params["sigma"] = float(rng.uniform(0.8, 2.5))
        image = _convolve(image, gaussian_kernel(params["sigma"]))
    return image, params


def _rain(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    size = clean.shape[0]
    count = max(1, int(rng.uniform(0.002, 0.006) * size * size))
    angle = rng.uniform(-30, 30)
    strength = float(rng.uniform(0.5, 0.9))
    # Every streak as samples half a pixel apart; samples past a streak's own length are dropped.
    lengths = rng.uniform(0.05, 0.2, count) * size
    angles = np.radians(angle + rng.uniform(-3, 3, count))
    starts = rng.uniform(-0.1 * size, 1.1 * size, (count, 2))
    brightness = rng.uniform(0.5, 1.0, count)
    t = np.arange(0, lengths.max(), 0.5)[None, :]
    keep = t <= lengths[:, None]
    py = starts[:, :1] + t * np.cos(angles)[:, None]
    px = starts[:, 1:] + t * np.sin(angles)[:, None]
    iy, ix = np.floor(py).astype(int), np.floor(px).astype(int)
    keep &= (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
    streaks = np.zeros((size, size), dtype=np.float32)
    np.maximum.at(streaks, (iy[keep], ix[keep]), np.broadcast_to(brightness[:, None], keep.shape)[keep])
    soft = float(rng.uniform(0.5, 0.9))
    streaks = _convolve(np.repeat(streaks[..., None], 3, axis=2), gaussian_kernel(soft))[..., 0]
    # A one-pixel line blurred across by a Gaussian keeps 1 / (sqrt(2 pi) soft) of its height: undo
    # that, so softening widens the streaks without fading them.
    streaks = np.clip(streaks * (math.sqrt(2 * math.pi) * soft * strength), 0, 1)[..., None]
    image = 1 - (1 - clean) * (1 - streaks)  # screen blend: brighter where the streaks are
    return image, {"streaks": count, "angle_deg": float(angle), "strength": strength, "softness": soft}


def _noise(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    sigma = float(rng.uniform(10, 50))
    noisy = clean + rng.normal(0, sigma / 255, clean.shape).astype(np.float32)
    return noisy, {"sigma": sigma}


_DEGRADE = {"deblur": _blur, "derain": _rain, "denoise": _noise}


def degrade(task: str, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """(input, params): `clean` degraded for `task`, clipped to [0, 1], and what was done."""
    image, params = _DEGRADE[task](clean, rng)
    return np.clip(image, 0, 1).astype(np.float32), params


def make_pair(task: str, size: int, seed, index: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """(input, target, params) for image `index` of a stream identified by `seed` (an int or a
    sequence of ints): (size, size, 3) float32 arrays in [0, 1]. The target depends on seed and
    index only, so the three tasks degrade the same clean images."""
    _check_task(task)
    key = list(seed) if isinstance(seed, (list, tuple)) else [seed]
    target = clean_image(np.random.default_rng(key + [index, 0]), size)
    image, params = degrade(task, target, np.random.default_rng(key + [index, 1 + TASKS.index(task)]))
    return image, target, params


# --------------------------------------------------------------------------- the dataset


def _check_task(task) -> None:
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")


def _check_args(task, count, size, seed, val_count) -> None:
    _check_task(task)

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(count) or count < 1:
        raise ValueError(f"count: expected an integer >= 1 (training pairs), got {count!r}")
    if val_count is not None and (not is_int(val_count) or val_count < 1):
        raise ValueError(f"val_count: expected an integer >= 1 (validation pairs), got {val_count!r}")
    if not is_int(size) or size < MIN_SIZE or size % SIZE_MULTIPLE:
        raise ValueError(f"size: expected a multiple of {SIZE_MULTIPLE} that is at least {MIN_SIZE} "
                         f"(MPRNet needs multiples of 8), got {size!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")


def _check_empty(root: Path) -> None:
    """Refuse to mix with an earlier set: stale pairs from a bigger --count would stay behind."""
    for split in SPLITS:
        folder = root / split
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(f"{folder} already exists and is not empty; choose a new or empty DIR "
                                  f"(or delete {folder} first)")


def _write(path: Path, array: np.ndarray) -> None:
    from .images import write_png

    write_png(path, torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))


def make_demo_data(root, task: str = "deblur", count: int = DEFAULT_COUNT, size: int = DEFAULT_SIZE,
                   seed: int = 0, val_count: int | None = None) -> dict:
    """Write `count` training and `val_count` (default: a quarter, at least 4) validation pairs
    under root/{train,val}/{input,target}/ and root/demo_data.json.

    Returns {"root", "task", "size", "seed", "train", "val" (pair counts), "dirs" ({split:
    {"input": Path, "target": Path}}), "json" (Path)}. Raises ValueError naming a bad argument and
    FileExistsError when root/train or root/val holds files already."""
    _check_args(task, count, size, seed, val_count)
    root = Path(root)
    _check_empty(root)
    counts = {"train": count, "val": default_val_count(count) if val_count is None else val_count}
    dirs = {split: {kind: root / split / kind for kind in ("input", "target")} for split in SPLITS}
    record = {"task": task, "size": size, "seed": seed, "splits": {}}
    for split_id, split in enumerate(SPLITS):
        record["splits"][split] = []
        for i in range(counts[split]):
            name = f"{i:04d}.png"
            image, target, params = make_pair(task, size, [seed, split_id], i)
            _write(dirs[split]["input"] / name, image)
            _write(dirs[split]["target"] / name, target)
            record["splits"][split].append({"name": name, **params})
    json_path = root / "demo_data.json"
    json_path.write_text(json.dumps(record, indent=1) + "\n")
    return {"root": root, "task": task, "size": size, "seed": seed, **counts, "dirs": dirs, "json": json_path}


# --------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    parser.add_argument("root", metavar="DIR", help="where to write train/ and val/ (created; must not hold an "
                                                    "earlier set)")
    parser.add_argument("--task", choices=TASKS, default="deblur",
                        help="the degradation: deblur (motion/Gaussian blur), derain (bright slanted streaks), "
                             "denoise (Gaussian noise, sigma 10-50 of 255); default deblur")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, metavar="N",
                        help=f"training pairs, at least 1 (default {DEFAULT_COUNT})")
    parser.add_argument("--val-count", type=int, default=None, metavar="N",
                        help="validation pairs (default: a quarter of --count, at least 4)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="S",
                        help=f"image side in pixels, a multiple of 8, at least {MIN_SIZE} (default {DEFAULT_SIZE})")
    parser.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0); same seed, same bytes")


def main(args) -> int:
    t0 = time.perf_counter()
    try:
        info = make_demo_data(args.root, task=args.task, count=args.count, size=args.size, seed=args.seed,
                              val_count=args.val_count)
    except (ValueError, FileExistsError) as e:
        message = str(e)
        for name in ("count", "val_count", "size", "seed", "task"):  # name the flag, not the parameter
            if message.startswith(name + ":"):
                message = "--" + name.replace("_", "-") + message[len(name):]
        print(f"mprnet-kernels make-demo-data: {message}", file=sys.stderr)
        return 2
    print(f"wrote {info['train']} train and {info['val']} val {args.task} pairs ({args.size}x{args.size} PNGs) "
          f"under {info['root']}/{{train,val}}/{{input,target}} in {time.perf_counter() - t0:.1f} s")
    return 0
