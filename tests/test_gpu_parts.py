"""The split of the gpu tests into the two calls of bench/gpu_check.sh (tests/gpu_parts.py)."""

import itertools

from gpu_parts import _pairs, core_indices, split


def test_core_covers_every_pair_of_values_of_a_grid():
    grid = [dict(backend=b, dtype=d, layout=l, shape=s) for b, d, l, s in
            itertools.product(["triton", "cuda"], ["f64", "f32", "bf16", "f16"], ["nchw", "cl"], range(6))]
    core = core_indices(grid)
    covered = set().union(*(_pairs(grid[i]) for i in core))
    assert covered == set().union(*(_pairs(c) for c in grid))
    assert 24 <= len(core) < len(grid) // 2  # at least shape x dtype (6 x 4) cases, far fewer than 96
    assert core == core_indices(grid)  # deterministic


def test_split_partitions_in_order_and_keeps_unparametrised_tests_in_core():
    items = [("f", {"dtype": d, "backend": b}) for d in "abc" for b in "xy"] + [("g", {}), ("h", {"n": 1})]
    core, rest = split(items, lambda i: i[1], lambda i: i[0])
    assert sorted(core + rest, key=items.index) == items
    assert core == sorted(core, key=items.index) and rest == sorted(rest, key=items.index)
    assert ("g", {}) in core and ("h", {"n": 1}) in core
    assert {(i[1]["dtype"], i[1]["backend"]) for i in core if i[0] == "f"} == {(d, b) for d in "abc" for b in "xy"}
