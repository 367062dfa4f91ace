"""Helpers shared by the tests (the comparisons themselves live in mprnet_kernels.testing,
where `mprnet-kernels verify` uses them too)."""

from mprnet_kernels.testing import OP_TOLERANCE, layouts, rel_err

__all__ = ["OP_TOLERANCE", "layouts", "rel_err"]
