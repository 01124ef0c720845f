"""Compile the kernels for a GPU architecture without a GPU (Triton's ahead-of-time path),
to check on a CPU-only machine what the interpreter cannot: that every variant compiles,
and that full blocks load 16 bytes at a time.

Run as ``TRITON_INTERPRET=0 python -m secant_ext._triton._aot [--arch 90] [--all]``; prints
one JSON object per variant: ``{"kernel", "variant", "ok", "error", "loads"}`` where
``loads`` counts the global load/store instructions of the PTX by width.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import re
import sys


def variants(full: bool, dtypes=("fp32", "fp64", "bf16", "fp16"), step_size=True):
    """(kernel name, variant label, kernel, signature, constexprs) of the launches the
    launchers make, as each kernel file lists them (its ``aot_variants``)."""
    import torch

    from . import KERNEL_FILES
    torch_dtypes = [{"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16,
                     "fp16": torch.float16}[d] for d in dtypes]
    for file in KERNEL_FILES:
        module = importlib.import_module(f"{__package__}.{file}")
        for fn, label, signature, constexprs in module.aot_variants(torch_dtypes, full):
            kernel = fn.__name__.removeprefix("_").removesuffix("_kernel")
            if step_size or kernel not in ("alpha", "adam_alpha"):
                yield kernel, label, fn, signature, constexprs


def compile_variant(fn, signature: dict, constexprs: dict, arch: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {**signature, **{k: "constexpr" for k in constexprs}}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4})
    ptx = compiled.asm["ptx"]
    return dict(collections.Counter(re.findall(r"(?:ld|st)\.global(?:\.v\d)?\.b\d+", ptx)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90")
    parser.add_argument("--all", action="store_true", help="every flag combination")
    parser.add_argument("--dtypes", default="fp32,fp64,bf16,fp16")
    parser.add_argument("--no-alpha", action="store_true",
                        help="skip the step-size kernels (secant_alpha, adam_alpha)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("set TRITON_INTERPRET=0: the interpreter replaces the compiler", file=sys.stderr)
        return 2
    failed = 0
    for kernel, label, fn, signature, constexprs in variants(
            args.all, args.dtypes.split(","), not args.no_alpha):
        try:
            loads, error = compile_variant(fn, signature, constexprs, args.arch), None
        except Exception as exc:  # report every variant, then fail
            loads, error = {}, f"{type(exc).__name__}: {exc}"[:2000]
            failed += 1
        print(json.dumps(dict(kernel=kernel, variant=label, ok=error is None, error=error,
                              loads=loads)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
