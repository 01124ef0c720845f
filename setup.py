"""Build secant_ext and its C++ CPU kernels (``secant_ext._C``).

Set ``SECANT_EXT_NO_BUILD=1`` for a pure-Python install: everything then runs on the
eager reference (and Triton on CUDA), with one warning on first use.
Install with ``pip install --no-build-isolation -e .`` so the build uses the torch you
already have instead of downloading another.
"""
import glob
import os

from setuptools import find_packages, setup

ext_modules, cmdclass = [], {}
if os.environ.get("SECANT_EXT_NO_BUILD", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    if sources:
        ext_modules.append(CppExtension(
            name="secant_ext._C",
            sources=sources,
            extra_compile_args=["-O3", "-fopenmp", "-march=x86-64-v2", "-mtune=generic",
                                "-DAT_PARALLEL_OPENMP=1"],
            extra_link_args=["-fopenmp"],
            py_limited_api=False,
        ))
        cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(
    name="secant_ext",
    version="0.1.0",
    description="Optimizers whose learning rate sets itself from a regularized stochastic "
                "secant equation (A-SGD, A-SGDM, A-SIGNSGD), with fused C++ and Triton kernels",
    packages=find_packages(include=["secant_ext", "secant_ext.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.6", "numpy"],
    extras_require={
        "triton": ["triton"],
        "experiments": ["scikit-learn", "tqdm", "matplotlib", "scipy"],
        "test": ["pytest", "hypothesis", "pytest-benchmark"],
    },
    entry_points={"console_scripts": ["secant-ext=secant_ext.__main__:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
