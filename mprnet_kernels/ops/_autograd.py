"""What every op's backward shares."""

import torch


def refuse_double_backward(op: str) -> None:
    """Raises when backward itself is being differentiated (create_graph=True): the backward
    schemas have no autograd of their own, so PyTorch would only warn and return a wrong
    second derivative."""
    if torch.is_grad_enabled():
        raise NotImplementedError(f"{op}: double backward (create_graph=True) is not supported")
