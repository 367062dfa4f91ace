"""Loads the compiled extension, which registers the torch.ops.mprnet.* schemas and CPU kernels.

Kept in one place so that every module needing the extension gets the same clear error when
it is missing, instead of an ImportError deep inside an op file.
"""

import torch  # noqa: F401  (the extension links against libtorch; torch must load first)

try:
    from . import _C
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "mprnet_kernels._C, the compiled extension, could not be loaded "
        f"({exc}). Build it with `pip install --no-build-isolation -e .` from the repository "
        "root, against the torch you run with."
    ) from exc

__all__ = ["_C"]
