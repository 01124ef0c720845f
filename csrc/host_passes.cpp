// The per-parameter passes of a step over the parameters' Python objects (`p.grad`, `p.data`),
// as functions of the module secant_ext._C. secant_ext/_host.py has the same passes written
// in Python: they run where the extension is not built, and they are the specification these
// are tested against.
//
// Why in C++: with many small tensors a Python loop costs more than all of a step's memory
// traffic, mostly the interpreter reaching each tensor's objects (attribute lookups, the grad
// and data setters' argument checks); here a pass costs a pointer walk (numbers in
// docs/PERFORMANCE.md, 'The step's fixed cost').
//
// They take only parameters whose Python type is exactly torch.Tensor or torch.nn.Parameter:
// a subclass may override `.grad` or `.data` (`__torch_function__`), which only the Python
// passes honour (secant_ext/_host.py chooses).
#include <Python.h>

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/object_ptr.h>

#include <unordered_map>

#include "host_passes.h"

namespace {

// The items of a list or tuple argument, borrowed for the call.
class Items {
 public:
  Items(PyObject* obj, const char* what) : seq_(PySequence_Fast(obj, what)) {
    if (seq_ == nullptr) throw python_error();
  }
  ~Items() { Py_DECREF(seq_); }
  Items(const Items&) = delete;
  Items& operator=(const Items&) = delete;
  Py_ssize_t size() const { return PySequence_Fast_GET_SIZE(seq_); }
  PyObject* operator[](Py_ssize_t i) const { return PySequence_Fast_GET_ITEM(seq_, i); }

 private:
  PyObject* seq_;
};

void check_arity(const char* name, Py_ssize_t nargs, Py_ssize_t want) {
  TORCH_CHECK_TYPE(nargs == want, "secant_ext._C.", name, " takes ", want,
                   " arguments, got ", nargs);
}

void check_same_length(const char* name, const Items& a, const Items& b) {
  TORCH_CHECK_VALUE(a.size() == b.size(), "secant_ext._C.", name, ": lists of ", a.size(),
                    " and ", b.size(), " items");
}

// The two parallel list arguments of a pass (`params` and one more), checked.
struct ListPair {
  Items params, other;
  // (the comma runs the arity check before args[0] is read)
  ListPair(const char* name, PyObject* const* args, Py_ssize_t nargs, const char* other_error)
      : params((check_arity(name, nargs, 2), args[0]), "params must be a list"),
        other(args[1], other_error) {
    check_same_length(name, params, other);
  }
};

// A new list of n items, to be filled with PyList_SET_ITEM.
THPObjectPtr new_list(Py_ssize_t n) {
  THPObjectPtr list(PyList_New(n));
  if (!list) throw python_error();
  return list;
}

// A parameter: exactly a Tensor or a Parameter (see the header comment).
const at::Tensor& param(PyObject* obj, const char* name) {
  TORCH_CHECK_TYPE(THPVariable_CheckExact(obj), "secant_ext._C.", name,
                   " takes torch.Tensor or torch.nn.Parameter parameters, got ",
                   Py_TYPE(obj)->tp_name);
  return THPVariable_Unpack(obj);
}

// A tensor value (a gradient, a buffer): any Tensor.
const at::Tensor& tensor(PyObject* obj, const char* name) {
  TORCH_CHECK_TYPE(THPVariable_Check(obj), "secant_ext._C.", name, ": expected a tensor, got ",
                   Py_TYPE(obj)->tp_name);
  return THPVariable_Unpack(obj);
}

// `g` as a Python object (a new reference; None for an undefined tensor).
PyObject* wrap(const at::Tensor& g) {
  if (!g.defined()) Py_RETURN_NONE;
  return THPVariable_Wrap(g);
}

}  // namespace

// take_grads(params, ptrs) -> (grads, fits) or None
//
// Moves every `p.grad` out (leaving None) while checking that the plan these parameters were
// bucketed by still fits: every parameter has a dense gradient and still has the storage at
// `ptrs[i]` (its data_ptr() when planned). None, with `p.grad` as it was, when one does not.
// `fits`: no gradient is a view and each has its parameter's strides (then the kernels take
// them as they are).
static PyObject* take_grads(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const ListPair lists("take_grads", args, nargs, "ptrs must be a list");
  const Items &params = lists.params, &ptrs = lists.other;
  const Py_ssize_t n = params.size();
  THPObjectPtr grads = new_list(n);
  bool fits = true;
  for (Py_ssize_t i = 0; i < n; ++i) {
    const at::Tensor& p = param(params[i], "take_grads");
    void* ptr = PyLong_AsVoidPtr(ptrs[i]);
    if (ptr == nullptr && PyErr_Occurred()) throw python_error();
    at::Tensor& slot = p.mutable_grad();
    if (!slot.defined() || slot.is_sparse() || p.data_ptr() != ptr) {
      for (Py_ssize_t j = 0; j < i; ++j) {  // as they were
        THPVariable_Unpack(params[j]).mutable_grad() =
            THPVariable_Unpack(PyList_GET_ITEM(grads.get(), j));
      }
      Py_RETURN_NONE;
    }
    if (fits && (slot.is_view() || slot.strides() != p.strides())) fits = false;
    PyList_SET_ITEM(grads.get(), i, wrap(slot));
    slot = at::Tensor();
  }
  return Py_BuildValue("(OO)", grads.get(), fits ? Py_True : Py_False);
  END_HANDLE_TH_ERRORS
}

// set_data(params, targets): `p.data = target` for each.
static PyObject* set_data(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const ListPair lists("set_data", args, nargs, "targets must be a list");
  const Items &params = lists.params, &targets = lists.other;
  for (Py_ssize_t i = 0; i < params.size(); ++i) {
    param(params[i], "set_data").set_data(tensor(targets[i], "set_data"));
  }
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

// take_grads_and_set_data(params, storage) -> (grads, fits)
//
// After an evaluation at swapped storage: moves every `p.grad` out (None where a parameter
// got no gradient) and points `p.data` back at `storage[i]`, in one pass. `fits`: every
// gradient is there, is not a view and has the strides of `storage[i]`.
static PyObject* take_grads_and_set_data(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const ListPair lists("take_grads_and_set_data", args, nargs, "storage must be a list");
  const Items &params = lists.params, &storage = lists.other;
  const Py_ssize_t n = params.size();
  THPObjectPtr grads = new_list(n);
  bool fits = true;
  for (Py_ssize_t i = 0; i < n; ++i) {
    const at::Tensor& p = param(params[i], "take_grads_and_set_data");
    const at::Tensor& x = tensor(storage[i], "take_grads_and_set_data");
    at::Tensor& slot = p.mutable_grad();
    if (fits && (!slot.defined() || slot.is_view() || slot.strides() != x.strides())) {
      fits = false;
    }
    PyList_SET_ITEM(grads.get(), i, wrap(slot));
    slot = at::Tensor();
    p.set_data(x);
  }
  return Py_BuildValue("(OO)", grads.get(), fits ? Py_True : Py_False);
  END_HANDLE_TH_ERRORS
}

// put_grads(params, grads) -> versions
//
// `p.grad = g` for each (None clears it). Returns each gradient's version counter (None for
// None), by which the next step tells a gradient left here, unmodified, from a new one.
static PyObject* put_grads(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  const ListPair lists("put_grads", args, nargs, "grads must be a list");
  const Items &params = lists.params, &grads = lists.other;
  const Py_ssize_t n = params.size();
  THPObjectPtr versions = new_list(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
    const at::Tensor& p = param(params[i], "put_grads");
    PyObject* g = grads[i];
    if (g == Py_None) {
      p.mutable_grad() = at::Tensor();
      Py_INCREF(Py_None);
      PyList_SET_ITEM(versions.get(), i, Py_None);
      continue;
    }
    const at::Tensor& t = tensor(g, "put_grads");
    p.mutable_grad() = t;
    PyObject* v = PyLong_FromLongLong(t._version());
    if (v == nullptr) throw python_error();
    PyList_SET_ITEM(versions.get(), i, v);
  }
  return versions.release();
  END_HANDLE_TH_ERRORS
}

// drop_left_grads(params, left_params, left_grads, left_versions) -> foreign
//
// Before a step's closure: `p.grad = None` for each parameter whose gradient is the one the
// previous step left (`left_grads[j]` of `left_params[j] is p`, same tensor, same version),
// and the indices of the parameters holding any other gradient (earlier micro-batches'),
// which the caller sets aside.
static PyObject* drop_left_grads(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  check_arity("drop_left_grads", nargs, 4);
  Items params(args[0], "params must be a list");
  Items left_params(args[1], "left_params must be a list");
  Items left_grads(args[2], "left_grads must be a list");
  Items left_versions(args[3], "left_versions must be a list");
  check_same_length("drop_left_grads", left_params, left_grads);
  check_same_length("drop_left_grads", left_params, left_versions);
  // The ledger lists the parameters in the order of the step's buckets, usually the order of
  // `params`: walk both, and look up by identity only where they part.
  std::unordered_map<PyObject*, Py_ssize_t> index;
  Py_ssize_t next = 0;
  const Py_ssize_t n_left = left_params.size();
  THPObjectPtr foreign = new_list(0);
  for (Py_ssize_t i = 0; i < params.size(); ++i) {
    PyObject* obj = params[i];
    const at::Tensor& p = param(obj, "drop_left_grads");
    at::Tensor& slot = p.mutable_grad();
    if (!slot.defined()) continue;
    Py_ssize_t j = -1;
    if (next < n_left && left_params[next] == obj) {
      j = next++;
    } else {
      if (index.empty()) {
        for (Py_ssize_t k = 0; k < n_left; ++k) index.emplace(left_params[k], k);
      }
      auto it = index.find(obj);
      if (it != index.end()) j = it->second;
    }
    bool stale = false;
    if (j >= 0 && left_grads[j] != Py_None) {
      const at::Tensor& left = tensor(left_grads[j], "drop_left_grads");
      long long version = PyLong_AsLongLong(left_versions[j]);
      if (version == -1 && PyErr_Occurred()) throw python_error();
      stale = left.unsafeGetTensorImpl() == slot.unsafeGetTensorImpl() &&
              version == slot._version();
    }
    if (stale) {
      slot = at::Tensor();
    } else {
      THPObjectPtr k(PyLong_FromSsize_t(i));
      if (!k || PyList_Append(foreign.get(), k.get()) < 0) throw python_error();
    }
  }
  return foreign.release();
  END_HANDLE_TH_ERRORS
}

namespace secant_ext {

PyMethodDef kHostPasses[] = {
    {"take_grads", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(take_grads)),
     METH_FASTCALL, "take_grads(params, ptrs) -> (grads, fits) or None"},
    {"set_data", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(set_data)),
     METH_FASTCALL, "set_data(params, targets)"},
    {"take_grads_and_set_data",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(take_grads_and_set_data)),
     METH_FASTCALL, "take_grads_and_set_data(params, storage) -> (grads, fits)"},
    {"put_grads", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(put_grads)),
     METH_FASTCALL, "put_grads(params, grads) -> versions"},
    {"drop_left_grads",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(drop_left_grads)),
     METH_FASTCALL, "drop_left_grads(params, left_params, left_grads, left_versions) -> foreign"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace secant_ext
