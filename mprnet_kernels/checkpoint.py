"""Load upstream MPRNet checkpoints into any module with the MPRNet state_dict keys.

Upstream training saves ``{'epoch': int, 'state_dict': ..., 'optimizer': ...}``, sometimes from
``nn.DataParallel`` (every key prefixed ``module.``).  The most common failure is loading a
checkpoint of one preset into a model built with another; torch's own error then lists hundreds
of size mismatches without saying what to do, so this loader reports the mismatch compactly and
names the preset the checkpoint's shapes belong to.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

__all__ = ["load_checkpoint", "load_model", "checkpoint_config", "read_checkpoint_file", "save_weights",
           "CheckpointMismatchError"]

_PREFIX = "module."
_LIST_LIMIT = 10  # keys shown per category before "... and N more"


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's state_dict does not fit the model (keys, shapes or shared values)."""


def load_checkpoint(model: nn.Module, path_or_dict: Union[str, os.PathLike, Mapping],
                    strict: bool = True) -> Dict[str, Any]:
    """Load MPRNet weights into ``model`` and return the checkpoint's other entries.

    Args:
        model: any ``nn.Module`` whose state_dict uses the MPRNet keys (the reference MPRNet or
            a fast drop-in).
        path_or_dict: a path to a file written by ``torch.save``, or an already loaded object.
            Either form may be an upstream checkpoint (a dict with a ``'state_dict'`` entry) or
            a bare state_dict (a dict of tensors).  Files are read with
            ``torch.load(path, weights_only=True, map_location="cpu")``; ``load_state_dict``
            then copies the values onto the model's own device and dtype.
        strict: as in ``nn.Module.load_state_dict``: with ``strict=True`` missing or unexpected
            keys are an error; with ``strict=False`` they are ignored and only the keys present
            in both are loaded.  Shape mismatches on common keys are an error either way (torch
            behaves the same), and so is a checkpoint that holds different values under keys
            that name one shared parameter of the model (such as MPRNet's single PReLU).

    A ``module.`` prefix on the checkpoint's keys is stripped (unless the model's own keys carry
    it).

    Returns:
        Everything in the checkpoint except ``'state_dict'`` (e.g. ``{'epoch': ..,
        'optimizer': ..}``), or ``{}`` for a bare state_dict.

    Raises:
        FileNotFoundError: the path does not exist.
        CheckpointMismatchError: (a ``RuntimeError``) keys or shapes do not fit; the message
            names the source, lists the differences and, when the checkpoint's shapes fit one
            of the presets, says which preset to build the model with.
        ValueError / TypeError: the object is not a checkpoint at all.
    """
    checkpoint, source = _read(path_or_dict)
    state_dict, rest = _split(checkpoint, source)

    model_state = model.state_dict()
    state_dict = _strip_prefix(state_dict, model_state)

    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    mismatched = [(k, tuple(state_dict[k].shape), tuple(model_state[k].shape))
                  for k in model_state
                  if k in state_dict and tuple(state_dict[k].shape) != tuple(model_state[k].shape)]

    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(_describe_mismatch(
            source, missing if strict else [], unexpected if strict else [], mismatched,
            state_dict, model_state))

    conflicts = _shared_value_conflicts(model, state_dict)
    if conflicts:
        raise CheckpointMismatchError(
            f"load_checkpoint: state_dict from {source} holds different values under keys that "
            f"name one shared parameter of the model: {_short_list(conflicts)}")

    model.load_state_dict(state_dict, strict=strict)
    return rest


def load_model(path_or_dict: Union[str, os.PathLike, Mapping], *, device: Union[str, torch.device, None] = None,
               dtype: Optional[torch.dtype] = None, rewrites: Any = None, reference: bool = False) -> nn.Module:
    """The MPRNet a checkpoint fits, built (``checkpoint_config``), loaded and in eval mode.

    Args:
        path_or_dict: as for ``load_checkpoint`` (upstream files, ``mprnet-kernels train``'s,
            weights-only files, bare state_dicts).
        device, dtype: moved to after loading (default: CPU, float32).
        rewrites: the fast model's ``Rewrites`` (or a dict of them); default all on.
        reference: build ``mprnet_kernels.reference.MPRNet`` instead of the fast model.

    Raises what ``load_checkpoint`` and ``checkpoint_config`` raise: FileNotFoundError,
    ValueError (not an MPRNet checkpoint), CheckpointMismatchError.
    """
    checkpoint, _ = _read(path_or_dict)
    config = checkpoint_config(checkpoint)
    if reference:
        if rewrites is not None:
            raise ValueError("load_model: rewrites are options of the fast model; the reference has none")
        from .reference import MPRNet as Model
        model = Model(**config)
    else:
        from .model import MPRNet as Model
        model = Model(**config, rewrites=rewrites)
    load_checkpoint(model, checkpoint)
    return model.to(device=device, dtype=dtype).eval()


# --------------------------------------------------------------------------- writing

#: Entries of a checkpoint a weights-only file keeps besides the weights (docs/MPRNET.md "Checkpoints").
_KEPT = ("config", "epoch", "task", "best_psnr", "best_epoch")
_WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def save_weights(model_or_checkpoint: Union[nn.Module, str, os.PathLike, Mapping],
                 path: Union[str, os.PathLike], dtype: Optional[torch.dtype] = None) -> Dict[str, Any]:
    """Writes an inference-only checkpoint: ``{'state_dict': ..., 'config': ...}``, without the
    optimizer, scheduler, RNG states and run arguments a training checkpoint carries (Adam's two
    moments make those about 3x the weights).

    Args:
        model_or_checkpoint: a model with the MPRNet keys, or what ``load_checkpoint`` accepts
            (a path, a loaded checkpoint, a bare state_dict).
        path: the file to write (written to a temporary name, then renamed over it).
        dtype: None keeps the weights' dtype; torch.float16 or torch.bfloat16 halves the file
            (``load_checkpoint``/``load_model`` and upstream's ``model.load_state_dict`` copy
            the values into the model's own dtype, so a float32 model loads it).

    The file holds ``state_dict`` (no ``module.`` prefix, contiguous tensors; a tensor stored
    under several keys, MPRNet's shared PReLU, is stored once) and, when known, ``config`` (the
    constructor arguments) and the source's ``epoch``, ``task``, ``best_psnr`` and
    ``best_epoch``. Upstream's loader reads it (``torch.load(path)["state_dict"]``), and so does
    every loader here. Returns the object written.
    """
    if dtype is not None and dtype not in _WEIGHT_DTYPES:
        raise ValueError(f"save_weights: dtype must be None, torch.float32, torch.float16 or torch.bfloat16, "
                         f"got {dtype!r}")
    if isinstance(model_or_checkpoint, nn.Module):
        checkpoint, source = {"state_dict": model_or_checkpoint.state_dict()}, type(model_or_checkpoint).__name__
    else:
        checkpoint, source = _read(model_or_checkpoint)
    state_dict, rest = _split(checkpoint, source)
    state_dict = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in state_dict.items()}

    copies: Dict[tuple, torch.Tensor] = {}

    def stored(t: torch.Tensor) -> torch.Tensor:
        # one copy per distinct tensor, so that keys sharing a parameter still share storage
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key not in copies:
            to = dtype if dtype is not None and t.is_floating_point() else t.dtype
            copies[key] = t.detach().to(device="cpu", dtype=to).clone(memory_format=torch.contiguous_format)
        return copies[key]

    weights = {"state_dict": {k: stored(v) for k, v in state_dict.items()}}
    args = rest.get("args")
    if "task" not in rest and isinstance(args, Mapping) and isinstance(args.get("task"), str):
        rest = {**rest, "task": args["task"]}  # training checkpoints record it in their args
    weights.update((k, rest[k]) for k in _KEPT if k in rest)
    if "config" not in weights:
        config = _infer_config(weights["state_dict"])
        if config is not None:
            weights["config"] = config

    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        torch.save(weights, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return weights


# --------------------------------------------------------------------------- reading


def checkpoint_config(path_or_dict: Union[str, os.PathLike, Mapping]) -> Dict[str, Any]:
    """The MPRNet constructor arguments a checkpoint was saved from, so a model can be built to fit
    it (``MPRNet(**checkpoint_config(path))``): its ``'config'`` entry when it has one (checkpoints
    written by ``mprnet-kernels train``), else read off the state_dict's shapes.

    Raises ValueError when the object holds no MPRNet-like state_dict."""
    obj, source = _read(path_or_dict)
    if isinstance(obj.get("config"), Mapping):
        return dict(obj["config"])
    state_dict, _ = _split(obj, source)
    config = _infer_config({(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in state_dict.items()})
    if config is None:
        raise ValueError(f"checkpoint_config: {source} does not hold MPRNet weights")
    return config


def read_checkpoint_file(path: Union[str, os.PathLike]) -> Mapping:
    """The dict a checkpoint file holds, read with torch.load(weights_only=True) on the CPU;
    FileNotFoundError, or a one-line ValueError naming the file when it is not a checkpoint."""
    return _read(os.fspath(path))[0]


def _read(path_or_dict) -> Tuple[Mapping, str]:
    if isinstance(path_or_dict, (str, os.PathLike)):
        path = os.fspath(path_or_dict)
        if not os.path.isfile(path):
            # The (errno, message, filename) form sets .filename and prints the path once.
            raise FileNotFoundError(errno.ENOENT, "load_checkpoint: no such checkpoint file", path)
        obj = _torch_load(path)
        source = repr(path)
    elif isinstance(path_or_dict, Mapping):
        obj = path_or_dict
        source = "<dict>"
    else:
        raise TypeError("load_checkpoint: expected a path or a dict, got "
                        f"{type(path_or_dict).__name__}")
    if not isinstance(obj, Mapping):
        raise ValueError(f"load_checkpoint: {source} holds a {type(obj).__name__}, "
                         "not a checkpoint dict or state_dict")
    return obj, source


def _torch_load(path: str):
    """torch.load(weights_only=True), with a failure said in one line: torch's own message for a
    file that is not a checkpoint is a page about weights_only that does not name the problem."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # pickle.UnpicklingError, RuntimeError (not a zip / truncated), KeyError, EOFError
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if unsafe:
            raise ValueError(
                f"load_checkpoint: {path!r} holds an object of type {unsafe.group(1)}, which is not loaded because "
                "unpickling it could run code (torch.load(weights_only=True)); save plain tensors, numbers, "
                "strings, lists and dicts") from None
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise ValueError(f"load_checkpoint: {path!r} is not a file written by torch.save "
                         f"({type(e).__name__}{': ' + first if first and 'Weights only' not in first else ''})") from None


def _split(checkpoint: Mapping, source: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Separate the weights from the training metadata (epoch, optimizer, ...)."""
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        state_dict = dict(checkpoint["state_dict"])
        rest = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    else:
        state_dict = dict(checkpoint)
        rest = {}
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"load_checkpoint: {source} is neither an upstream checkpoint (a dict with a "
            f"'state_dict' entry) nor a bare state_dict; these entries are not tensors: "
            f"{_short_list(not_tensors)}")
    return state_dict, rest


def _strip_prefix(state_dict: Dict[str, torch.Tensor],
                  model_state: Mapping) -> Dict[str, torch.Tensor]:
    if any(k.startswith(_PREFIX) for k in model_state):
        return state_dict  # the model itself is wrapped; keep the keys as they are
    return {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in state_dict.items()}


def _shared_value_conflicts(model: nn.Module, state_dict: Mapping) -> List[str]:
    """Keys naming one shared parameter whose checkpoint values disagree.

    ``load_state_dict`` would copy each of them in turn and silently keep the last one.
    """
    groups: Dict[int, List[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    conflicts = []
    for names in groups.values():
        present = [n for n in names if n in state_dict]
        if len(present) < 2:
            continue
        first = state_dict[present[0]]
        if any(not torch.equal(state_dict[n], first) for n in present[1:]):
            conflicts.append(present[0])
    return conflicts


# --------------------------------------------------------------------------- reporting


def _short_list(items: List[str], limit: int = _LIST_LIMIT) -> str:
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f", ... and {len(items) - limit} more"
    return shown


def _describe_mismatch(source, missing, unexpected, mismatched, state_dict, model_state) -> str:
    lines = [f"load_checkpoint: state_dict from {source} does not fit the model "
             f"({len(state_dict)} checkpoint entries, {len(model_state)} model entries)"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_short_list(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_short_list(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}):")
        for key, ck, mk in mismatched[:_LIST_LIMIT]:
            lines.append(f"    {key}: checkpoint {ck} vs model {mk}")
        if len(mismatched) > _LIST_LIMIT:
            lines.append(f"    ... and {len(mismatched) - _LIST_LIMIT} more")
    hint = _preset_hint(state_dict, model_state)
    if hint:
        lines.append(f"  hint: {hint}")
    return "\n".join(lines)


def _infer_config(state: Mapping) -> Optional[Dict[str, Any]]:
    """Read MPRNet constructor arguments off state_dict shapes; None if it is not MPRNet-like."""
    try:
        first = state["shallow_feat1.0.weight"]
        n_feat, in_c, kernel_size = first.shape[0], first.shape[1], first.shape[2]
        scale_unetfeats = state["stage1_encoder.down12.down.1.weight"].shape[0] - n_feat
        scale_orsnetfeats = state["tail.weight"].shape[1] - n_feat
        out_c = state["tail.weight"].shape[0]
        hidden = state["shallow_feat1.1.CA.conv_du.0.weight"].shape[0]
    except (KeyError, IndexError, AttributeError):
        return None
    prefix = "stage3_orsnet.orb1.body."
    cabs = {k[len(prefix):].split(".")[0] for k in state
            if k.startswith(prefix) and ".CA." in k}
    return dict(in_c=int(in_c), out_c=int(out_c), n_feat=int(n_feat),
                scale_unetfeats=int(scale_unetfeats), scale_orsnetfeats=int(scale_orsnetfeats),
                num_cab=len(cabs), kernel_size=int(kernel_size),
                reduction=int(n_feat // hidden) if hidden else 0,
                bias=any(k.endswith(".bias") for k in state))


def _shapes_of(state: Mapping) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _preset_hint(state_dict: Mapping, model_state: Mapping) -> Optional[str]:
    """Say which configuration the checkpoint was saved from, when the model is not it.

    The preset is recognised by its widths (n_feat, scale_unetfeats, scale_orsnetfeats); any
    other argument that differs from the preset (num_cab, ...) becomes an override, and the
    suggestion is confirmed by comparing every shape of that model, built on the meta device
    (no memory, no initialisation cost), against the checkpoint.
    """
    found = _infer_config(state_dict)
    if found is None or found == _infer_config(model_state):
        return None
    from .reference import EXTRA_PRESETS, PRESETS, MPRNet  # lazy: the reference never imports this module

    widths = ("n_feat", "scale_unetfeats", "scale_orsnetfeats")
    wanted = _shapes_of(state_dict)
    for name, preset in {**PRESETS, **EXTRA_PRESETS}.items():
        if any(preset[w] != found[w] for w in widths):
            continue
        overrides = {k: v for k, v in found.items() if preset.get(k) != v}
        try:
            with torch.device("meta"):
                candidate = MPRNet.from_preset(name, **overrides)
        except (TypeError, ValueError):
            continue
        if _shapes_of(candidate.state_dict()) != wanted:
            continue
        extra = "".join(f", {k}={v!r}" for k, v in overrides.items())
        return (f"the checkpoint looks like the {name!r} preset (n_feat={preset['n_feat']}"
                f"{extra}); build the model with MPRNet.from_preset({name!r}{extra})")

    # No preset fits: still say which constructor arguments reproduce the checkpoint, if any.
    try:
        with torch.device("meta"):
            candidate = MPRNet(**found)
    except (TypeError, ValueError):
        return None
    if _shapes_of(candidate.state_dict()) != wanted:
        return None
    args = ", ".join(f"{k}={v!r}" for k, v in found.items())
    return f"the checkpoint's shapes fit a model built as MPRNet({args})"
