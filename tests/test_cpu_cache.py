"""mprnet_kernels.cpu_cache: the scoped CPU buffer cache of the fast model's inference
(csrc/memory/cpu_buffer_cache.h). Blocks are reused inside a scope and across scopes, small
allocations and everything outside a scope are left alone, what a scope did not use is freed at
its end, oneDNN's raw allocations survive crossing a scope's edge either way, threads and nested
scopes share one cache, and the fast model gives bit-identical outputs with and without it."""

import gc
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn as nn

import mprnet_kernels
from mprnet_kernels import cpu_cache, reference
from mprnet_kernels._extension import _C

pytestmark = pytest.mark.skipif(not cpu_cache.cpu_cache_stats()["supported"], reason="the cache needs glibc")

BIG = 1 << 20  # float32 elements: 4 MiB, far above the 64 KiB threshold


@pytest.fixture(autouse=True)
def fresh_cache():
    cpu_cache.empty_cpu_cache()
    yield
    assert cpu_cache.cpu_cache_stats()["depth"] == 0
    cpu_cache.empty_cpu_cache()


def stats():
    return cpu_cache.cpu_cache_stats()


def test_freed_blocks_are_reused_inside_a_scope_and_not_outside():
    with cpu_cache.reuse_cpu_buffers():
        assert stats()["active"]
        a = torch.empty(BIG)
        ptr = a.data_ptr()
        del a
        before = stats()["hits"]
        b = torch.ones(BIG)  # the freed block, written as usual
        assert b.data_ptr() == ptr and stats()["hits"] == before + 1
        assert torch.equal(b, torch.ones(BIG))
        del b
    assert not stats()["active"]
    hits = stats()["hits"]
    c = torch.empty(BIG)
    assert stats()["hits"] == hits  # outside a scope the previous allocator serves
    del c


def test_small_allocations_are_not_cached():
    with cpu_cache.reuse_cpu_buffers():
        before = stats()
        small = [torch.empty(1000) for _ in range(10)]
        del small
        after = stats()
    assert (after["hits"], after["misses"], after["cached_bytes"]) == (before["hits"], before["misses"], before["cached_bytes"])


def test_a_close_size_reuses_a_block_but_a_much_smaller_one_does_not():
    with cpu_cache.reuse_cpu_buffers():
        a = torch.empty(BIG)
        ptr = a.data_ptr()
        del a
        small = torch.empty(BIG // 4)  # a quarter: would hold memory a bigger request wants
        assert small.data_ptr() != ptr
        close = torch.empty(BIG - 1000)
        assert close.data_ptr() == ptr
        del small, close


def test_blocks_alive_at_the_end_go_back_to_the_system():
    with cpu_cache.reuse_cpu_buffers():
        kept = torch.empty(BIG)
    live = stats()["live_bytes"]
    cached = stats()["cached_bytes"]
    del kept
    assert stats()["live_bytes"] == live - 4 * BIG and stats()["cached_bytes"] == cached


def test_scope_end_frees_the_blocks_it_did_not_use_and_keeps_the_rest():
    with cpu_cache.reuse_cpu_buffers():
        torch.empty(BIG)  # freed at once
    assert stats()["cached_bytes"] == 4 * BIG  # kept for the next scope
    with cpu_cache.reuse_cpu_buffers():
        torch.empty(4 * BIG)  # another size, freed at once: the first block is not taken
    assert stats()["cached_bytes"] == 16 * BIG
    assert cpu_cache.empty_cpu_cache() == 16 * BIG
    assert stats()["cached_bytes"] == 0


def test_nested_scopes_threads_and_errors_share_one_cache():
    errors = []

    def work():
        try:
            for _ in range(20):
                with cpu_cache.reuse_cpu_buffers():
                    t = torch.full((BIG,), 2.0)
                    assert float(t.sum()) == 2.0 * BIG
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with cpu_cache.reuse_cpu_buffers():
        with cpu_cache.reuse_cpu_buffers():
            assert stats()["depth"] == 2
        assert stats()["active"]
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and stats()["depth"] == 0 and not stats()["active"]
    with pytest.raises(ValueError):
        with cpu_cache.reuse_cpu_buffers():
            raise ValueError("inside")
    assert stats()["depth"] == 0
    with pytest.raises(RuntimeError, match="without a matching enter"):
        _C.cpu_cache.exit()


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_onednn_buffers_may_cross_a_scope_edge_either_way():
    """oneDNN allocates packed weights through raw_allocate of the allocator current then, and
    frees them through raw_deallocate of the one current when freed."""
    def pack(seed):
        torch.manual_seed(seed)
        conv = nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
        w = torch.ops.mkldnn._reorder_convolution_weight(conv.weight.detach(), [1, 1], [1, 1], [1, 1], 1,
                                                         [1, 64, 32, 32])
        return conv, w

    x = torch.randn(1, 64, 32, 32).to(memory_format=torch.channels_last)
    with cpu_cache.reuse_cpu_buffers():
        conv_in, packed_in = pack(0)  # allocated here, freed outside
    conv_out, packed_out = pack(1)  # allocated outside, freed here
    for conv, w in ((conv_in, packed_in), (conv_out, packed_out)):
        with torch.no_grad():
            y = torch.ops.mkldnn._convolution_pointwise(x, w, conv.bias, [1, 1], [1, 1], [1, 1], 1, "none", [], "")
            assert torch.allclose(y, conv(x), atol=1e-4)
    del packed_in, conv_in
    gc.collect()
    with cpu_cache.reuse_cpu_buffers():
        del packed_out, conv_out
        gc.collect()
        torch.empty(BIG)  # freed at once
    # Reuse after both: the cache and malloc still agree on every block.
    with cpu_cache.reuse_cpu_buffers():
        tensors = [torch.full((BIG,), float(i)) for i in range(8)]
        assert [float(t[0]) for t in tensors] == [float(i) for i in range(8)]


@pytest.mark.parametrize("autocast", [False, True])
def test_fast_model_inference_is_identical_with_and_without_the_cache(autocast):
    torch.manual_seed(0)
    ref = reference.MPRNet.from_preset("tiny").eval()
    ours = mprnet_kernels.MPRNet.from_preset("tiny").eval()
    off = mprnet_kernels.MPRNet.from_preset("tiny", rewrites={"reuse_cpu_buffers": False}).eval()
    ours.load_state_dict(ref.state_dict())
    off.load_state_dict(ref.state_dict())
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        expected = off(x)
        scopes = stats()["scopes"]
        for _ in range(2):  # the second forward runs on the first one's blocks
            hits = stats()["hits"]
            got = ours(x)
            assert all(torch.equal(a, b) for a, b in zip(got, expected))
        assert stats()["scopes"] == scopes + 2 and stats()["hits"] > hits
    scopes = stats()["scopes"]
    ours(x)  # gradients on: no scope
    assert stats()["scopes"] == scopes


def test_out_of_memory_frees_the_cached_blocks_first(tmp_path):
    """A request no cached block fits, with too little memory left for it beside them, succeeds
    once the cache gives its blocks back (the address space capped in a child process)."""
    script = tmp_path / "oom.py"
    script.write_text('''
import resource, torch
from mprnet_kernels import cpu_cache
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (1600 << 20), resource.RLIM_INFINITY))
with cpu_cache.reuse_cpu_buffers():
    a = torch.ones(800 << 18)  # 800 MiB, cached when freed
    del a
    b = torch.ones(1000 << 18)  # 1000 MiB: a is too small, and both do not fit under the cap
    assert float(b[-1]) == 1.0
print("ok", cpu_cache.cpu_cache_stats()["cached_bytes"])
''')
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["ok", "0"], done.stderr[-2000:]


def test_overlapping_scopes_keep_only_what_was_freed_since_the_last_exit():
    """Scopes of several threads may overlap for ever (a server): blocks nobody took since the
    last exit of any scope are freed then, not only when the last scope closes."""
    with cpu_cache.reuse_cpu_buffers():  # held open all along, as another thread's forward would
        for k in range(1, 6):
            with cpu_cache.reuse_cpu_buffers():
                torch.empty(k * BIG)  # a new size each time, freed at once
            assert stats()["cached_bytes"] == 4 * k * BIG


def test_the_profiler_sees_cached_allocations():
    from torch.profiler import ProfilerActivity, profile
    with cpu_cache.reuse_cpu_buffers():
        torch.empty(BIG)  # cached: the next one is a hit
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            t = torch.empty(BIG)
            del t
    usage = {e.key: e.cpu_memory_usage for e in prof.key_averages()}
    assert stats()["hits"] > 0 and usage["aten::empty"] == 4 * BIG


def test_a_child_forked_inside_a_scope_starts_without_one():
    import os
    with cpu_cache.reuse_cpu_buffers():
        torch.empty(BIG)
        pid = os.fork()
        if pid == 0:  # the child: allocation only (OpenMP after fork can hang), then _exit
            s = stats()
            torch.empty(BIG)
            ok = (s["depth"], s["active"]) == (0, False) and stats()["hits"] == s["hits"]
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
