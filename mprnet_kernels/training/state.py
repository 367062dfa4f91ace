"""Checkpoints: upstream's format plus what an exact resume needs, written atomically.

A checkpoint is torch.save of a dict with upstream's keys, 'epoch' (completed epochs),
'state_dict' (model, no `module.` prefix), 'optimizer', and ours: 'scheduler', 'config' (the
MPRNet constructor arguments, so `MPRNet(**ckpt['config'])` fits it), 'best_psnr',
'best_epoch', 'rng' (torch's CPU and CUDA generator states) and 'args' (the run's effective
TrainConfig, which --resume inherits). Everything is tensors and plain values, so it loads with
torch.load(weights_only=True).

Files are written to a temporary name in the same folder and renamed over the target with
os.replace: a run killed while saving leaves the previous last.pth whole.

--resume reads a whole checkpoint (read_checkpoint, restore); --init reads weights alone
(read_weights, load_weights) from any file load_checkpoint takes: upstream's release files,
this library's checkpoints, bare state_dicts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..checkpoint import CheckpointMismatchError, load_checkpoint, read_checkpoint_file
from .errors import SetupError


def save_atomic(obj: Any, path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: Optional[Dict[str, Any]]) -> None:
    if not state:
        return
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def make_checkpoint(epoch: int, model, optimizer, scheduler, model_config: Dict[str, Any],
                    best_psnr: float, best_epoch: int, args: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "epoch": epoch,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "config": dict(model_config),
        "best_psnr": best_psnr,
        "best_epoch": best_epoch,
        "rng": rng_state(),
        "args": args,
    }


def reason(error: Exception) -> str:
    """checkpoint.py's message for a dict it was handed, reworded for a file the user named: without
    the function's name and with "the file" for "<dict>"."""
    return re.sub(r"^\w+: ", "", str(error)).replace("<dict>", "the file")


def _load(path: Path, flag: str):
    try:
        return read_checkpoint_file(path)
    except (OSError, ValueError) as e:  # checkpoint.py's one-line reasons, for the flag that named the file
        raise SetupError(f"{flag}: {reason(e)}") from None


def read_checkpoint(path) -> Dict[str, Any]:
    """The checkpoint dict to resume from; SetupError naming the file when it is missing or is
    not a training checkpoint (upstream's minimum: 'epoch', 'state_dict', 'optimizer')."""
    path = Path(path)
    if not path.is_file():
        raise SetupError(f"--resume: {path}: no such checkpoint (nothing to resume)")
    ckpt = _load(path, "--resume")
    missing = [k for k in ("epoch", "state_dict", "optimizer") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise SetupError(f"--resume: {path} lacks {', '.join(repr(k) for k in missing)}; a training "
                         "checkpoint holds at least 'epoch', 'state_dict' and 'optimizer'")
    return ckpt


def read_weights(path) -> Dict[str, Any]:
    """The --init checkpoint as read; SetupError naming the file when it is missing, unreadable or
    not a dict. Only its weights are used (load_weights); the CLI reads the model off it first
    (checkpoint_config), which refuses a dict without MPRNet weights."""
    path = Path(path)
    if not path.is_file():
        raise SetupError(f"--init: {path}: no such checkpoint")
    ckpt = _load(path, "--init")
    if not isinstance(ckpt, dict):
        raise SetupError(f"--init: {path} holds a {type(ckpt).__name__}, not a checkpoint or state_dict")
    return ckpt


def load_weights(ckpt: Dict[str, Any], model, source: str) -> Dict[str, Any]:
    """Load the --init checkpoint's weights into model (a `module.` prefix stripped) and return
    its other entries, which the run leaves alone."""
    try:
        return load_checkpoint(model, ckpt)
    except (CheckpointMismatchError, ValueError, TypeError) as e:
        raise SetupError(f"--init {source}: {e}") from None


def restore(ckpt: Dict[str, Any], model, optimizer, scheduler, source: str) -> Dict[str, Any]:
    """Load weights, optimizer and RNG state; put the schedule at the checkpoint's epoch (its
    'scheduler' entry is not needed: upstream checkpoints have none). Returns {'epoch',
    'best_psnr', 'best_epoch'}."""
    try:
        load_checkpoint(model, ckpt)  # strips a `module.` prefix, names mismatches
    except CheckpointMismatchError as e:
        raise SetupError(f"--resume {source}: {e}") from None
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise SetupError(f"--resume {source}: its optimizer state does not fit this model ({e})") from None
    epoch = int(ckpt["epoch"])
    scheduler.seek(epoch)
    set_rng_state(ckpt.get("rng"))
    best = ckpt.get("best_psnr")
    return {"epoch": epoch, "best_psnr": float("-inf") if best is None else float(best),
            "best_epoch": int(ckpt.get("best_epoch") or 0)}
