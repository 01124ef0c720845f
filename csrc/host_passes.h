// The functions of secant_ext._C that walk the parameters' Python objects (host_passes.cpp).
#pragma once

#include <Python.h>

namespace secant_ext {

// Terminated by a null entry; the module's method table.
extern PyMethodDef kHostPasses[];

}  // namespace secant_ext
