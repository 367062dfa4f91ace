"""Paired images for training and validation: finding and checking the pairs, random patches
with the same crop, flip and rotation on input and target, and whole images for validation.

Layout: each folder (--train-dir, --val-dir; with --data DIR, DIR/train and DIR/val) holds
input/NAME and target/NAME (same file names), as upstream's training options point at: GoPro's
train/ and test/, Rain13K's train/ and test/Rain100L, SIDD's train/ and val/.
Every pair is checked up front from the image headers (fast: no pixel decoding), so a missing
folder, an unpaired file, an unreadable file, a size mismatch or an image smaller than the
patch stops the run before training starts, with the file named, instead of killing a loader
worker hours in.

Randomness: a training sample is asked for as (pair index, seed); the crop and the one of the 8
flips/rotations come from a generator seeded with that seed alone. The sampler (sampler.py)
derives the seeds from (run seed, epoch, position in the epoch), so a sample does not depend
on the number of loader workers, of processes, or on what ran before (resume is exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch.utils.data import Dataset

from ..images import ImageReadError, list_images, read_image
from ..reference.model import SIZE_MULTIPLE  # H and W of MPRNet's input are multiples of it
from .errors import SetupError

# Upstream's dataset code reads input/ and target/; its SIDD patch script
# (Denoising/generate_patches_SIDD.py) writes input/ and groundtruth/, so that name is taken too.
TARGET_FOLDERS = ("target", "groundtruth")

# Validation pads to a multiple of SIZE_MULTIPLE (MPRNet's 3 halvings); reflect padding needs the
# image to be larger than the pad, hence the minimum validation size.
MIN_VAL_SIZE = 8


@dataclass(frozen=True)
class Pair:
    input: Path
    target: Path
    height: int
    width: int


def image_header(path: Path) -> Tuple[int, int, str]:
    """(height, width, mode) read from the file's header, the size as read_image gives it (EXIF
    orientation applied: images.image_size); SetupError naming the file when it is not an image
    Pillow can open."""
    from PIL import Image, UnidentifiedImageError

    from ..images import ImageReadError, image_size

    try:
        height, width = image_size(path)
        with Image.open(path) as img:
            return height, width, img.mode
    except ImageReadError as e:
        raise SetupError(str(e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise SetupError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def find_pairs(folder, flag: str = "--train-dir", min_size: Optional[int] = None, report=print,
               data=None) -> List[Pair]:
    """The checked pairs of folder/input and folder/target, sorted by name. flag: the option the
    folder came from ('--train-dir' or '--val-dir'), named in errors; data: the --data root when
    folder is data/train or data/val (errors then name --data). min_size: the smallest height
    and width allowed (the training patch). report(line): where one-line notes go (the trainer
    passes its rank-0 printer)."""
    folder = Path(folder)
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise SetupError(f"--data {root}: no such folder")
        if not folder.is_dir():
            hint = ""
            if folder.name == "val" and (root / "test").is_dir():
                hint = (f"; {root} holds test/ instead, as upstream's GoPro does: give --train-dir "
                        f"{root / 'train'} --val-dir {root / 'test'}")
            raise SetupError(f"{folder}: no such folder (--data {root} must hold train/ and val/, each "
                             f"with input/ and target/){hint}")
        owner, sub = f"--data {root}", f"{folder.name}/"
    else:
        if not folder.is_dir():
            raise SetupError(f"{flag} {folder}: no such folder")
        owner, sub = f"{flag} {folder}", ""
    layout = f"{owner} must hold {sub}input/ and {sub}target/ with the same file names"
    if not (folder / "input").is_dir():
        raise SetupError(f"{folder / 'input'}: no such folder ({layout})")
    target = next((folder / name for name in TARGET_FOLDERS if (folder / name).is_dir()), None)
    if target is None:
        raise SetupError(f"{folder / 'target'}: no such folder ({layout})")
    if target.name != "target":
        report(f"note: {folder} has no target/; its {target.name}/ holds the targets")
    folders = [folder / "input", target]
    inputs, targets = ({p.name: p for p in list_images(f)} for f in folders)
    for have, lack, other in ((inputs, targets, folders[1]), (targets, inputs, folders[0])):
        unpaired = sorted(set(have) - set(lack))
        if unpaired:
            more = f" (and {len(unpaired) - 1} more unpaired files)" if len(unpaired) > 1 else ""
            raise SetupError(f"{have[unpaired[0]]}: no file of the same name in {other}{more}")
    if not inputs:
        raise SetupError(f"{folders[0]}: no images (expected PNG or JPEG files)")

    pairs, converted = [], []
    for name in sorted(inputs):
        h, w, mode = image_header(inputs[name])
        th, tw, tmode = image_header(targets[name])
        if (h, w) != (th, tw):
            raise SetupError(f"{inputs[name]} is {w}x{h} but its target {targets[name]} is {tw}x{th}; "
                             "the input and target of a pair must have the same size")
        if min_size is not None and (h < min_size or w < min_size):
            raise SetupError(f"{inputs[name]}: {w}x{h} is smaller than the {min_size}x{min_size} "
                             "training patch; lower --patch or remove the image")
        if h < MIN_VAL_SIZE or w < MIN_VAL_SIZE:
            raise SetupError(f"{inputs[name]}: {w}x{h} is too small; images must be at least "
                             f"{MIN_VAL_SIZE}x{MIN_VAL_SIZE}")
        converted += [p for p, m in ((inputs[name], mode), (targets[name], tmode)) if m != "RGB"]
        pairs.append(Pair(inputs[name], targets[name], h, w))
    if converted:
        # read_image converts them (grayscale, alpha, 16-bit...); say so once rather than per read.
        report(f"note: {len(converted)} image(s) in {folder} are not 8-bit RGB and are converted "
              f"to RGB when read, e.g. {converted[0]}")
    return pairs


def _read(path: Path) -> torch.Tensor:
    try:
        return read_image(path)[0]
    except ImageReadError as e:  # e.g. a file truncated after the header check
        raise SetupError(str(e)) from None


def random_patch(inp: torch.Tensor, tgt: torch.Tensor, patch: int,
                 generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same random patch x patch crop and the same one of the 8 flips/rotations (the
    dihedral group: 4 rotations, each with or without a horizontal flip) on both images."""
    _, h, w = inp.shape
    top = int(torch.randint(0, h - patch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - patch + 1, (1,), generator=generator))
    mode = int(torch.randint(0, 8, (1,), generator=generator))
    out = []
    for img in (inp, tgt):
        img = img[:, top:top + patch, left:left + patch]
        img = torch.rot90(img, mode % 4, dims=(1, 2))
        if mode >= 4:
            img = img.flip(2)
        out.append(img.contiguous())
    return out[0], out[1]


class TrainPatches(Dataset):
    """Indexed by (pair index, seed) as the sampler yields them; returns (input, target)
    patches, float32 (3, patch, patch) in [0, 1]."""

    def __init__(self, pairs: List[Pair], patch: int):
        self.pairs = pairs
        self.patch = patch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item: Tuple[int, int]):
        index, seed = item
        pair = self.pairs[index]
        generator = torch.Generator().manual_seed(int(seed))
        return random_patch(_read(pair.input), _read(pair.target), self.patch, generator)


class ValImages(Dataset):
    """Whole validation images, (input, target), each float32 (3, H, W); use batch size 1, as
    sizes may differ."""

    def __init__(self, pairs: List[Pair]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        pair = self.pairs[index]
        return _read(pair.input), _read(pair.target)
