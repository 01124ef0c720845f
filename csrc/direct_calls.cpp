// The step's op calls on CPU tensors, made from Python without the dispatcher: functions of
// secant_ext._C with the names, arguments and results of the torch.ops.secant_ext ops.
//
// Why: a torch.ops call goes through the Python op object, the schema's argument parser, the
// search for __torch_function__ overrides in every list, and the boxed dispatcher (the
// autograd fallback, then the CPU kernel's unboxing): several times the cost of these calls
// for tiny tensors, on the caches a training closure leaves behind (numbers in
// docs/PERFORMANCE.md, 'The step's fixed cost'); a step makes four calls.
//
// What they keep of the op: the same kernel function, its checks and errors, the profiler
// event under the op's name, and the GIL released while the kernel runs. Whenever the
// dispatcher could do anything else, the call goes to torch.ops.secant_ext.<op> unchanged,
// with the arguments as given:
// - an argument that is not plainly what the schema asks for: a tensor subclass, a tensor
//   with other dispatch keys than a plain CPU tensor's (a conjugate or negative view, a
//   functional, meta or CUDA tensor), a number of another type, an unknown or missing
//   keyword, or no tensor at all;
// - a torch function or dispatch mode, extra dispatch keys in this thread's local set, or
//   grad mode on (where the autograd fallback may act).
#include <ATen/core/grad_mode.h>
#include <ATen/record_function.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>

#include <array>
#include <vector>

#include "direct_calls.h"
#include "ops.h"

namespace secant_ext {

namespace {

enum class Kind { kTensors, kTensor, kFloat, kInt, kBool };

struct Param {
  const char* name;
  Kind kind;
  int default_bool = -1;  // the default of an optional bool (measure=True), or -1: required
};

constexpr int kMaxParams = 11;

// An op's schema, as register.cpp defines it: `positional` leading parameters, the rest
// keyword-only.
struct Signature {
  const char* op;         // the name under torch.ops.secant_ext
  const char* qualified;  // the profiler's name of the op
  int positional;
  std::vector<Param> params;
};

// One call's converted arguments, by parameter index.
struct Values {
  std::array<std::vector<at::Tensor>, kMaxParams> lists;
  std::array<at::Tensor, kMaxParams> tensors;
  std::array<double, kMaxParams> floats{};
  std::array<int64_t, kMaxParams> ints{};
  std::array<bool, kMaxParams> bools{};
  bool any_tensor = false;  // without one the dispatcher has no device to choose a kernel by
};

// The dispatch keys of a plain dense CPU tensor.
c10::DispatchKeySet plain_cpu_keys() {
  static const c10::DispatchKeySet keys = at::empty({0}).key_set();
  return keys;
}

bool plain_tensor(PyObject* obj, at::Tensor& out) {
  if (!THPVariable_CheckExact(obj)) return false;  // Tensor or Parameter, no subclass
  const at::Tensor& t = THPVariable_Unpack(obj);
  if (!t.defined() || t.key_set() != plain_cpu_keys()) return false;
  out = t;
  return true;
}

bool plain_tensors(PyObject* obj, std::vector<at::Tensor>& out) {
  if (!PyList_CheckExact(obj) && !PyTuple_CheckExact(obj)) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
  PyObject** items = PySequence_Fast_ITEMS(obj);
  out.resize(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!plain_tensor(items[i], out[static_cast<size_t>(i)])) return false;
  }
  return true;
}

bool convert(PyObject* obj, const Param& param, int j, Values& v) {
  switch (param.kind) {
    case Kind::kTensors:
      if (!plain_tensors(obj, v.lists[j])) return false;
      v.any_tensor = v.any_tensor || !v.lists[j].empty();
      return true;
    case Kind::kTensor:
      if (!plain_tensor(obj, v.tensors[j])) return false;
      v.any_tensor = true;
      return true;
    case Kind::kFloat:
      if (PyFloat_CheckExact(obj)) {
        v.floats[j] = PyFloat_AS_DOUBLE(obj);
        return true;
      }
      if (PyLong_CheckExact(obj)) {
        v.floats[j] = PyLong_AsDouble(obj);
        if (v.floats[j] == -1.0 && PyErr_Occurred()) {
          PyErr_Clear();  // (too large: torch.ops gives the error)
          return false;
        }
        return true;
      }
      return false;
    case Kind::kInt: {
      if (!PyLong_CheckExact(obj)) return false;
      int overflow = 0;
      v.ints[j] = PyLong_AsLongLongAndOverflow(obj, &overflow);
      return overflow == 0 && !(v.ints[j] == -1 && PyErr_Occurred());
    }
    case Kind::kBool:
      if (!PyBool_Check(obj)) return false;
      v.bools[j] = obj == Py_True;
      return true;
  }
  return false;
}

// The arguments of a vectorcall, converted; false when any is not as the schema asks (then no
// Python error is set, and the op itself takes the call).
bool parse(const Signature& sig, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
           Values& v) {
  const int n = static_cast<int>(sig.params.size());
  if (nargs > sig.positional) return false;
  std::array<PyObject*, kMaxParams> given{};
  for (Py_ssize_t i = 0; i < nargs; ++i) given[i] = args[i];
  const Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t k = 0; k < nkw; ++k) {
    PyObject* name = PyTuple_GET_ITEM(kwnames, k);
    int j = 0;
    while (j < n && PyUnicode_CompareWithASCIIString(name, sig.params[j].name) != 0) ++j;
    if (j == n || given[j] != nullptr) return false;
    given[j] = args[nargs + k];
  }
  for (int j = 0; j < n; ++j) {
    const Param& param = sig.params[j];
    if (given[j] == nullptr) {
      if (param.default_bool < 0) return false;
      v.bools[j] = param.default_bool != 0;
    } else if (!convert(given[j], param, j, v)) {
      return false;
    }
  }
  return v.any_tensor;  // (all lists empty: torch.ops refuses the call, as _foreach_ ops do)
}

// Nothing in this thread that the dispatcher would route the call through.
bool dispatcher_would_only_call_the_kernel() {
  return !at::GradMode::is_enabled() && !c10::impl::TorchDispatchModeTLS::any_modes_set() &&
         !at::impl::torch_function_mode_enabled() &&
         c10::impl::tls_local_dispatch_key_set().included_ == c10::default_included_set;
}

// The call, made as torch.ops.secant_ext.<op>(*args, **kwargs).
PyObject* call_op(const Signature& sig, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  THPObjectPtr torch_module(PyImport_ImportModule("torch"));
  if (!torch_module) return nullptr;
  THPObjectPtr ops(PyObject_GetAttrString(torch_module.get(), "ops"));
  if (!ops) return nullptr;
  THPObjectPtr ns(PyObject_GetAttrString(ops.get(), "secant_ext"));
  if (!ns) return nullptr;
  THPObjectPtr op(PyObject_GetAttrString(ns.get(), sig.op));
  if (!op) return nullptr;
  return PyObject_Vectorcall(op.get(), args, nargsf, kwnames);
}

// The GIL released for a scope, as torch.ops calls release it around the kernel.
class WithoutGil {
 public:
  WithoutGil() : state_(PyEval_SaveThread()) {}
  ~WithoutGil() { PyEval_RestoreThread(state_); }
  WithoutGil(const WithoutGil&) = delete;
  WithoutGil& operator=(const WithoutGil&) = delete;

 private:
  PyThreadState* state_;
};

PyObject* result(std::nullptr_t) { Py_RETURN_NONE; }
PyObject* result(at::Tensor t) { return THPVariable_Wrap(std::move(t)); }

// The vectorcall of one op: `run(values)` calls its kernel.
template <const Signature* sig, auto run>
PyObject* direct(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  HANDLE_TH_ERRORS
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  Values v;
  if (!dispatcher_would_only_call_the_kernel() || !parse(*sig, args, nargs, kwnames, v)) {
    return call_op(*sig, args, static_cast<size_t>(nargsf), kwnames);
  }
  RECORD_FUNCTION(sig->qualified, std::vector<c10::IValue>());
  auto out = [&] {
    WithoutGil released;
    return run(v);
  }();
  return result(std::move(out));
  END_HANDLE_TH_ERRORS
}

// The schemas of secant_ext/_op_table.py (tests/test_op_table.py checks each against it, and
// tests/test_direct_calls.py compares each call with torch.ops).
using K = Kind;
const Signature kLookahead{"lookahead", "secant_ext::lookahead", 3,
                           {{"x", K::kTensors}, {"s", K::kTensors}, {"out", K::kTensors}}};
const Signature kLookaheadInplace{
    "lookahead_inplace", "secant_ext::lookahead_inplace", 3,
    {{"x", K::kTensors}, {"s", K::kTensors}, {"backup", K::kTensors}}};
const Signature kRestore{"restore", "secant_ext::restore", 2,
                         {{"x", K::kTensors}, {"backup", K::kTensors}}};
const Signature kAverage{"average", "secant_ext::average", 3,
                         {{"avg", K::kTensors}, {"x", K::kTensors}, {"state", K::kTensor}}};
const Signature kSecantStats{
    "secant_stats", "secant_ext::secant_stats", 6,
    {{"s", K::kTensors}, {"g_plus", K::kTensors}, {"g", K::kTensors}, {"x", K::kTensors},
     {"m", K::kTensors}, {"state", K::kTensor}, {"momentum", K::kFloat},
     {"nesterov", K::kBool}, {"weight_decay", K::kFloat}, {"sign_mode", K::kInt}}};
const Signature kSecantAlpha{"secant_alpha", "secant_ext::secant_alpha", 2,
                             {{"stats", K::kTensor}, {"state", K::kTensor}, {"rule", K::kInt},
                              {"safeguard", K::kBool}, {"measure", K::kBool, 1}}};
const Signature kUpdate{
    "update", "secant_ext::update", 5,
    {{"x", K::kTensors}, {"g", K::kTensors}, {"m", K::kTensors}, {"stats", K::kTensor},
     {"state", K::kTensor}, {"momentum", K::kFloat}, {"nesterov", K::kBool},
     {"weight_decay", K::kFloat}, {"sign_mode", K::kInt}}};
const Signature kAdamStats{"adam_stats", "secant_ext::adam_stats", 5,
                           {{"u", K::kTensors}, {"g_plus", K::kTensors}, {"s", K::kTensors},
                            {"g", K::kTensors}, {"state", K::kTensor}}};
const Signature kAdamAlpha{
    "adam_alpha", "secant_ext::adam_alpha", 2,
    {{"stats", K::kTensor}, {"state", K::kTensor}, {"beta1", K::kFloat}, {"beta2", K::kFloat},
     {"ema", K::kFloat}, {"growth", K::kFloat}, {"measure", K::kBool}, {"record", K::kBool}}};
const Signature kAdamUpdate{
    "adam_update", "secant_ext::adam_update", 7,
    {{"x", K::kTensors}, {"g", K::kTensors}, {"m", K::kTensors}, {"v", K::kTensors},
     {"u", K::kTensors}, {"avg", K::kTensors}, {"state", K::kTensor}, {"beta1", K::kFloat},
     {"beta2", K::kFloat}, {"eps", K::kFloat}, {"weight_decay", K::kFloat}}};
const Signature kAdamPreviousStep{
    "adam_previous_step", "secant_ext::adam_previous_step", 5,
    {{"x", K::kTensors}, {"m", K::kTensors}, {"v", K::kTensors}, {"u", K::kTensors},
     {"state", K::kTensor}, {"eps", K::kFloat}, {"weight_decay", K::kFloat}}};

std::nullptr_t run_lookahead(Values& v) {
  lookahead_cpu(v.lists[0], v.lists[1], v.lists[2]);
  return nullptr;
}
std::nullptr_t run_lookahead_inplace(Values& v) {
  lookahead_inplace_cpu(v.lists[0], v.lists[1], v.lists[2]);
  return nullptr;
}
std::nullptr_t run_restore(Values& v) {
  restore_cpu(v.lists[0], v.lists[1]);
  return nullptr;
}
std::nullptr_t run_average(Values& v) {
  average_cpu(v.lists[0], v.lists[1], v.tensors[2]);
  return nullptr;
}
at::Tensor run_secant_stats(Values& v) {
  return secant_stats_cpu(v.lists[0], v.lists[1], v.lists[2], v.lists[3], v.lists[4],
                          v.tensors[5], v.floats[6], v.bools[7], v.floats[8], v.ints[9]);
}
std::nullptr_t run_secant_alpha(Values& v) {
  secant_alpha_cpu(v.tensors[0], v.tensors[1], v.ints[2], v.bools[3], v.bools[4]);
  return nullptr;
}
std::nullptr_t run_update(Values& v) {
  update_cpu(v.lists[0], v.lists[1], v.lists[2], v.tensors[3], v.tensors[4], v.floats[5],
             v.bools[6], v.floats[7], v.ints[8]);
  return nullptr;
}
at::Tensor run_adam_stats(Values& v) {
  return adam_stats_cpu(v.lists[0], v.lists[1], v.lists[2], v.lists[3], v.tensors[4]);
}
std::nullptr_t run_adam_alpha(Values& v) {
  adam_alpha_cpu(v.tensors[0], v.tensors[1], v.floats[2], v.floats[3], v.floats[4],
                 v.floats[5], v.bools[6], v.bools[7]);
  return nullptr;
}
std::nullptr_t run_adam_update(Values& v) {
  adam_update_cpu(v.lists[0], v.lists[1], v.lists[2], v.lists[3], v.lists[4], v.lists[5],
                  v.tensors[6], v.floats[7], v.floats[8], v.floats[9], v.floats[10]);
  return nullptr;
}
std::nullptr_t run_adam_previous_step(Values& v) {
  adam_previous_step_cpu(v.lists[0], v.lists[1], v.lists[2], v.lists[3], v.tensors[4],
                         v.floats[5], v.floats[6]);
  return nullptr;
}

template <const Signature* sig, auto run>
PyMethodDef entry(const char* doc) {
  return {sig->op, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&direct<sig, run>)),
          METH_FASTCALL | METH_KEYWORDS, doc};
}

}  // namespace

PyMethodDef kDirectCalls[] = {
    entry<&kLookahead, run_lookahead>("torch.ops.secant_ext.lookahead, called directly"),
    entry<&kLookaheadInplace, run_lookahead_inplace>(
        "torch.ops.secant_ext.lookahead_inplace, called directly"),
    entry<&kRestore, run_restore>("torch.ops.secant_ext.restore, called directly"),
    entry<&kAverage, run_average>("torch.ops.secant_ext.average, called directly"),
    entry<&kSecantStats, run_secant_stats>("torch.ops.secant_ext.secant_stats, called directly"),
    entry<&kSecantAlpha, run_secant_alpha>("torch.ops.secant_ext.secant_alpha, called directly"),
    entry<&kUpdate, run_update>("torch.ops.secant_ext.update, called directly"),
    entry<&kAdamStats, run_adam_stats>("torch.ops.secant_ext.adam_stats, called directly"),
    entry<&kAdamAlpha, run_adam_alpha>("torch.ops.secant_ext.adam_alpha, called directly"),
    entry<&kAdamUpdate, run_adam_update>("torch.ops.secant_ext.adam_update, called directly"),
    entry<&kAdamPreviousStep, run_adam_previous_step>(
        "torch.ops.secant_ext.adam_previous_step, called directly"),
    {nullptr, nullptr, 0, nullptr}};

}  // namespace secant_ext
