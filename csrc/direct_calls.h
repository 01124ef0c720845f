// The step's op calls on CPU tensors, made from Python without the dispatcher: functions of
// secant_ext._C with the names, arguments and results of the torch.ops.secant_ext ops
// (direct_calls.cpp says why, and when a call goes to the op instead).
//
// A kernel file registers each of its ops with `impl<&kernel>(m, "name")` in its
// TORCH_LIBRARY_IMPL block: that is the op's CPU kernel for the dispatcher and its direct call
// both. The call's parameters (names, keyword-only, defaults) are read from the op's schema as
// secant_ext/_op_table.py defines it; the kernel's C++ arguments say how each is converted.
#pragma once

#include <Python.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace secant_ext {
namespace direct_calls {

enum class Kind { kTensors, kTensor, kFloat, kInt, kBool };

constexpr int kMaxParams = 11;

// One call's converted arguments, by parameter index.
struct Values {
  std::array<std::vector<at::Tensor>, kMaxParams> lists;
  std::array<at::Tensor, kMaxParams> tensors;
  std::array<double, kMaxParams> floats{};
  std::array<int64_t, kMaxParams> ints{};
  std::array<bool, kMaxParams> bools{};
  bool any_tensor = false;  // without one the dispatcher has no device to choose a kernel by
};

// How a kernel's C++ argument type is filled from Values.
template <typename T>
struct Arg;
template <>
struct Arg<at::TensorList> {
  static constexpr Kind kind = Kind::kTensors;
  static at::TensorList get(Values& v, size_t i) { return v.lists[i]; }
};
template <>
struct Arg<const at::Tensor&> {
  static constexpr Kind kind = Kind::kTensor;
  static const at::Tensor& get(Values& v, size_t i) { return v.tensors[i]; }
};
template <>
struct Arg<double> {
  static constexpr Kind kind = Kind::kFloat;
  static double get(Values& v, size_t i) { return v.floats[i]; }
};
template <>
struct Arg<int64_t> {
  static constexpr Kind kind = Kind::kInt;
  static int64_t get(Values& v, size_t i) { return v.ints[i]; }
};
template <>
struct Arg<bool> {
  static constexpr Kind kind = Kind::kBool;
  static bool get(Values& v, size_t i) { return v.bools[i]; }
};

// A kernel called with converted arguments; an op that returns nothing gives an undefined
// tensor.
using Run = at::Tensor (*)(Values&);

template <auto kernel>
struct Binding;
template <typename R, typename... A, R (*kernel)(A...)>
struct Binding<kernel> {
  static at::Tensor run(Values& v) { return call(v, std::index_sequence_for<A...>{}); }
  template <size_t... I>
  static at::Tensor call(Values& v, std::index_sequence<I...>) {
    if constexpr (std::is_void_v<R>) {
      kernel(Arg<A>::get(v, I)...);
      return at::Tensor();
    } else {
      return kernel(Arg<A>::get(v, I)...);
    }
  }
  static std::vector<Kind> kinds() { return {Arg<A>::kind...}; }
  static constexpr bool returns_tensor = !std::is_void_v<R>;
};

// Adds the direct call of op `name` to secant_ext._C (defined in direct_calls.cpp).
void add(const char* name, Run run, std::vector<Kind> kinds, bool returns_tensor);

// Adds every registered direct call to the module; -1 with a Python error on failure.
int add_to_module(PyObject* module);

// The op's CPU kernel, registered with the dispatcher and as its direct call.
template <auto kernel>
void impl(torch::Library& m, const char* name) {
  using B = Binding<kernel>;
  m.impl(name, kernel);
  add(name, &B::run, B::kinds(), B::returns_tensor);
}

}  // namespace direct_calls
}  // namespace secant_ext
