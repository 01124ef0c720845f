"""Build the C++ CPU kernels of secant_ext (``secant_ext._C``); pyproject.toml has the rest.

Set ``SECANT_EXT_NO_BUILD=1`` for a pure-Python install: everything then runs on the
eager reference (and Triton on CUDA), with one warning on first use.
Install with ``pip install --no-build-isolation -e .`` so the build uses the torch you
already have instead of downloading another.
"""
import glob
import os

from setuptools import setup


def _cpu_flags():
    """Compiler flags for the vector ISA of the C++ kernels.

    AVX2 (with FMA and F16C: ATen's AVX2 ``Vectorized``, real intrinsics) when the build
    machine has it, else portable x86-64-v2 code on ATen's generic ``Vectorized``. Measured
    on one thread at 2**22 elements: the generic build ran bf16 lookahead at 2.2 GB/s and
    fp32 secant_stats at 6.8 GB/s against a 16 GB/s copy. ``pip install -e .`` builds on
    the machine that runs it; ``SECANT_EXT_CPU=generic`` builds for any x86-64 CPU.
    ``-ffp-contract=off``: no fused multiply-adds, so every ISA rounds like the reference.
    """
    import platform
    common = ["-ffp-contract=off", "-Wno-unknown-pragmas", "-Wno-psabi"]
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return common
    generic = common + ["-march=x86-64-v2", "-mtune=generic"]
    choice = os.environ.get("SECANT_EXT_CPU", "auto")
    if choice not in ("auto", "avx2", "generic"):
        raise ValueError(f"SECANT_EXT_CPU must be auto, avx2 or generic, got {choice!r}")
    if choice == "auto":
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line.split(":", 1)[1].split() for line in f
                              if line.startswith("flags")), [])
        except OSError:
            flags = []
        choice = "avx2" if {"avx2", "fma", "f16c"} <= set(flags) else "generic"
    if choice == "generic":
        return generic
    return common + ["-mavx2", "-mfma", "-mf16c", "-mtune=generic",
                     "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]


ext_modules, cmdclass = [], {}
if os.environ.get("SECANT_EXT_NO_BUILD", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    if sources:
        ext_modules.append(CppExtension(
            name="secant_ext._C",
            sources=sources,
            extra_compile_args=["-O3", "-fopenmp", "-DAT_PARALLEL_OPENMP=1"] + _cpu_flags(),
            extra_link_args=["-fopenmp"],
            py_limited_api=False,
        ))
        cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

# The metadata, dependencies, extras and entry points are in pyproject.toml; this file adds
# the C++ extension, which builds against the installed torch.
setup(ext_modules=ext_modules, cmdclass=cmdclass)
