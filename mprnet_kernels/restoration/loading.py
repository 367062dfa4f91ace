"""Checkpoints for `restore` and `evaluate`: the model they fit, and the task they were made for.

A checkpoint says its task by a 'task' entry or the 'task' in its saved 'args' (what
`mprnet-kernels train` writes); failing that, by having the widths of one task's preset (upstream's
checkpoints: deblur, derain and denoise differ in n_feat). A task the user names is checked
against that, and a mismatch is only a warning: a model trained for one degradation still runs on
another.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from ..tasks import TASKS

_WIDTHS = ("n_feat", "scale_unetfeats", "scale_orsnetfeats")


@dataclass
class LoadedCheckpoint:
    """model: the fast MPRNet fitted to the checkpoint, loaded, in eval mode; config: its
    constructor arguments; task and task_source: the checkpoint's task (checkpoint_task);
    entries: the checkpoint's entries other than the weights."""

    model: torch.nn.Module
    config: Dict[str, Any]
    task: Optional[str]
    task_source: Optional[str]
    entries: Dict[str, Any]


def _saved_task(checkpoint: Mapping) -> Optional[str]:
    """A task the checkpoint records: its 'task' entry, else the one in its 'args'."""
    args = checkpoint.get("args")
    for saved in (checkpoint.get("task"), args.get("task") if isinstance(args, Mapping) else None):
        if saved in TASKS:
            return saved
    return None


def checkpoint_task(checkpoint: Mapping, config: Mapping) -> tuple[Optional[str], Optional[str]]:
    """(task, how it is known): ("denoise", "recorded in the checkpoint"), ("derain", "the derain
    preset's widths"), or (None, None) when the checkpoint does not tell."""
    from ..reference import PRESETS

    saved = _saved_task(checkpoint)
    if saved is not None:
        return saved, "recorded in the checkpoint"
    presets = [name for name, p in PRESETS.items() if all(config.get(k) == p[k] for k in _WIDTHS)]
    if len(presets) == 1:
        return presets[0], f"the {presets[0]} preset's widths"
    return None, None


def choose_task(requested: Optional[str], loaded: LoadedCheckpoint,
                option: str = "--task") -> tuple[str, Optional[str]]:
    """(task, warning or None): the requested task, checked against the checkpoint's, or the
    checkpoint's when none is requested. ValueError naming `option` when neither says one."""
    if requested is None:
        if loaded.task is None:
            raise ValueError(f"{option}: the checkpoint does not say which task it restores (no 'task' entry, no "
                             f"preset's widths); give {option} {' | '.join(TASKS)}")
        return loaded.task, None
    if requested not in TASKS:
        raise ValueError(f"{option}: expected one of {', '.join(TASKS)}, got {requested!r}")
    if loaded.task is None or loaded.task == requested:
        return requested, None
    if loaded.task_source == "recorded in the checkpoint":
        return requested, f"the checkpoint was trained for {loaded.task}, not {option} {requested}"
    return requested, f"the checkpoint has the {loaded.task} preset's widths, but {option} is {requested}"


def _one_line(e: BaseException) -> str:
    """The first line of an error's message, with a hint line (CheckpointMismatchError's) kept."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    hint = next((line for line in lines[1:] if line.startswith("hint:")), None)
    first = re.sub(r"^(load_checkpoint|load_model|checkpoint_config): ", "", lines[0])  # the caller names the file
    return first + (f" ({hint})" if hint else "")


def load_for_restoring(path_or_dict, device=None) -> LoadedCheckpoint:
    """The checkpoint (a path or a loaded dict) as a LoadedCheckpoint on device (default cpu).

    Raises FileNotFoundError for a missing file and ValueError with a one-line message for
    anything else that keeps it from loading (not a torch.save file, not MPRNet weights, weights
    that do not fit its own 'config')."""
    from ..checkpoint import CheckpointMismatchError, checkpoint_config, load_model
    # _read is what load_model reads a path with (one-line errors); reading the dict here once
    # gives the task entries too, without unpickling the file twice.
    from ..checkpoint import _read

    if isinstance(path_or_dict, (str, os.PathLike)) and not os.path.isfile(path_or_dict):
        raise FileNotFoundError(f"{os.fspath(path_or_dict)}: no such file")
    try:
        checkpoint, _ = _read(path_or_dict)
        config = checkpoint_config(checkpoint)
        model = load_model(checkpoint, device=device)
    except (ValueError, TypeError, CheckpointMismatchError) as e:
        raise ValueError(f"cannot load it: {_one_line(e)}") from None
    task, source = checkpoint_task(checkpoint, config)
    entries = {k: v for k, v in checkpoint.items() if k != "state_dict"} if "state_dict" in checkpoint else {}
    return LoadedCheckpoint(model, config, task, source, entries)


def describe(config: Mapping) -> str:
    """The widths of a config, for the commands' first line."""
    return ", ".join(f"{k}={config[k]}" for k in (*_WIDTHS, "num_cab") if k in config)
