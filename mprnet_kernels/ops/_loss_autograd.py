"""Autograd shared by the loss ops (charbonnier_loss, edge_loss, mprnet_loss).

Each loss op returns the loss and, when asked, the *unscaled* gradient of the summed terms
(numel times the gradient of the mean), written in the same pass as the loss. The backward is
then one scale by grad_loss / numel; the gradient outputs themselves are not differentiable.
When a direct torch.ops call did not ask for a gradient that autograd needs, the inputs are
saved instead and the op runs again in backward with the gradient on. Double backward is not
supported.

register_pair_loss_autograd registers all of that for an op of schema
(x, y, eps, compute_grad) -> (loss, grad) with dL/dy = -dL/dx; mprnet_loss, whose inputs are a
list and a target, builds its own from the pieces below.
"""

import torch

from ._autograd import refuse_double_backward
from ._dtypes import accumulation_dtype


def wants_grad(*tensors: torch.Tensor) -> bool:
    """What a public loss function passes as compute_grad: grad mode is on and one of
    `tensors` requires grad."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def grad_scale(grad_loss: torch.Tensor, numel: int) -> torch.Tensor:
    """grad_loss / numel, the factor that turns a saved gradient of the sum into the gradient of
    the loss. In the working precision (float32 for half types, float64 for float64), not
    rounded to the gradient's dtype before the multiply (on CPU, where it is a CPU scalar), so
    the multiply rounds once; grad_loss has the loss's dtype, which is the gradient's."""
    return grad_loss.to(accumulation_dtype(grad_loss.dtype)) / numel


def register_pair_loss_autograd(op: str) -> None:
    """Registers the autograd of `op` ("namespace::name"), a loss op of schema
    (Tensor x, Tensor y, float eps, bool compute_grad) -> (Tensor loss, Tensor grad)."""
    namespace, name = op.split("::")
    packet = getattr(getattr(torch.ops, namespace), name)

    def setup_context(ctx, inputs, output):
        x, y, eps, compute_grad = inputs
        _, grad = output
        ctx.mark_non_differentiable(grad)
        # No zero-filled stand-in for the unused gradient of `grad` (a full-size fill per call).
        ctx.set_materialize_grads(False)
        ctx.numel = x.numel()
        ctx.eps = eps
        # compute_grad=False with inputs that require grad (a direct torch.ops call) still gets
        # a correct backward: x and y are kept and the gradient pass runs then.
        ctx.save_for_backward(*((grad,) if compute_grad else (x, y)))

    def backward(ctx, grad_loss, _grad_of_grad):
        refuse_double_backward(op)
        if grad_loss is None:  # grads are not materialized: nothing flowed into the loss
            return None, None, None, None
        saved = ctx.saved_tensors
        grad = saved[0] if len(saved) == 1 else packet(*saved, ctx.eps, True)[1]
        scale = grad_scale(grad_loss, ctx.numel)
        grad_x = grad * scale if ctx.needs_input_grad[0] else None
        grad_y = grad * -scale if ctx.needs_input_grad[1] else None
        return grad_x, grad_y, None, None

    torch.library.register_autograd(op, backward, setup_context=setup_context)
