"""Helpers shared by the tests (the comparisons themselves live in mprnet_kernels.testing,
where `mprnet-kernels verify` uses them too): seeded inputs, a forward+backward runner, the
float64 comparison of an op's outputs and gradients, NaN/Inf, determinism and error-message
checks, and the Triton loss kernels called directly."""

from typing import Callable, Optional, Sequence

import pytest
import torch

from mprnet_kernels.ops._backend import kernel
from mprnet_kernels.testing import OP_TOLERANCE, layouts, rel_err

__all__ = [
    "OP_TOLERANCE",
    "assert_deterministic_across_thread_counts",
    "assert_nonfinite_like",
    "assert_raises_mentioning",
    "assert_same_bits",
    "assert_step_close",
    "assert_half_step_close",
    "at_thread_counts",
    "ca_tail_bad_inputs",
    "ca_tail_inputs",
    "check_against_float64",
    "forward_backward",
    "grads_through",
    "layouts",
    "model_step",
    "opcheck_inputs",
    "rel_err",
    "seeded_randn",
    "triton_loss",
    "with_changes",
]


def seeded_randn(count: int, shape, dtype=torch.float64, device="cpu", seed=0) -> list:
    """`count` standard normal tensors of `shape`, drawn in float64 on the CPU from one seeded
    generator, then rounded to `dtype` and moved to `device` (so every dtype and device sees
    the same draws)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for _ in range(count)]


def forward_backward(fn: Callable, *args, which: Optional[Sequence[bool]] = None, grad=None) -> tuple:
    """(out, grad of each arg): fn on detached copies of args, those that `which` marks (all by
    default) requiring grad, then out.backward(grad). None args stay None, and so do the
    gradients of args that do not require grad."""
    which = [True] * len(args) if which is None else which
    leaves = [None if t is None else t.detach().requires_grad_(w) for t, w in zip(args, which)]
    out = fn(*leaves)
    out.backward(grad)
    return (out, *(None if t is None else t.grad for t in leaves))


def check_against_float64(fn: Callable, reference: Callable, args: Sequence[torch.Tensor], tol: float,
                          names: Sequence[str], grad=None) -> tuple:
    """fn in the inputs' dtype vs reference in float64 on the same (rounded) values: the output
    and every input gradient (named by `names`) have the dtype of args[0] and are within tol.
    Returns fn's output and gradients."""
    ours = forward_backward(fn, *args, grad=grad)
    expected = forward_backward(reference, *(t.double() for t in args), grad=None if grad is None else grad.double())
    for name, a, b in zip(names, ours, expected):
        assert a.dtype == args[0].dtype, name
        assert rel_err(a, b) < tol, (name, rel_err(a, b))
    return ours


def assert_nonfinite_like(a: torch.Tensor, b: torch.Tensor, name, tol: Optional[float] = None) -> None:
    """a has NaN and Inf (of either sign) exactly where b has them; with tol, a's finite
    elements are also within tol of b's (for a tensor of at least one dimension: a 0-dim loss
    is checked by the masks alone)."""
    assert torch.equal(torch.isnan(a), torch.isnan(b)), name
    assert torch.equal(torch.isinf(a), torch.isinf(b)), name
    if tol is not None:
        finite = torch.isfinite(b)
        if finite.any() and a.dim():
            assert rel_err(a[finite], b[finite]) < tol, name


def at_thread_counts(fn: Callable, counts: Sequence[int]) -> list:
    """[fn() under torch.set_num_threads(n) for n in counts]; the thread count is put back."""
    threads = torch.get_num_threads()
    try:
        results = []
        for n in counts:
            torch.set_num_threads(n)
            results.append(fn())
    finally:
        torch.set_num_threads(threads)
    return results


def assert_same_bits(a, b, name="") -> None:
    """a and b, tensors or (nested) sequences of them, are equal bit for bit (torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), name
    elif a is None:
        assert b is None, name
    else:
        assert len(a) == len(b), name
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_bits(x, y, f"{name}[{i}]")


def assert_deterministic_across_thread_counts(fn: Callable, counts: Sequence[int]) -> None:
    """fn() gives the same bits at each thread count of `counts` (repeat one to check run to
    run as well)."""
    first, *others = at_thread_counts(fn, counts)
    for other in others:
        assert_same_bits(other, first)


def assert_raises_mentioning(error, words: Sequence[str], fn: Callable, *args) -> None:
    """fn(*args) raises `error` with every word in its message."""
    with pytest.raises(error) as info:
        fn(*args)
    message = str(info.value)
    for word in words:
        assert word in message, message


def opcheck_inputs(inputs: Callable) -> list:
    """Makers of the input sets every elementwise op's opcheck test runs, from the test file's
    inputs(shape): float64, float32, channels_last float32, strided float64 and bfloat16."""
    return [
        lambda: inputs((2, 3, 5, 7)),
        lambda: [t.float() for t in inputs((1, 8, 4, 4))],
        lambda: [layouts(t.float())["channels_last"] for t in inputs((2, 6, 3, 5))],
        lambda: [layouts(t)["strided"] for t in inputs((2, 3, 2, 5))],
        lambda: [t.bfloat16() for t in inputs((3, 2, 4, 4))],
    ]


def triton_loss(schema: str, x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> tuple:
    """The Triton kernel of the loss op `schema` called directly (under TRITON_INTERPRET=1 on a
    CPU machine): (loss, dL/dx). The kernel's gradient is that of the sum, so dL/dx is it over
    numel."""
    loss, grad = kernel(schema, "triton")(x, y, eps, True)
    return loss, grad / x.numel()


def grads_through(param: torch.Tensor, loss: torch.Tensor, expected: torch.Tensor) -> tuple:
    """(param's gradient through loss, param's gradient through expected), for two losses
    computed from one graph (loss's backward keeps it for expected's)."""
    loss.backward(retain_graph=True)
    ours = param.grad.clone()
    param.grad = None
    expected.backward()
    return ours, param.grad


def model_step(model, loss_fn, x: torch.Tensor, y: torch.Tensor, autocast_dtype=None) -> tuple:
    """One forward (under autocast to autocast_dtype when given), loss and backward of a model:
    (outputs, loss, input gradient, {parameter name: gradient})."""
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        outs = model(x)
        loss = loss_fn(outs, y)
    loss.backward()
    # A torch.compile'd module names its parameters "_orig_mod.<name>".
    return outs, loss, x.grad, {k.replace("_orig_mod.", ""): p.grad.clone() for k, p in model.named_parameters()}


def _flat(grads: dict) -> torch.Tensor:
    return torch.cat([grads[k].detach().double().cpu().reshape(-1) for k in sorted(grads)])


def assert_step_close(ours: tuple, expected: tuple, tol: float) -> None:
    """Two model_step results agree within tol: every output, the loss, the input gradient and
    each parameter gradient."""
    (out, loss, gx, gp), (ref_out, ref_loss, ref_gx, ref_gp) = ours, expected
    for i, (a, b) in enumerate(zip(out, ref_out)):
        assert rel_err(a.float(), b.float()) < tol, f"output {i}"
    assert rel_err(loss.float(), ref_loss.float()) < tol, "loss"
    assert rel_err(gx.float(), ref_gx.float()) < tol, "input gradient"
    assert gp.keys() == ref_gp.keys()
    for name in ref_gp:
        assert rel_err(gp[name].float(), ref_gp[name].float()) < tol, name


def assert_half_step_close(ours: tuple, reference_half: tuple, expected: tuple, tol: float = 2e-2) -> None:
    """A model_step under bf16/fp16 autocast against the float64 step `expected`: the outputs,
    the loss and all parameter gradients taken together within tol, and the input gradient
    within tol or 1.5x the error of the reference model's own autocast step (`reference_half`),
    whichever is larger. Why not each gradient alone: the reference itself, in autocast, is
    2.7e-2 off float64 in its input gradient and up to 6e-2 in single small weight gradients
    (1x1 convs of a channel attention, the PReLU's scalar), bf16 rounding in long sums, while
    all its parameter gradients together are 0.7e-2 off."""
    (out, loss, gx, gp), (_, _, ref_gx, _), (e_out, e_loss, e_gx, e_gp) = ours, reference_half, expected
    for i, (a, b) in enumerate(zip(out, e_out)):
        assert rel_err(a.float(), b) < tol, f"output {i}"
    assert rel_err(loss.float(), e_loss) < tol, "loss"
    assert gp.keys() == e_gp.keys()
    assert rel_err(_flat(gp), _flat(e_gp)) < tol, "parameter gradients"
    allowed = max(tol, 1.5 * rel_err(ref_gx.float(), e_gx))
    assert rel_err(gx.float(), e_gx) < allowed, "input gradient"


# ---------------------------------------------------------------------------------------------
# The channel-attention tails (ca_tail, local_ca_tail): one argument list, one set of inputs.

CA_TAIL_ARGS = ("x", "r", "w1", "b1", "w2", "b2")


def ca_tail_inputs(n, c, h, w, hidden, dtype=torch.float64, bias=True, seed=0, device="cpu",
                   conv_weights=True) -> tuple:
    """([x, r, w1, b1, w2, b2], a gradient for out), rounded to `dtype` once (so the float64
    reference sees exactly the values the op sees). Weights are scaled like a trained layer's,
    so the gate is neither saturated nor flat; conv_weights gives w1, w2 the (.., 1, 1) shape of
    the CALayer's convolutions."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)

    wshape = (1, 1) if conv_weights else ()
    x, r = randn(n, c, h, w), randn(n, c, h, w)
    w1 = randn(hidden, c, *wshape, scale=2.0 / c ** 0.5)
    w2 = randn(c, hidden, *wshape, scale=2.0 / hidden ** 0.5)
    b1, b2 = (randn(hidden, scale=0.5), randn(c, scale=0.5)) if bias else (None, None)
    return [x, r, w1, b1, w2, b2], randn(n, c, h, w)


def with_changes(args: Sequence, **changes) -> list:
    """A copy of the ca_tail argument list `args` with each named argument replaced: by
    value(arg) where the value is callable, else by the value itself."""
    out = list(args)
    for name, value in changes.items():
        i = CA_TAIL_ARGS.index(name)
        out[i] = value(out[i]) if callable(value) else value
    return out


def ca_tail_bad_inputs(n: int, c: int, h: int, w: int) -> list:
    """(changes for with_changes, error type, words its message must hold) for the argument
    errors ca_tail and local_ca_tail share, on inputs of ca_tail_inputs(n, c, h, w, 4)."""
    return [
        (dict(x=lambda t: t[0]), ValueError, ["x must be a 4-D (N, C, H, W) tensor"]),
        (dict(x=lambda t: t.int()), TypeError, ["x must be float64, float32, float16 or bfloat16"]),
        (dict(r=lambda t: t[:, :3]), ValueError, [f"r must have shape [{n}, {c}, {h}, {w}] like x"]),
        (dict(r=lambda t: t.float()), TypeError, ["r must have dtype", "like x"]),
        (dict(w1=lambda t: t[:, :8]), ValueError, [f"w1 must have shape [hidden, {c}]"]),
        (dict(w1=lambda t: t.expand(4, c, 3, 3)), ValueError, [f"w1 must have shape [hidden, {c}]"]),
        (dict(w1=lambda t: t[:0], b1=None), ValueError, ["w1", "hidden >= 1"]),
        (dict(w2=lambda t: t[:, :3]), ValueError, [f"w2 must have shape [{c}, 4] or [{c}, 4, 1, 1]"]),
        (dict(w2=lambda t: t.float()), TypeError, ["w2 must have dtype", "like w1"]),
        (dict(b1=lambda t: t[:3]), ValueError, ["b1 must have shape [4]"]),
        (dict(b2=lambda t: t[:, None]), ValueError, [f"b2 must have shape [{c}]"]),
        (dict(b2=lambda t: t.float()), TypeError, ["b2 must have dtype", "like w1"]),
    ]
