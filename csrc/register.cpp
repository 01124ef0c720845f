// Schemas of the secant_ext ops, their CPU kernels, and the Python module secant_ext._C
// (importing it loads this library and so registers the ops).
#include <Python.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "direct_calls.h"
#include "flat_lists.h"
#include "host_passes.h"
#include "ops.h"

// The schemas are secant_ext/_op_table.py's (tests/test_op_table.py checks each line).
TORCH_LIBRARY(secant_ext, m) {
  m.def("lookahead(Tensor[] x, Tensor[] s, Tensor(a!)[] out) -> ()");
  m.def("lookahead_inplace(Tensor(a!)[] x, Tensor[] s, Tensor(b!)[] backup) -> ()");
  m.def("restore(Tensor(a!)[] x, Tensor[] backup) -> ()");
  m.def("average(Tensor(a!)[] avg, Tensor[] x, Tensor state) -> ()");
  m.def("secant_stats(Tensor[] s, Tensor[] g_plus, Tensor[] g, Tensor[] x, Tensor[] m, "
        "Tensor state, *, float momentum, bool nesterov, float weight_decay, int sign_mode) "
        "-> Tensor");
  m.def("secant_alpha(Tensor stats, Tensor(a!) state, *, int rule, bool safeguard, "
        "bool measure=True) -> ()");
  m.def("update(Tensor(a!)[] x, Tensor[] g, Tensor(b!)[] m, Tensor stats, Tensor state, *, "
        "float momentum, bool nesterov, float weight_decay, int sign_mode) -> ()");
  m.def("adam_stats(Tensor[] u, Tensor[] g_plus, Tensor[] s, Tensor[] g, Tensor state) "
        "-> Tensor");
  m.def("adam_alpha(Tensor stats, Tensor(a!) state, *, float beta1, float beta2, float ema, "
        "float growth, bool measure, bool record) -> ()");
  m.def("adam_update(Tensor(a!)[] x, Tensor[] g, Tensor(b!)[] m, Tensor(c!)[] v, "
        "Tensor(d!)[] u, Tensor(e!)[] avg, Tensor state, *, float beta1, float beta2, "
        "float eps, float weight_decay) -> ()");
  m.def("adam_previous_step(Tensor[] x, Tensor[] m, Tensor[] v, Tensor(a!)[] u, Tensor state, "
        "*, float eps, float weight_decay) -> ()");
}

TORCH_LIBRARY_IMPL(secant_ext, CPU, m) {
  m.impl("lookahead", &secant_ext::lookahead_cpu);
  m.impl("lookahead_inplace", &secant_ext::lookahead_inplace_cpu);
  m.impl("restore", &secant_ext::restore_cpu);
  m.impl("average", &secant_ext::average_cpu);
  m.impl("secant_stats", &secant_ext::secant_stats_cpu);
  m.impl("secant_alpha", &secant_ext::secant_alpha_cpu);
  m.impl("update", &secant_ext::update_cpu);
  m.impl("adam_stats", &secant_ext::adam_stats_cpu);
  m.impl("adam_alpha", &secant_ext::adam_alpha_cpu);
  m.impl("adam_update", &secant_ext::adam_update_cpu);
  m.impl("adam_previous_step", &secant_ext::adam_previous_step_cpu);
}

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "secant_ext._C",
                               "C++ CPU kernels of the secant_ext ops (torch.ops.secant_ext), "
                               "the same ops callable without the dispatcher, and the "
                               "step's passes over the parameters (secant_ext._host)",
                               -1, secant_ext::kHostPasses};
  PyObject* mod = PyModule_Create(&module);
  if (mod == nullptr) return nullptr;
  if (PyModule_AddFunctions(mod, secant_ext::kDirectCalls) < 0) {
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
