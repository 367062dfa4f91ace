"""The fused ops lowered to the standard PyTorch ops they stand for, so that an exported file
never calls torch.ops.mprnet.*.

ONNX has no mprnet ops, and a torch.export program or TorchScript file that calls them loads
only in a process that has imported mprnet_kernels. So every exporter here first replaces each
op by its functional reference (mprnet_kernels.reference.ops) computed in the op's own
precision: the pooled MLP of ca_tail and the arithmetic of sam_gate and upsample2x_add in the
accumulation dtype (float32 for half inputs), rounded once to the op's output dtype, as the
kernels do (docs/OPS.md). The exporters then translate only standard ops, with their own
translations, which is what makes the reference MPRNet export right; nothing here writes ONNX.

Two ways in, one table (LOWERINGS):

- ``decomposition_table(core=...)`` for ``ExportedProgram.run_decompositions`` (torch.export and
  the dynamo ONNX exporter);
- ``lowered()``, a context manager under which calls of the ops run their lowering instead, for
  tracers (torch.jit.trace and the TorchScript-based ONNX exporter), which record the standard
  ops the lowering calls.

An mprnet op without a lowering (the loss ops, the backward ops) is refused by name in both.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Optional

import torch
from torch.overrides import TorchFunctionMode

from .. import ops as _ops  # noqa: F401  (registers torch.ops.mprnet.*)
from ..ops._dtypes import accumulation_dtype
from ..reference import ops as reference

__all__ = ["LOWERINGS", "UnsupportedOpError", "decomposition_table", "lowered", "mprnet_ops_in", "require_lowered"]

NAMESPACE = "mprnet"


def _to(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype)


def ca_tail(x, r, w1, b1, w2, b2):
    """mprnet::ca_tail: out in r's dtype, the MLP in the accumulation dtype."""
    acc = accumulation_dtype(x.dtype)
    out = reference.ca_tail(x.to(acc), r.to(acc), w1.to(acc), _to(b1, acc), w2.to(acc), _to(b2, acc))
    return out.to(r.dtype)


def ca_tail_forward(x, r, w1, b1, w2, b2):
    """mprnet::ca_tail_forward: ca_tail plus the pooled vectors p, h, s its backward saves (an
    inference graph drops them)."""
    acc = accumulation_dtype(x.dtype)
    hidden, c = w1.shape[0], w1.shape[1]
    p = x.to(acc).mean((2, 3))
    h = torch.relu(torch.nn.functional.linear(p, w1.reshape(hidden, c).to(acc), _to(b1, acc)))
    s = torch.sigmoid(torch.nn.functional.linear(h, w2.reshape(c, hidden).to(acc), _to(b2, acc)))
    return ca_tail(x, r, w1, b1, w2, b2), p, h, s


def sam_gate(x1, z, x):
    """mprnet::sam_gate: in the accumulation dtype, rounded once to x1's dtype."""
    acc = accumulation_dtype(x1.dtype)
    return reference.sam_gate(x1.to(acc), z.to(acc), x.to(acc)).to(x1.dtype)


def upsample2x_add(x, y):
    """mprnet::upsample2x_add: the result in promote_types(x, y), computed in its accumulation dtype."""
    out = torch.promote_types(x.dtype, y.dtype)
    acc = accumulation_dtype(out)
    return reference.upsample2x_add(x.to(acc), y.to(acc)).to(out)


def local_ca_tail(x, r, w1, b1, w2, b2, k1, k2):
    """mprnet::local_ca_tail (local attention): as ca_tail, with the k1 x k2 window's statistics."""
    acc = accumulation_dtype(x.dtype)
    out = reference.local_ca_tail(x.to(acc), r.to(acc), w1.to(acc), _to(b1, acc), w2.to(acc), _to(b2, acc),
                                  (k1, k2))
    return out.to(r.dtype)


#: Every mprnet op the models' forward calls, by overload, with its lowering.
LOWERINGS: Dict[torch._ops.OpOverload, Callable] = {
    torch.ops.mprnet.ca_tail.default: ca_tail,
    torch.ops.mprnet.ca_tail_forward.default: ca_tail_forward,
    torch.ops.mprnet.sam_gate.default: sam_gate,
    torch.ops.mprnet.upsample2x_add.default: upsample2x_add,
}
if hasattr(torch.ops.mprnet, "local_ca_tail"):  # in builds that have the op
    LOWERINGS[torch.ops.mprnet.local_ca_tail.default] = local_ca_tail


class UnsupportedOpError(RuntimeError):
    """An mprnet op that has no lowering was met while exporting."""


def _refuse(names: List[str]) -> UnsupportedOpError:
    known = ", ".join(sorted(str(op).split(".")[1] for op in LOWERINGS))
    return UnsupportedOpError(
        f"export: {', '.join(names)} {'has' if len(names) == 1 else 'have'} no lowering to standard ops, so the "
        f"model cannot be exported; the exportable mprnet ops are the inference ops {known} (the loss and "
        f"backward ops are for training)")


def _adaptive_avg_pool2d(x, output_size):
    # torch's own decomposition gives a channels_last input's (N, C, 1, 1) result its strides
    # with an in-place as_strided_, which run_decompositions rejects ("expected an entirely
    # functional graph"); the 1x1 case is a mean, any other size the core ATen op.
    if tuple(output_size) == (1, 1):
        return x.mean((-2, -1), keepdim=True)
    return torch.ops.aten._adaptive_avg_pool2d.default(x, output_size)


def decomposition_table(core: bool = True) -> dict:
    """A table for ``ExportedProgram.run_decompositions``: the mprnet lowerings, plus torch's core
    ATen decompositions when `core` (then the program holds only core ATen ops, which is what
    a file loadable without mprnet_kernels needs); without `core` the other ops stay as they are,
    for an exporter that decomposes them itself (the ONNX exporter)."""
    table = torch.export.default_decompositions() if core else {}
    for op, fn in LOWERINGS.items():
        table[op] = fn
    if core:
        table[torch.ops.aten.adaptive_avg_pool2d.default] = _adaptive_avg_pool2d
    return table


def mprnet_ops_in(graph: torch.fx.Graph) -> List[str]:
    """The mprnet ops a graph still calls, by name (sorted, each once)."""
    found = set()
    for node in graph.nodes:
        target = node.target
        if node.op == "call_function" and isinstance(target, torch._ops.OpOverload) and target.namespace == NAMESPACE:
            found.add(str(target))
    return sorted(found)


def require_lowered(graph: torch.fx.Graph) -> None:
    """UnsupportedOpError naming the mprnet ops a graph still calls after lowering, if any."""
    left = mprnet_ops_in(graph)
    if left:
        raise _refuse(left)


def _mprnet_overload(func) -> Optional[torch._ops.OpOverload]:
    if isinstance(func, torch._ops.OpOverload):
        return func if func.namespace == NAMESPACE else None
    if isinstance(func, torch._ops.OpOverloadPacket):
        if getattr(func, "_qualified_op_name", "").startswith(NAMESPACE + "::"):
            return func.default  # every mprnet op has only the default overload
    return None


class _Lowered(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = _mprnet_overload(func)
        if op is None:
            return func(*args, **kwargs)
        lowering = LOWERINGS.get(op)
        if lowering is None:
            raise _refuse([str(op)])
        return lowering(*args, **kwargs)


@contextlib.contextmanager
def lowered() -> Iterator[None]:
    """Within the block, calls of the mprnet ops run their lowerings (standard ops), so that a
    tracer records only standard ops: ``with lowered(): torch.jit.trace(model, x)`` gives a
    TorchScript file that loads without mprnet_kernels. An op without a lowering raises
    UnsupportedOpError."""
    with _Lowered():
        yield
