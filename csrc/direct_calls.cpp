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
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/record_function.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>

#include <deque>
#include <mutex>
#include <optional>
#include <string>

#include "direct_calls.h"

namespace secant_ext {
namespace direct_calls {

namespace {

struct Param {
  std::string name;
  Kind kind;
  int default_bool = -1;  // the default of an optional bool (measure=True), or -1: required
};

// An op's parameters, as its registered schema has them: `positional` leading ones, the rest
// keyword-only.
struct Signature {
  std::string qualified;  // "secant_ext::<op>", the profiler's name of the op
  int positional = 0;
  std::vector<Param> params;
};

// One registered direct call.
struct Entry {
  const char* name;  // the op's name under torch.ops.secant_ext
  Run run;
  std::vector<Kind> kinds;  // of the kernel's arguments
  bool returns_tensor;
  std::once_flag once;
  std::optional<Signature> signature;  // read from the dispatcher on the first call
};

std::deque<Entry>& entries() {  // a deque: the entries' addresses outlive later additions
  static std::deque<Entry> all;
  return all;
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kTensors: return "Tensor[]";
    case Kind::kTensor: return "Tensor";
    case Kind::kFloat: return "float";
    case Kind::kInt: return "int";
    case Kind::kBool: return "bool";
  }
  return "?";
}

std::optional<Kind> kind_of(const c10::TypePtr& type) {
  if (type->kind() == c10::TypeKind::ListType &&
      type->expectRef<c10::ListType>().getElementType()->kind() == c10::TypeKind::TensorType) {
    return Kind::kTensors;
  }
  switch (type->kind()) {
    case c10::TypeKind::TensorType: return Kind::kTensor;
    case c10::TypeKind::FloatType: return Kind::kFloat;
    case c10::TypeKind::IntType: return Kind::kInt;
    case c10::TypeKind::BoolType: return Kind::kBool;
    default: return std::nullopt;
  }
}

// The op's signature from the schema it is registered under, checked against the kernel's
// argument kinds (the dispatcher checked the types when the kernel was registered).
Signature signature_of(const Entry& entry) {
  const std::string qualified = std::string("secant_ext::") + entry.name;
  const auto op = c10::Dispatcher::singleton().findSchema({qualified, ""});
  TORCH_CHECK(op.has_value(), qualified, " is not defined: the ops are defined by "
              "secant_ext._ops.load_cpp() (import secant_ext, then use an optimizer)");
  const auto& args = op->schema().arguments();
  TORCH_CHECK(args.size() == entry.kinds.size() && args.size() <= size_t{kMaxParams}, qualified,
              " takes ", args.size(), " arguments, its CPU kernel ", entry.kinds.size());
  Signature sig{qualified, 0, {}};
  for (size_t j = 0; j < args.size(); ++j) {
    const auto kind = kind_of(args[j].type());
    TORCH_CHECK(kind == entry.kinds[j], qualified, ": argument ", args[j].name(), " is ",
                args[j].type()->str(), " in the schema, ", kind_name(entry.kinds[j]),
                " in the CPU kernel");
    Param param{args[j].name(), *kind, -1};
    if (args[j].default_value().has_value()) {
      TORCH_CHECK(*kind == Kind::kBool, qualified, ": only a bool argument may have a default");
      param.default_bool = args[j].default_value()->toBool() ? 1 : 0;
    }
    sig.positional += args[j].kwarg_only() ? 0 : 1;
    sig.params.push_back(std::move(param));
  }
  return sig;
}

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
    while (j < n && PyUnicode_CompareWithASCIIString(name, sig.params[j].name.c_str()) != 0) {
      ++j;
    }
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
PyObject* call_op(const char* name, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  THPObjectPtr torch_module(PyImport_ImportModule("torch"));
  if (!torch_module) return nullptr;
  THPObjectPtr ops(PyObject_GetAttrString(torch_module.get(), "ops"));
  if (!ops) return nullptr;
  THPObjectPtr ns(PyObject_GetAttrString(ops.get(), "secant_ext"));
  if (!ns) return nullptr;
  THPObjectPtr op(PyObject_GetAttrString(ns.get(), name));
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

// The vectorcall of every direct call; `self` is a capsule holding the op's Entry.
PyObject* direct(PyObject* self, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  HANDLE_TH_ERRORS
  auto* entry = static_cast<Entry*>(PyCapsule_GetPointer(self, nullptr));
  if (entry == nullptr) return nullptr;
  std::call_once(entry->once, [entry] { entry->signature = signature_of(*entry); });
  const Signature& sig = *entry->signature;
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  Values v;
  if (!dispatcher_would_only_call_the_kernel() || !parse(sig, args, nargs, kwnames, v)) {
    return call_op(entry->name, args, static_cast<size_t>(nargsf), kwnames);
  }
  RECORD_FUNCTION(sig.qualified.c_str(), std::vector<c10::IValue>());
  at::Tensor out;
  {
    WithoutGil released;
    out = entry->run(v);
  }
  if (!entry->returns_tensor) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

}  // namespace

void add(const char* name, Run run, std::vector<Kind> kinds, bool returns_tensor) {
  Entry& entry = entries().emplace_back();
  entry.name = name;
  entry.run = run;
  entry.kinds = std::move(kinds);
  entry.returns_tensor = returns_tensor;
}

int add_to_module(PyObject* module) {
  static std::deque<PyMethodDef> defs;  // a function keeps a pointer to its definition
  THPObjectPtr module_name(PyObject_GetAttrString(module, "__name__"));
  if (!module_name) return -1;
  for (Entry& entry : entries()) {
    PyMethodDef& def = defs.emplace_back();
    def = {entry.name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&direct)),
           METH_FASTCALL | METH_KEYWORDS,
           "The op of this name in torch.ops.secant_ext, called without the dispatcher"};
    THPObjectPtr capsule(PyCapsule_New(&entry, nullptr, nullptr));
    if (!capsule) return -1;
    THPObjectPtr function(PyCFunction_NewEx(&def, capsule.get(), module_name.get()));
    if (!function || PyModule_AddObjectRef(module, entry.name, function.get()) < 0) return -1;
  }
  return 0;
}

}  // namespace direct_calls
}  // namespace secant_ext
