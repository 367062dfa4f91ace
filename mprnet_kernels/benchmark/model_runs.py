"""The model rows of `bench`: the fast MPRNet against the reference end to end, inference and a
training step (forward, MPRNetLoss, backward, Adam step), each checked, timed and its peak
memory measured."""

from __future__ import annotations

from typing import Dict, Optional

import torch

from .. import nn as fused
from .. import reference
from ..model import MPRNet
from ..registry import spec
from ..tasks import TASK_LOSSES
from ..testing import rel_err
from .config import BenchConfig, Sizes
from .results import Row, format_ms
from .timing import median_time, peak_memory

__all__ = ["TRAIN_LR", "autocast", "clear_models", "first_step_error", "flat_grads", "model_impls", "model_pair",
           "local_row", "local_train_size", "model_row", "model_tolerance", "train_row", "training_step"]


_models: Dict[tuple, tuple] = {}
_compiled: Dict[tuple, object] = {}

#: Adam's learning rate in the timed training steps (MPRNet's initial one).
TRAIN_LR = 2e-4


def clear_models() -> None:
    """Drops the cached model pairs and compiled models (the end of a run)."""
    _models.clear()
    _compiled.clear()


def model_pair(preset: str, device: str, overrides: Optional[dict] = None):
    """(reference MPRNet, fast MPRNet) of the preset with the same initial weights, cached one
    pair at a time."""
    overrides = overrides or {}
    key = (preset, device, tuple(sorted(overrides.items())))
    if key not in _models:
        clear_models()  # one pair at a time: the deblur model is 20M parameters
        torch.manual_seed(0)
        ref = reference.MPRNet.from_preset(preset, **overrides).to(device).eval()
        ours = MPRNet.from_preset(preset, **overrides).to(device).eval()
        ours.load_state_dict(ref.state_dict())
        _models[key] = (ref, ours)
    return _models[key]


def _compiled_once(key: tuple, fn, **options):
    if key not in _compiled:
        _compiled[key] = torch.compile(fn, **options)
    return _compiled[key]


def model_impls(preset: str, device: str, overrides: Optional[dict] = None, compile_: bool = False) -> dict:
    """The end-to-end implementations, {name: (model to call, module holding its weights, the
    preset's training loss)}: "eager" (the reference model and reference.MPRNetLoss, the
    yardstick, first), "compile" (torch.compile of both; the loss without inductor's layout
    optimization, as the registry compiles the loss references), "ours" (the fast MPRNet and the fused MPRNetLoss) and "ours_compile"
    (torch.compile of the fast MPRNet; the fused loss is one op already). The two models share
    their initial weights; the compiled ones wrap the same modules."""
    ref, ours = model_pair(preset, device, overrides)
    recipe = TASK_LOSSES[preset]
    impls = {"eager": (ref, ref, reference.MPRNetLoss(**recipe))}
    if compile_:
        key = (preset, device, tuple(sorted((overrides or {}).items())))
        impls["compile"] = (_compiled_once(key + ("reference",), ref), ref,
                            _compiled_once(key + ("reference_loss",), reference.MPRNetLoss(**recipe),
                                           **spec("mprnet_loss").compile_options))
    impls["ours"] = (ours, ours, fused.MPRNetLoss(**recipe))
    if compile_:
        impls["ours_compile"] = (_compiled_once(key + ("ours",), ours), ours, fused.MPRNetLoss(**recipe))
    return impls


def autocast(device, dtype: torch.dtype):
    """bf16/fp16 autocast for a half dtype; a disabled autocast for float32."""
    half = dtype != torch.float32
    return torch.autocast(torch.device(device).type, dtype=dtype if half else torch.bfloat16, enabled=half)


def model_tolerance(device, dtype: torch.dtype) -> float:
    """Relative error an end-to-end result may show against the eager reference model. CUDA
    float32 convolutions may run in TF32 (PyTorch's default for cuDNN)."""
    return 1e-4 if torch.device(device).type == "cpu" and dtype == torch.float32 else 2e-2


def training_step(model, weights: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype,
                  lr: float = TRAIN_LR):
    """One training step of `model` (whose parameters live in `weights`) with a fresh Adam:
    (step, body, zero_grad) where step() = zero_grad() then body(), and body() = forward under
    autocast(dtype), loss, backward, Adam step; both return the loss."""
    optimizer = torch.optim.Adam(weights.parameters(), lr=lr)

    def zero_grad():
        optimizer.zero_grad(set_to_none=True)

    def body():
        with autocast(x.device, dtype):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    def step():
        zero_grad()
        return body()

    return step, body, zero_grad


def flat_grads(module: torch.nn.Module) -> torch.Tensor:
    """Every parameter's gradient in float32, flattened and joined in parameter-name order
    (the same order for the reference and the fast model, which share their names)."""
    named = sorted(module.named_parameters(remove_duplicate=False), key=lambda kv: kv[0])
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).detach().float().reshape(-1)
                      for _, p in named])


def first_step_error(result, expected) -> float:
    """Worst relative error of (loss, flat grads) of a first training step against the
    reference's."""
    return max(rel_err(result[0], expected[0]), rel_err(result[1], expected[1]))


def _mib(nbytes: Optional[int]) -> Optional[float]:
    return None if nbytes is None else round(nbytes / 2**20, 1)


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0][:100] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _free_device_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def model_row(preset: str, image: int, dtype, cfg: BenchConfig, sizes: Sizes, impls: Optional[tuple] = None) -> Row:
    """Inference of each implementation (or of those named in `impls`), checked and timed."""
    device = cfg.device
    found = model_impls(preset, device, sizes.model_overrides, cfg.compile_model)
    impls = {k: v for k, v in found.items() if impls is None or k in impls}
    x = torch.rand(1, 3, image, image, device=device, generator=torch.Generator(device=device).manual_seed(0))
    half = dtype != torch.float32
    row = Row(kind="model", name="mprnet_inference", preset=preset, shape=list(x.shape), device=device,
              dtype=("autocast " if half else "") + str(dtype).replace("torch.", ""), backend="-", mode="inference")
    tolerance = model_tolerance(device, dtype)
    reps = sizes.model_reps or sizes.reps
    notes = []
    expected = None
    with torch.no_grad(), autocast(device, dtype):
        for name, (model, weights, _) in impls.items():
            weights.eval()
            try:
                out = model(x)[0].float()
            except Exception as e:  # a compile failure or an out-of-memory is a note
                notes.append(f"{name}: {_short(e)}")
                _free_device_memory(device)
                continue
            if name == "eager":
                expected, err = out, 0.0  # the yardstick itself
            elif expected is None:
                notes.append(f"{name} not timed: no reference output to check it against")
                continue
            else:
                err = rel_err(out, expected)
            row.errors[name] = err
            if err < tolerance:
                setattr(row, f"{name}_ms", median_time(lambda: model(x), device, max(sizes.warmup - 1, 0), reps) * 1e3)
                peak = _mib(peak_memory(lambda: model(x), device))
                if peak is not None:
                    row.peak_mib[name] = peak
            else:
                notes.append(f"{name} {err:.1e} off the reference")
    row.ok = all(e < tolerance for e in row.errors.values())
    row.note = "; ".join(notes)
    return row


def local_train_size(image: int) -> int:
    """The train_size of the local-attention rows: half the image (a multiple of 8), so that
    every window is smaller than its map, as on a full-resolution photo with train_size 256."""
    return max(8, image // 2 // 8 * 8)


def local_row(preset: str, image: int, dtype, cfg: BenchConfig, sizes: Sizes) -> Row:
    """Inference with local channel attention (MPRNet.set_local_attention): the fast local model
    ("ours") against the reference local model ("eager"), and the fast global model on the
    same input (ours_global_ms: what local costs)."""
    ref, ours = model_pair(preset, cfg.device, sizes.model_overrides)
    train_size = local_train_size(image)
    try:
        ours_global = None
        x = torch.rand(1, 3, image, image, device=cfg.device, generator=torch.Generator(device=cfg.device).manual_seed(0))
        with torch.no_grad(), autocast(cfg.device, dtype):
            ours.eval()
            ours_global = median_time(lambda: ours(x), cfg.device, max(sizes.warmup - 1, 0),
                                      sizes.model_reps or sizes.reps) * 1e3
        for m in (ref, ours):
            m.set_local_attention(train_size)
        row = model_row(preset, image, dtype, cfg, sizes, impls=("eager", "ours"))
    finally:
        for m in (ref, ours):
            m.set_local_attention(None)
    row.name, row.train_size, row.ours_global_ms = "mprnet_inference_local", train_size, ours_global
    cost = f"train_size {train_size}; ours global {format_ms(ours_global)} ms"
    if row.ours_ms:
        cost += f", local costs {100 * (row.ours_ms / ours_global - 1):+.0f}%"
    row.note = "; ".join(n for n in (cost, row.note) if n)
    return row


def train_row(preset: str, batch: int, image: int, dtype, cfg: BenchConfig, sizes: Sizes) -> Row:
    """A training step (forward, MPRNetLoss, backward, Adam step) of each implementation. Each
    starts from the same weights with a fresh Adam; its first step's loss and gradients are
    checked against the eager reference's first step before any step is timed."""
    device = cfg.device
    impls = model_impls(preset, device, sizes.model_overrides, cfg.compile_model)
    ref, ours = model_pair(preset, device, sizes.model_overrides)
    initial = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 3, image, image, device=device, generator=g)
    y = torch.rand(batch, 3, image, image, device=device, generator=g)
    half = dtype != torch.float32
    row = Row(kind="model", name="mprnet_training_step", preset=preset, shape=list(x.shape), device=device,
              dtype=("autocast " if half else "") + str(dtype).replace("torch.", ""), backend="-",
              mode="training step")
    tolerance = model_tolerance(device, dtype)
    notes = []
    expected = None
    try:
        for name, (model, weights, loss_fn) in impls.items():
            weights.load_state_dict(initial)
            weights.train()
            step, body, zero_grad = training_step(model, weights, loss_fn, x, y, dtype)
            try:
                result = (step().detach().float(), flat_grads(weights))  # the first step
            except Exception as e:  # a compile failure or an out-of-memory is a note
                notes.append(f"{name}: {_short(e)}")
                weights.zero_grad(set_to_none=True)
                del step, body, zero_grad
                _free_device_memory(device)
                continue
            if name == "eager":
                expected, err = result, 0.0
            elif expected is None:
                notes.append(f"{name} not timed: no reference step to check it against")
                continue
            else:
                err = first_step_error(result, expected)
            del result
            row.errors[name] = err
            if err < tolerance:
                setattr(row, f"{name}_ms", median_time(step, device, sizes.train_warmup, sizes.train_reps) * 1e3)
                peak = _mib(peak_memory(body, device, before=zero_grad))
                if peak is not None:
                    row.peak_mib[name] = peak
            else:
                notes.append(f"{name} {err:.1e} off the reference's first step (loss and gradients)")
            zero_grad()
            del step, body, zero_grad  # and the optimizer with them
    finally:
        for m in (ref, ours):
            m.load_state_dict(initial)
            m.zero_grad(set_to_none=True)
            m.eval()
        _free_device_memory(device)
    row.ok = all(e < tolerance for e in row.errors.values())
    row.note = "; ".join(notes)
    return row


