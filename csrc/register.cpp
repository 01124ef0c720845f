// The Python module secant_ext._C: importing it loads this library, and with it the CPU
// kernels each kernel file registers (TORCH_LIBRARY_IMPL), which the module offers as direct
// calls too (direct_calls.h). The ops' schemas are secant_ext/_op_table.py's, defined from
// Python by secant_ext._ops.load_cpp().
#include <Python.h>
#include <ATen/cpu/vec/vec.h>

#include "direct_calls.h"
#include "flat_lists.h"
#include "host_passes.h"

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "secant_ext._C",
                               "C++ CPU kernels of the secant_ext ops (torch.ops.secant_ext), "
                               "the same ops callable without the dispatcher, and the "
                               "step's passes over the parameters (secant_ext._host)",
                               -1, secant_ext::kHostPasses};
  PyObject* mod = PyModule_Create(&module);
  if (mod == nullptr) return nullptr;
  if (secant_ext::direct_calls::add_to_module(mod) < 0) {
    Py_DECREF(mod);
    return nullptr;
  }
  // The fake kernels size the stats table from this (one row per chunk).
  if (PyModule_AddIntConstant(mod, "CHUNK_NUMEL", secant_ext::kChunkNumel) < 0) {
    Py_DECREF(mod);
    return nullptr;
  }
  // The float lanes of a vector (8 on AVX2 and on the generic build): the sums' order is
  // per lane, which tests/test_cpp_ops.py replays.
  if (PyModule_AddIntConstant(mod, "FLOAT_LANES",
                              static_cast<long>(at::vec::Vectorized<float>::size())) < 0) {
    Py_DECREF(mod);
    return nullptr;
  }
  // The layout constants the kernels were compiled with; secant_ext._ops checks them
  // against secant_ext/_layout.py before the ops are used.
  for (const auto& constant : secant_ext::layout::kExported) {
    if (PyModule_AddIntConstant(mod, constant.name, static_cast<long>(constant.value)) < 0) {
      Py_DECREF(mod);
      return nullptr;
    }
  }
  return mod;
}
