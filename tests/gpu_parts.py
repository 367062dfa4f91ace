"""Splits the `gpu` tests into two parts for the GPU machine's two short calls
(bench/gpu_check.sh): `core`, which holds, for each test function, every pair of parameter
values its cases combine (backend x dtype, dtype x layout, ...), so every kernel specialisation
those parameters choose runs in the first call; and `rest`, the other cases, in the second.
Tests without parameters are all in `core`."""

import itertools
from collections import defaultdict


def _pairs(params: dict) -> set:
    values = sorted((name, repr(value)) for name, value in params.items())
    if len(values) < 2:
        return {tuple(values)}
    return set(itertools.combinations(values, 2))


def core_indices(cases: list) -> set:
    """Indices of a subset of `cases` (dicts of parameter name -> value, one per test case of one
    function) that covers every pair of values that any case covers: greedy, deterministic."""
    wanted = [_pairs(c) for c in cases]
    uncovered = set().union(*wanted) if wanted else set()
    chosen = set()
    while uncovered:
        best = max(range(len(cases)), key=lambda i: (len(wanted[i] & uncovered), -i))
        chosen.add(best)
        uncovered -= wanted[best]
    return chosen


def split(items, params_of, function_of):
    """(core, rest) of `items`, grouped by `function_of(item)`, each case's parameters from
    `params_of(item)`; the order of `items` is kept."""
    groups = defaultdict(list)
    for item in items:
        groups[function_of(item)].append(item)
    core_ids = set()
    for members in groups.values():
        core_ids |= {id(members[i]) for i in core_indices([params_of(m) for m in members])}
    return [i for i in items if id(i) in core_ids], [i for i in items if id(i) not in core_ids]
