// The functions of secant_ext._C that call the step's CPU kernels without the dispatcher
// (direct_calls.cpp).
#pragma once

#include <Python.h>

namespace secant_ext {

// Terminated by a null entry; added to the module's functions.
extern PyMethodDef kDirectCalls[];

}  // namespace secant_ext
