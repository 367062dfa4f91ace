"""The fast MPRNet on a CUDA device (bench/gpu_check.sh runs these; skipped elsewhere): float64
forward and every gradient against the reference on the same device, float32 and bf16 autocast
in both layouts, torch.compile (inductor, fullgraph) forward and backward, and a training step
captured in a CUDA graph and replayed. Each but the compiled one runs with the ops on Triton and
on CUDA C++ where this build has both."""

import contextlib

import pytest
import torch

from helpers import assert_half_step_close, assert_step_close, model_step, rel_err
from mprnet_kernels import MPRNetLoss, reference
from mprnet_kernels.model import MPRNet
from mprnet_kernels.ops import _backend
from mprnet_kernels.registry import op_names

pytestmark = pytest.mark.gpu

BACKENDS = ("triton", "cuda")
HALF = (torch.bfloat16, torch.float16)


@contextlib.contextmanager
def ops_on(backend):
    """Every op that has `backend` runs on it (the others on what they have)."""
    with contextlib.ExitStack() as stack:
        for op in op_names():
            if backend in _backend.available_backends(op):
                stack.enter_context(_backend.using_cuda_backend(op, backend))
        yield


@contextlib.contextmanager
def no_tf32():
    """Float32 convolutions and matmuls in float32 (PyTorch lets cuDNN use TF32 by default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _pair(dtype=torch.float32, **widths):
    widths = {"n_feat": 16, "scale_unetfeats": 8, "scale_orsnetfeats": 8, "num_cab": 1, **widths}
    torch.manual_seed(0)
    ref = reference.MPRNet(**widths).to("cuda", dtype)
    fast = MPRNet(**widths).to("cuda", dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preset", ["deblur", "denoise"])
def test_float64_outputs_and_every_gradient(backend, preset):
    """The preset's widths (num_cab 1), deblur and denoise loss recipes, batch 2, 1e-10."""
    ref, fast = _pair(torch.float64, **{**reference.PRESETS[preset], "num_cab": 1})
    recipe = {"edge_weight": 0.0, "clamp": True} if preset == "denoise" else {}
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(2, 3, 32, 40, device="cuda", dtype=torch.float64, generator=g)
    y = torch.rand(x.shape, device="cuda", dtype=torch.float64, generator=g)
    expected = model_step(ref, reference.MPRNetLoss(**recipe), x, y)
    with ops_on(backend):
        assert_step_close(model_step(fast, MPRNetLoss(**recipe), x, y), expected, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_float32_and_bf16_autocast(backend, layout):
    ref, fast = _pair()
    ref64, _ = _pair(torch.float64)
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.rand(2, 3, 64, 48, device="cuda", generator=g)
    y = torch.rand(x.shape, device="cuda", generator=g)
    expected = model_step(ref64, reference.MPRNetLoss(), x.double(), y.double())
    ref_half = {dtype: model_step(ref, reference.MPRNetLoss(), x, y, dtype) for dtype in HALF}
    with ops_on(backend), no_tf32():
        xl = x.contiguous(memory_format=layout)
        assert_step_close(model_step(fast, MPRNetLoss(), xl, y), expected, 1e-4)
        for dtype in HALF:
            assert_half_step_close(model_step(fast, MPRNetLoss(), xl, y, dtype), ref_half[dtype], expected)


def test_torch_compile_inductor_fullgraph():
    """Inductor, fullgraph, the default backends, float32 (one compile: a minute of the GPU
    check's budget; the bf16 autocast compiled model and training step are checked against the
    reference by `mprnet-kernels bench` before it times them)."""
    _, fast = _pair()
    g = torch.Generator(device="cuda").manual_seed(2)
    x = torch.rand(2, 3, 32, 32, device="cuda", generator=g)
    y = torch.rand(x.shape, device="cuda", generator=g)
    ref64, _ = _pair(torch.float64)
    expected = model_step(ref64, reference.MPRNetLoss(), x.double(), y.double())
    with no_tf32():
        torch._dynamo.reset()
        compiled = torch.compile(fast, fullgraph=True)
        assert_step_close(model_step(compiled, torch.compile(MPRNetLoss(), fullgraph=True), x, y), expected, 1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_graph_captured_training_step(backend):
    """Forward, fused loss and backward captured once at a fixed shape, replayed on new data:
    the gradients equal an eager step's on the same data (no op syncs with the host or
    allocates outside the graph's pool, or the capture fails)."""
    _, fast = _pair()
    fast.train()
    loss_fn = MPRNetLoss()
    g = torch.Generator(device="cuda").manual_seed(3)
    static_x = torch.rand(2, 3, 32, 32, device="cuda", generator=g)
    static_y = torch.rand(static_x.shape, device="cuda", generator=g)
    with ops_on(backend), no_tf32():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as capture requires
            for _ in range(3):
                fast.zero_grad(set_to_none=True)
                loss_fn(fast(static_x), static_y).backward()
        torch.cuda.current_stream().wait_stream(side)
        fast.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss = loss_fn(fast(static_x), static_y)
            static_loss.backward()
        # The graph writes the gradients it allocated during capture at every replay.
        names, params = zip(*fast.named_parameters())
        static_grads = [p.grad for p in params]
        for seed in (4, 5):
            g.manual_seed(seed)
            x = torch.rand(static_x.shape, device="cuda", generator=g)
            y = torch.rand(static_x.shape, device="cuda", generator=g)
            static_x.copy_(x)
            static_y.copy_(y)
            graph.replay()
            eager_loss = loss_fn(fast(x), y)
            eager_grads = torch.autograd.grad(eager_loss, params)  # leaves .grad (the graph's) alone
            assert rel_err(static_loss, eager_loss) < 1e-5
            for name, replayed, eager in zip(names, static_grads, eager_grads):
                assert rel_err(replayed, eager) < 1e-4, name
