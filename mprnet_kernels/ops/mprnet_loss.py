"""mprnet::mprnet_loss, the whole MPRNet training loss over the stage outputs (OPS.md section 5).

    loss = sum_s charbonnier(c_s, y) + edge_weight * sum_s edge(c_s, y),
    c_s = clamp(outputs[s], 0, 1) when clamp, else outputs[s]

The op returns the loss and, when asked, the gradients of the *summed* terms (numel times the
gradient of the loss, as charbonnier_loss and edge_loss return them): grads[s] for each output,
masked like torch.clamp's backward when clamp, and grad_y = -(the unmasked sum over stages) for
the target. Backward is then one scale by grad_loss / numel per tensor.

Schema and CPU kernel: csrc/ops/mprnet_loss.cpp and csrc/ops/cpu/mprnet_loss_kernel.cpp (one
pass over the target for all stages and both terms, built on the edge loss's band function).
CUDA tensors run one of two backends (``set_cuda_backend("mprnet_loss", "triton" | "cuda")``,
Triton by default until a GPU benchmark says otherwise): a composition of Triton kernels, per
stage the edge loss's kernels, then one Charbonnier kernel that also adds edge_weight times the
edge gradient, applies the clamp mask and accumulates the target's gradient (see
_mprnet_loss_triton for what that costs); or the one-pass CUDA C++ kernel
csrc/ops/cuda/mprnet_loss_kernel.cu, which reads the target once for up to three stage outputs
and writes every gradient once (tile algorithm in csrc/ops/loss_tile.h).
The autograd below follows the other loss ops' (_loss_autograd.py) over a list of outputs.
"""

from typing import List

import torch

from ._backend import HAS_TRITON, cuda_cpp_kernel, kernel, register_cuda
from ._checks import check_real_inputs, checks
from ._layout import empty_output, output_memory_format
from ._loss_autograd import grad_scale, refuse_double_backward, wants_grad
from ._dtypes import accumulation_dtype
from ._reduce import split_f32

_OP = "mprnet::mprnet_loss"


def _allocate_grads(outputs, y, grad_outputs, grad_y):
    grads = [empty_output(o) if grad_outputs else o.new_empty((0,)) for o in outputs]
    return grads, (empty_output(y) if grad_y else y.new_empty((0,)))


@torch.library.register_fake(_OP)
def _fake(outputs, y, eps, edge_weight, clamp, grad_outputs, grad_y):
    check_real_inputs(checks.mprnet_loss, outputs, y)
    grads, gy = _allocate_grads(outputs, y, grad_outputs, grad_y)
    return y.new_empty(()), grads, gy


if HAS_TRITON:
    import triton

    from .charbonnier_loss import BLOCK, NUM_WARPS, charbonnier_kernel

    def _mprnet_loss_triton(outputs, y, eps, edge_weight, clamp, grad_outputs, grad_y):
        """Triton on any device it runs on (CUDA; CPU under TRITON_INTERPRET=1).

        Not one fused kernel: per stage, the edge loss's Triton kernels (on clamp(out) when
        clamp, an extra pass) give the edge term and its gradient e_s, then one pass of
        charbonnier_kernel reads out_s, y and e_s and writes grads[s] = mask (u_s + w e_s) and
        the running target gradient. The stage outputs, the target and the gradients are each
        read or written once by that last pass; the edge kernels add their own traffic.
        """
        checks.mprnet_loss(outputs, y)
        grads, gy = _allocate_grads(outputs, y, grad_outputs, grad_y)
        n = y.numel()
        acc_ty = accumulation_dtype(y.dtype)
        if n == 0:
            return y.new_full((), float("nan")), grads, gy
        # One flat layout for every buffer the Charbonnier pass indexes together: y's.
        fmt = output_memory_format(y)
        y_d = y.contiguous(memory_format=fmt)
        want_grad = grad_outputs or grad_y
        edge = edge_weight != 0
        edge_fn = kernel("edge_loss", "triton") if edge else None
        programs = triton.cdiv(n, BLOCK)
        partials = torch.empty((len(outputs), programs), dtype=acc_ty, device=y.device)
        edge_means = []
        # The target's gradient sums the stages in the working dtype, rounded once at the end;
        # for float32/float64 the output itself holds the running sum.
        gy_acc = None
        if grad_y:
            gy_acc = gy if gy.dtype == acc_ty or len(outputs) == 1 else torch.empty_like(gy, dtype=acc_ty)
        eps2_hi, eps2_lo = split_f32(float(eps) * float(eps))
        w_hi, w_lo = split_f32(float(edge_weight))
        for s, out in enumerate(outputs):
            out_d = out.contiguous(memory_format=fmt)
            e = None
            if edge:
                edge_mean, e = edge_fn(out.clamp(0, 1) if clamp else out, y, eps, want_grad)
                edge_means.append(edge_mean)
                e = e.contiguous(memory_format=fmt) if want_grad else None
            g = None
            if grad_outputs:
                same = output_memory_format(out) == fmt
                g = grads[s] if same else torch.empty_like(y_d)
            last = s == len(outputs) - 1
            charbonnier_kernel[(programs,)](
                out_d, y_d, g, partials[s], n, eps2_hi, eps2_lo, e, w_hi, w_lo,
                gy_acc if s > 0 else None, (gy if last else gy_acc) if grad_y else None,
                BLOCK=BLOCK, WRITE_GRAD=grad_outputs, CLAMP=clamp, ADDEND=e is not None,
                GY_LOAD=grad_y and s > 0, GY_STORE=grad_y, num_warps=NUM_WARPS)
            if g is not None and g is not grads[s]:
                grads[s].copy_(g)
        total = partials.sum() / n
        if edge:
            total = total + edge_weight * torch.stack(edge_means).to(acc_ty).sum()
        return total.to(y.dtype), grads, gy

else:
    _mprnet_loss_triton = None

register_cuda("mprnet_loss", "mprnet_loss", default="triton", triton=_mprnet_loss_triton,
              cuda=cuda_cpp_kernel("mprnet_loss"))


def _setup_context(ctx, inputs, output):
    outputs, y, eps, edge_weight, clamp, grad_outputs, grad_y = inputs
    _, grads, gy = output
    ctx.mark_non_differentiable(*grads, gy)
    # No zero-filled stand-ins for the unused gradients of those outputs (full-size fills).
    ctx.set_materialize_grads(False)
    ctx.numel = y.numel()
    ctx.args = (eps, edge_weight, clamp)
    ctx.n_outputs = len(outputs)
    # A direct torch.ops call may leave out a gradient that autograd needs; keep the inputs
    # then, and run the gradient pass in backward.
    missing = (not grad_outputs and any(o.requires_grad for o in outputs)) or (
        not grad_y and y.requires_grad)
    ctx.recompute = missing
    if missing:
        ctx.save_for_backward(*outputs, y)
    else:
        ctx.save_for_backward(*grads, gy)


def _backward(ctx, grad_loss, _grad_of_grads, _grad_of_grad_y):
    refuse_double_backward(_OP)
    if grad_loss is None:  # grads are not materialized: nothing flowed into the loss
        return [None] * ctx.n_outputs, None, None, None, None, None, None
    saved = ctx.saved_tensors
    if ctx.recompute:
        _, grads, gy = torch.ops.mprnet.mprnet_loss(list(saved[:-1]), saved[-1], *ctx.args, True, True)
    else:
        grads, gy = saved[:-1], saved[-1]
    needs_outputs, needs_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    scale = grad_scale(grad_loss, ctx.numel)
    grad_outputs = [g * scale if need else None for g, need in zip(grads, needs_outputs)]
    return grad_outputs, (gy * scale if needs_y else None), None, None, None, None, None


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


def mprnet_loss(outputs: List[torch.Tensor], y: torch.Tensor, eps: float = 1e-3,
                edge_weight: float = 0.05, clamp: bool = False) -> torch.Tensor:
    """sum_s charbonnier(c_s, y) + edge_weight * sum_s edge(c_s, y) over the stage outputs
    (c_s = clamp(outputs[s], 0, 1) when clamp), as a 0-dim tensor of y's dtype.

    outputs and y must be 4-D with one shape, dtype and device (see mprnet_kernels.MPRNetLoss
    for mixed dtypes and a single tensor). edge_weight=0 skips the edge term, as the reference
    does. When grad is enabled, the same pass writes the gradients that backward scales, for
    whichever of outputs and y require grad.
    """
    grad_outputs, grad_y = wants_grad(*outputs), wants_grad(y)
    return torch.ops.mprnet.mprnet_loss(list(outputs), y, eps, edge_weight, clamp, grad_outputs, grad_y)[0]
