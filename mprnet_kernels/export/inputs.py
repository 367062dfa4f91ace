"""What every export shares: the dtype, the example input, the inputs the check runs, the dynamic
axes, and the model put in the state an export traces (eval mode, no gradients, the dtype).

Dynamic axes: batch, and height and width as multiples of 8 (MPRNet's size rule). torch.export
fixes any dimension whose example size is 1 (it would otherwise have to prove the code right
for every size, including the broadcasting case 1), so a dynamic export traces with a batch of
at least 2 (an example of batch 1 is repeated) and needs an example of height and width of at
least 16.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..reference.model import SIZE_MULTIPLE

__all__ = ["DTYPES", "DEFAULT_EXAMPLE_SIZE", "resolve_dtype", "example_input", "check_inputs", "dynamic_shapes",
           "prepared"]

#: The dtypes an export may be written in, by the CLI's names.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: (N, H, W) of the default example input (small: it only has to be traced and checked).
DEFAULT_EXAMPLE_SIZE = (2, 32, 32)


def resolve_dtype(dtype: Union[torch.dtype, str, None], model: nn.Module) -> torch.dtype:
    """The export dtype: None for the model's own, a torch.dtype, or 'fp32' / 'fp16' / 'bf16'
    (the model is checked first: every export starts here)."""
    _check_model(model)
    if dtype is None:
        dtype = _model_dtype(model)
    elif isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(DTYPES)} (or a torch.dtype), got {dtype!r}")
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype: expected torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    return dtype


def _model_dtype(model: nn.Module) -> torch.dtype:
    param = next(model.parameters(), None)
    return torch.float32 if param is None else param.dtype


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module (an MPRNet), got {type(model).__name__}")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("model: exports are traced and checked on the CPU; move the model there first (model.cpu())")


def example_input(model: nn.Module, example: Optional[torch.Tensor], dtype: torch.dtype,
                  dynamic: bool) -> torch.Tensor:
    """The input an export traces with, in `dtype`: `example`, or a seeded random image of
    DEFAULT_EXAMPLE_SIZE with the model's input channels. ValueError/TypeError naming `example`
    for one MPRNet cannot take or a dynamic export cannot trace with."""
    _check_model(model)
    if example is None:
        channels = getattr(model, "in_c", None)
        if channels is None:
            raise ValueError("example: give an input; the model does not say its input channels (in_c)")
        n, h, w = DEFAULT_EXAMPLE_SIZE
        example = torch.rand((n, channels, h, w), generator=torch.Generator().manual_seed(0))
    if not isinstance(example, torch.Tensor) or not example.is_floating_point():
        raise TypeError(f"example: expected a floating-point torch.Tensor image, got "
                        f"{example.dtype if isinstance(example, torch.Tensor) else type(example).__name__}")
    shape = tuple(example.shape)
    if example.dim() != 4 or shape[2] % SIZE_MULTIPLE or shape[3] % SIZE_MULTIPLE or 0 in shape:
        raise ValueError(f"example: expected (N, C, H, W) with H and W non-zero multiples of {SIZE_MULTIPLE}, "
                         f"got {shape}")
    if dynamic:
        if getattr(model, "local_attention", None) is not None:
            # TLC's windows are clamped to each feature map, so they follow the input size: a
            # traced ONNX graph would keep the example's (wrong, silently, at smaller sizes).
            raise ValueError("dynamic: the model has local attention (set_local_attention), whose windows depend on "
                             "the input size; export it with dynamic=False at the size it will run, or switch it "
                             "off with set_local_attention(None)")
        if shape[2] < 2 * SIZE_MULTIPLE or shape[3] < 2 * SIZE_MULTIPLE:
            raise ValueError(f"example: a dynamic export needs H and W of at least {2 * SIZE_MULTIPLE} (torch.export "
                             f"fixes a dimension whose example is a single multiple of {SIZE_MULTIPLE}), got {shape}")
        if shape[0] == 1:
            example = example.expand(2, *shape[1:])  # batch 1 would be fixed (module docstring)
    return example.detach().to(device="cpu", dtype=dtype).contiguous()


def check_inputs(example: torch.Tensor, dynamic: bool) -> List[torch.Tensor]:
    """What the check runs: the example, and for a dynamic export also an input of another
    batch, height and width (H != W), seeded."""
    if not dynamic:
        return [example]
    n, c, h, w = example.shape
    other = torch.rand((1 if n > 1 else 2, c, h + 2 * SIZE_MULTIPLE, w + SIZE_MULTIPLE),
                       generator=torch.Generator().manual_seed(1)).to(example.dtype)
    return [example, other]


def dynamic_shapes() -> Tuple[dict]:
    """torch.export's dynamic_shapes for forward(x): batch, and H and W as multiples of 8."""
    dim = torch.export.Dim
    return ({0: dim("batch", min=1), 2: SIZE_MULTIPLE * dim("height_div8", min=1),
             3: SIZE_MULTIPLE * dim("width_div8", min=1)},)


#: The names of the axes the ONNX files leave dynamic (dynamic_axes of the TorchScript exporter).
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


@contextlib.contextmanager
def prepared(model: nn.Module, dtype: torch.dtype) -> Iterator[nn.Module]:
    """The model as an export traces it: in eval mode and `dtype` (a copy when that is not its
    own dtype, so the caller's model is left as it was), under torch.no_grad(). No gradients is
    also what makes Rewrites.checkpoint_stages a no-op: the fast model checkpoints only when
    gradients are enabled."""
    _check_model(model)
    target = model if _model_dtype(model) == dtype else copy.deepcopy(model).to(dtype)
    was_training = target.training
    target.eval()
    try:
        with torch.no_grad():
            yield target
    finally:
        target.train(was_training)
