"""The fused ops, one file each: fake function, autograd, CUDA dispatch and public function (the
loss ops share one autograd, _loss_autograd.py). Their Triton kernels are in triton/, one module
per op; their input checks are C++'s (_checks.py).

Importing this package registers all of that with torch.ops.mprnet (the C++ library names this
module as the home of its fake functions).
"""

from ._backend import available_backends, cuda_backend, set_cuda_backend
from .ca_tail import ca_tail
from .charbonnier_loss import charbonnier_loss
from .edge_loss import edge_loss
from .local_ca_tail import local_ca_tail
from .mprnet_loss import mprnet_loss
from .sam_gate import sam_gate
from .upsample2x_add import upsample2x_add

__all__ = ["available_backends", "ca_tail", "charbonnier_loss", "cuda_backend", "edge_loss", "local_ca_tail", "mprnet_loss", "sam_gate", "set_cuda_backend", "upsample2x_add"]
