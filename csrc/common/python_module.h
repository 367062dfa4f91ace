// Tells the dispatcher which Python module holds the fake (meta) function of the ops a library
// fragment defines: the op's own file, mprnet_kernels/ops/<op>.py (torch insists on the exact
// module). Using an op before that module is imported then gives a message naming it instead
// of a bare "no fake impl" error.
#pragma once

#include <torch/library.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
#define MPRNET_SET_PYTHON_MODULE(m, module) (m).set_python_module(module)
#else
#define MPRNET_SET_PYTHON_MODULE(m, module) (m).impl_abstract_pystub(module)
#endif
