"""Runs a model and loss on the golden float64 fixture and measures every disagreement.

The fixture (tests/data/mprnet_small_float64.pt, made by the upstream code) holds a small
configuration's state_dict, an input and target, the three stage outputs, the losses, the input
gradient and every parameter gradient of the total loss. Used by `mprnet-kernels verify
--fixture` and by the tests, for the reference model now and for the fast model later.
"""

from typing import Callable, Dict, Optional

import torch

from .testing import rel_err

FIXTURE_TOLERANCE = 1e-10


def fixture_errors(fixture, model_cls: Optional[Callable] = None, loss_module: Optional[Callable] = None,
                   device="cpu") -> Dict[str, float]:
    """Relative error of every output, loss and gradient against `fixture` (a path or the
    loaded dict). `model_cls` is called with the fixture's config (default: the reference
    MPRNet); `loss_module` builds the total loss (default: the reference MPRNetLoss)."""
    from . import reference

    if not isinstance(fixture, dict):
        fixture = torch.load(fixture, weights_only=True, map_location="cpu")
    model_cls = model_cls or reference.MPRNet
    loss_module = loss_module or reference.MPRNetLoss
    model = model_cls(**fixture["config"]).to(device=device, dtype=torch.float64)
    model.load_state_dict(fixture["state_dict"])
    x = fixture["input"].to(device).clone().requires_grad_(True)
    target = fixture["target"].to(device)
    outputs = model(x)
    char, edge = reference.CharbonnierLoss(), reference.EdgeLoss()
    total = loss_module()(outputs, target)
    total.backward()

    errors = {f"outputs[{i}]": rel_err(o, fixture["outputs"][i]) for i, o in enumerate(outputs)}
    with torch.no_grad():
        errors["loss_charbonnier"] = rel_err(sum(char(o, target) for o in outputs), fixture["loss_charbonnier"])
        errors["loss_edge"] = rel_err(sum(edge(o, target) for o in outputs), fixture["loss_edge"])
        errors["charbonnier_single"] = rel_err(char(outputs[0], target), fixture["charbonnier_single"])
        errors["edge_single"] = rel_err(edge(outputs[0], target), fixture["edge_single"])
    errors["loss_total"] = rel_err(total, fixture["loss_total"])
    errors["grad_input"] = rel_err(x.grad, fixture["grad_input"])
    params = dict(model.named_parameters())
    if set(params) != set(fixture["grad_params"]):
        missing = sorted(set(fixture["grad_params"]) ^ set(params))
        raise ValueError(f"fixture_errors: parameter names differ from the fixture's: {missing[:5]}")
    for name, grad in fixture["grad_params"].items():
        got = params[name].grad
        errors[f"grad[{name}]"] = float("inf") if got is None else rel_err(got, grad)
    return errors
