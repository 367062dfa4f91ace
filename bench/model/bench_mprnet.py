"""End-to-end MPRNet (deblur preset): inference and a training step (forward, MPRNetLoss,
backward, Adam step), reference vs ours, eager and torch.compile, side by side in one run.

CPU: inference 1x3x256x256, training step 1x3x128x128, float32.
GPU: inference 1x3x256x256, training step 16x3x256x256 under bf16 autocast.
Compiled variants are slow to build on a CPU (minutes): select them with `-k compile`, or
leave them out with `-k "not compile"`.
"""

import pytest
import torch

from harness import run_benchmark
from mprnet_kernels import MPRNet, MPRNetLoss, reference
from mprnet_kernels.testing import rel_err

PRESET = "deblur"
_models = {}


def models(device):
    """The reference and the fast model with the same weights, built once per device."""
    if device.type not in _models:
        torch.manual_seed(0)
        ref = reference.MPRNet.from_preset(PRESET).to(device)
        ours = MPRNet.from_preset(PRESET).to(device)
        ours.load_state_dict(ref.state_dict())
        _models[device.type] = {"reference": ref, "ours": ours, "compiled": {}}
    return _models[device.type]


def implementation(device, impl):
    m = models(device)
    base = m["ours" if impl.startswith("ours") else "reference"]
    if not impl.endswith("compile"):
        return base
    if impl not in m["compiled"]:
        m["compiled"][impl] = torch.compile(base)
    return m["compiled"][impl]


IMPLS = ["reference", "reference_compile", "ours", "ours_compile"]


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@pytest.mark.parametrize("impl", IMPLS)
def bench_inference(benchmark, device, impl):
    model = implementation(device, impl).eval()
    x = torch.rand(1, 3, 256, 256, device=device)
    with torch.no_grad(), autocast(device):
        expected = models(device)["reference"].eval()(x)[0]
        got = model(x)[0]
        assert rel_err(got.float(), expected.float()) < (2e-2 if device.type == "cuda" else 1e-4)

        def step():
            model(x)

        run_benchmark(benchmark, step, device, op="mprnet_inference", impl=impl, preset=PRESET,
                      shape=list(x.shape))


@pytest.mark.parametrize("impl", IMPLS)
def bench_training_step(benchmark, device, impl):
    model = implementation(device, impl).train()
    batch, size = (16, 256) if device.type == "cuda" else (1, 128)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.rand_like(x)
    loss_fn = MPRNetLoss() if impl.startswith("ours") else reference.MPRNetLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-12)  # a real step, weights barely move

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    ref_loss = reference.MPRNetLoss()(models(device)["reference"](x), y)
    assert rel_err(step().detach().float(), ref_loss.detach().float()) < 2e-2
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run_benchmark(benchmark, step, device, op="mprnet_training_step", impl=impl, preset=PRESET,
                  shape=list(x.shape))
    if device.type == "cuda":
        benchmark.extra_info["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
