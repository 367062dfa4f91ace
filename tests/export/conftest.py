"""Shared by the export tests: one set of tiny-preset weights, models of any Rewrites built on
them, the two input sizes every dynamic file is checked at, an onnxruntime comparison written
independently of mprnet_kernels.export.check, and one intra-op thread (tracing is single-threaded
Python, and on a 2-core runner the convolutions of a tiny model at 32x32 only lose time to
thread synchronisation)."""

import pytest
import torch

from mprnet_kernels.model import MPRNet, Rewrites
from mprnet_kernels.testing import rel_err

#: The example every dynamic export traces with, and a second input of another batch, H and W.
EXAMPLE_SHAPE = (2, 3, 32, 32)
OTHER_SHAPE = (1, 3, 48, 40)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_state():
    with torch.random.fork_rng():
        torch.manual_seed(20)
        return MPRNet.from_preset("tiny", rewrites=Rewrites.none()).state_dict()


@pytest.fixture(scope="session")
def make_model(tiny_state):
    """make_model(rewrites) -> the fast tiny MPRNet with those rewrites and the shared weights, in eval mode."""
    def make(rewrites=None, reference=False):
        if reference:
            from mprnet_kernels.reference import MPRNet as Reference
            model = Reference.from_preset("tiny")
        else:
            model = MPRNet.from_preset("tiny", rewrites=rewrites)
        model.load_state_dict(tiny_state)
        return model.eval()
    return make


@pytest.fixture(scope="session")
def inputs():
    g = torch.Generator().manual_seed(3)
    return [torch.rand(EXAMPLE_SHAPE, generator=g), torch.rand(OTHER_SHAPE, generator=g)]


@pytest.fixture(scope="session")
def ort_errors():
    """ort_errors(path, model, inputs) -> per input, the worst relative error of onnxruntime's
    outputs against model(x) (inputs fed in the file's dtype; the model run in its own)."""
    import onnxruntime as ort

    def errors(path, model, xs):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (feed,) = session.get_inputs()
        dtype = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}[feed.type]
        worst = []
        for x in xs:
            x = x.to(dtype)
            with torch.no_grad():
                expected = model(x.float())
            got = session.run(None, {feed.name: x.numpy()})
            assert len(got) == len(expected)
            worst.append(max(rel_err(torch.from_numpy(g).float(), e) for g, e in zip(got, expected)))
        return worst
    return errors
