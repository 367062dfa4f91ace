"""End-to-end MPRNet, per preset: inference and a training step (forward, MPRNetLoss, backward,
Adam step) of the eager reference ("eager"), torch.compile of it ("compile"), the fast MPRNet
("ours") and torch.compile of it ("ours_compile"), in float32 and under bf16 autocast, with the
peak memory of each beside its time (extra_info peak_mib; what it measures on each device is
mprnet_kernels.benchmark.MEMORY_MEASURE).

Sizes: inference batch 1 at 256x256 (and 512x512 on a GPU); training step batch 1 at 128x128 on
a CPU, batch 16 at 256x256 on a GPU.

Checks before timing (a wrong result fails the case): inference, the stage-3 output against the
eager reference's in the same precision; training, the first step's loss and every parameter's
gradient, from the same initial weights, against the eager reference's first step.
The implementations, the step and the checks are the ones `mprnet-kernels bench` uses
(mprnet_kernels.benchmark).

Compiled variants are slow to build on a CPU (minutes each): select them with `-k compile`, or
leave them out with `-k "not compile"`; one preset with e.g. `-k deblur`.

    python -m pytest bench/model/bench_mprnet.py --benchmark-only -k "deblur and not compile"
"""

import itertools

import pytest
import torch

from harness import run_benchmark
from mprnet_kernels import benchmark as mk
from mprnet_kernels.reference import PRESETS
from mprnet_kernels.testing import rel_err

IMPLS = ("eager", "compile", "ours", "ours_compile")
DTYPES = {"fp32": torch.float32, "bf16_autocast": torch.bfloat16}
INFERENCE_IMAGES = {"cpu": (256,), "cuda": (256, 512)}
TRAIN_INPUT = {"cpu": (1, 128), "cuda": (16, 256)}  # (batch, image side)

# One cached yardstick at a time (the reference's output or first step; a first step's gradients
# are the size of the weights).
_expected = {}


def _cached(key, compute):
    if key not in _expected:
        _expected.clear()
        _expected[key] = compute()
    return _expected[key]


def _params(kind):
    # Preset outermost, so each preset's pair of models is built once (benchmark.model_pair
    # keeps one pair at a time).
    out = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device, preset in itertools.product(devices, PRESETS):
        images = INFERENCE_IMAGES[device] if kind == "inference" else [TRAIN_INPUT[device][1]]
        for image, dtype, impl in itertools.product(images, DTYPES, IMPLS):
            out.append(pytest.param(device, preset, image, dtype, impl, id=f"{device}-{preset}-{image}-{dtype}-{impl}"))
    return out


def _record_memory(benchmark, device, peak):
    benchmark.extra_info["peak_mib"] = None if peak is None else round(peak / 2**20, 1)
    benchmark.extra_info["memory_measure"] = mk.MEMORY_MEASURE.get(device)


@pytest.mark.parametrize("device_name, preset, image, dtype_name, impl", _params("inference"))
def bench_inference(benchmark, device_name, preset, image, dtype_name, impl):
    dtype = DTYPES[dtype_name]
    impls = mk.model_impls(preset, device_name, compile_=impl.endswith("compile"))
    model, weights, _ = impls[impl]
    reference = impls["eager"][0]
    weights.eval()
    g = torch.Generator(device=device_name).manual_seed(0)
    x = torch.rand(1, 3, image, image, device=device_name, generator=g)
    with torch.no_grad(), mk.autocast(device_name, dtype):
        expected = _cached(("inference", device_name, preset, image, dtype_name),
                           lambda: reference(x)[0].float())
        err = rel_err(model(x)[0].float(), expected)
        assert err < mk.model_tolerance(device_name, dtype), f"{impl} is {err:.2e} off the reference"
        run_benchmark(benchmark, lambda: model(x), device_name, op="mprnet_inference", impl=impl, preset=preset,
                      dtype=dtype_name, shape=list(x.shape), rel_err=err)
        _record_memory(benchmark, device_name, mk.peak_memory(lambda: model(x), device_name))


@pytest.mark.parametrize("device_name, preset, image, dtype_name, impl", _params("training"))
def bench_training_step(benchmark, device_name, preset, image, dtype_name, impl):
    dtype = DTYPES[dtype_name]
    impls = mk.model_impls(preset, device_name, compile_=impl.endswith("compile"))
    model, weights, loss_fn = impls[impl]
    initial = {k: v.detach().clone() for k, v in weights.state_dict().items()}
    batch = TRAIN_INPUT[device_name][0]
    g = torch.Generator(device=device_name).manual_seed(0)
    x = torch.rand(batch, 3, image, image, device=device_name, generator=g)
    y = torch.rand(batch, 3, image, image, device=device_name, generator=g)

    def first_step(name):
        """The first step of implementation `name` from the initial weights: (loss, grads)."""
        m, w, loss = impls[name]
        w.load_state_dict(initial)
        w.train()
        step, _, zero_grad = mk.training_step(m, w, loss, x, y, dtype)
        try:
            return step().detach().float(), mk.flat_grads(w)
        finally:
            zero_grad()
            w.load_state_dict(initial)

    try:
        expected = _cached(("training", device_name, preset, image, dtype_name), lambda: first_step("eager"))
        err = mk.first_step_error(first_step(impl), expected)
        assert err < mk.model_tolerance(device_name, dtype), \
            f"{impl}'s first training step is {err:.2e} off the reference's (loss and gradients)"
        weights.train()
        step, body, zero_grad = mk.training_step(model, weights, loss_fn, x, y, dtype)
        run_benchmark(benchmark, step, device_name, op="mprnet_training_step", impl=impl, preset=preset,
                      dtype=dtype_name, shape=list(x.shape), first_step_rel_err=err, lr=mk.TRAIN_LR)
        _record_memory(benchmark, device_name, mk.peak_memory(body, device_name, before=zero_grad))
    finally:
        weights.load_state_dict(initial)
        weights.zero_grad(set_to_none=True)
        weights.eval()
