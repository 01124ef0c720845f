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
import itertools
import json
import os
import re
import sys

_PTR_TABLE = {"ptrs": "*i64", "n_tensors": "i32", "numels": "*i64", "first_chunk": "*i64",
              "chunk_tensor": "*i64"}


def _signatures(table_type: str):
    return {
        "lookahead": dict(_PTR_TABLE),
        "stats": {**_PTR_TABLE, "hyper": "*i64", "n_chunks": "i32", "span": "i32",
                  "table": table_type, "n_cols": "i32", "state": "*fp64"},
        "alpha": {"table": table_type, "n_rows": "i32", "row_stride": "i32",
                  "col_stride": "i32", "state": "*fp64"},
        "update": {**_PTR_TABLE, "hyper": "*i64", "table": table_type, "n_rows": "i32",
                   "row_stride": "i32", "col_stride": "i32", "state": "*fp64"},
        "lookahead_inplace": dict(_PTR_TABLE),
        "restore": dict(_PTR_TABLE),
        "average": {**_PTR_TABLE, "state": "*fp64"},
        "adam_stats": {**_PTR_TABLE, "n_chunks": "i32", "span": "i32", "table": table_type},
        "adam_alpha": {"table": table_type, "n_rows": "i32", "row_stride": "i32",
                       "col_stride": "i32", "state": "*fp64", "beta1": "*i64",
                       "beta2": "*i64", "ema": "*i64", "growth": "*i64"},
        "adam_update": {**_PTR_TABLE, "hyper": "*i64", "state": "*fp64"},
        "adam_previous_step": {**_PTR_TABLE, "hyper": "*i64", "state": "*fp64"},
    }


def _kernel_files():
    """The kernel files as modules, by kernel. Not ``from . import update``: the package's
    attributes ``lookahead`` and ``update`` are the launchers it re-exports, not the files."""
    files = {name: importlib.import_module(f"{__package__}.{name}")
             for name in ("lookahead", "stats", "alpha", "update")}
    for kernel in ("lookahead_inplace", "restore", "average"):  # in the lookahead file
        files[kernel] = files["lookahead"]
    adam = importlib.import_module(f"{__package__}.adam")
    for kernel in ("adam_stats", "adam_alpha", "adam_update", "adam_previous_step"):  # SecantAdam's
        files[kernel] = adam
    return files


def variants(full: bool, dtypes=("fp32", "fp64", "bf16", "fp16"), rules=True):
    """(kernel name, variant label, constexprs) of the launches the phases make."""
    import torch
    import triton.language as tl

    from .. import _layout
    from . import _common, _tables
    files = _kernel_files()
    alpha, stats, update = files["alpha"], files["stats"], files["update"]
    dtypes = [{"fp32": tl.float32, "fp64": tl.float64, "bf16": tl.bfloat16,
               "fp16": tl.float16}[d] for d in dtypes]
    base = dict(CHUNK=_tables.CHUNK, BLOCK=_common.BLOCK)
    for dt in dtypes:
        acc = tl.float64 if dt == tl.float64 else tl.float32
        yield "lookahead", f"{dt}", dict(DTYPE=dt, ACC=acc, ALIGNED=True, **base)
        bits = files["lookahead"]._BITS[{tl.float32: torch.float32, tl.float64: torch.float64,
                                         tl.bfloat16: torch.bfloat16,
                                         tl.float16: torch.float16}[dt]]
        yield "lookahead_inplace", f"{dt}", dict(DTYPE=dt, BITS=bits, ACC=acc, ALIGNED=True,
                                                 **base)
        yield "restore", f"{dt}", dict(BITS=bits, ALIGNED=True, **base)
        yield "average", f"{dt}", dict(DTYPE=dt, ACC=acc, ALIGNED=True, **base)
        flags = itertools.product([False, True], repeat=5) if full else \
            [(True, True, True, True, True), (False, False, False, False, False)]
        for has_g, sign, has_m, nesterov, has_wd in flags:
            if not sign and (has_m or nesterov or has_wd):
                continue  # the launcher only sets these for the sign variant
            yield "stats", f"{dt} g={has_g} sign={sign} m={has_m} nest={nesterov} wd={has_wd}", \
                dict(DTYPE=dt, ACC=acc, ALIGNED=True, HAS_G=has_g, SIGN=sign, HAS_M=has_m,
                     NESTEROV=nesterov, HAS_WD=has_wd, X_SLOT=2 + has_g,
                     M_SLOT=2 + has_g + has_wd, TBLOCK=stats.TBLOCK, **base)
        sign_modes = [_layout.SIGN_NONE, _layout.SIGN_SCALED, _layout.SIGN_UNSCALED]
        modes = [(m, n, w, s) for m, n, w, s in itertools.product(
            [False, True], [False, True], [False, True], sign_modes) if m or not n] if full \
            else [(True, True, True, _layout.SIGN_SCALED), (False, False, False, _layout.SIGN_NONE)]
        for has_m, nesterov, has_wd, sign_mode in modes:
            yield "update", f"{dt} m={has_m} nest={nesterov} wd={has_wd} sign={sign_mode}", \
                dict(DTYPE=dt, ACC=acc, ALIGNED=True, HAS_M=has_m, NESTEROV=nesterov,
                     HAS_WD=has_wd, SIGN_MODE=sign_mode, SIGN_NONE=_layout.SIGN_NONE,
                     SIGN_SCALED=_layout.SIGN_SCALED, RBLOCK=update.RBLOCK, **base)
        # SecantAdam's statistics (with or without a measurement, g apart or not) and update
        pairs = itertools.product([False, True], repeat=2) if full else [(True, True),
                                                                          (False, False)]
        for measure, has_g in pairs:
            s_slot = 2 if measure else 0
            yield "adam_stats", f"{dt} measure={measure} g={has_g}", \
                dict(DTYPE=dt, ACC=acc, ALIGNED=True, MEASURE=measure, HAS_G=has_g,
                     S_SLOT=s_slot, G_SLOT=s_slot + 1 if has_g else s_slot, **base)
        triples = itertools.product([False, True], repeat=3) if full else [(True, True, True),
                                                                            (False, False, False)]
        for has_wd, record, average in triples:
            yield "adam_update", f"{dt} wd={has_wd} record={record} avg={average}", \
                dict(DTYPE=dt, ACC=acc, ALIGNED=True, HAS_WD=has_wd, RECORD=record,
                     AVERAGE=average, **base)
        for has_wd in [False, True]:
            yield "adam_previous_step", f"{dt} wd={has_wd}", \
                dict(DTYPE=dt, ACC=acc, ALIGNED=True, HAS_WD=has_wd, **base)
    for rule, safeguard, measure in itertools.product(
            _layout.RULES.values(), [False, True], [True, False]) if rules else ():
        yield "alpha", f"rule={rule} safeguard={safeguard} measure={measure}", \
            dict(RULE=rule, SAFEGUARD=safeguard, MEASURE=measure, RBLOCK=alpha.RBLOCK,
                 **alpha.RULE_CODES)
    for measure, record in itertools.product([True, False], repeat=2) if rules else ():
        yield "adam_alpha", f"measure={measure} record={record}", \
            dict(MEASURE=measure, RECORD=record, RBLOCK=alpha.RBLOCK,
                 REACH=_layout.ADAM_REACH)


def compile_variant(kernel: str, constexprs: dict, arch: int) -> dict:
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(_kernel_files()[kernel], f"_{kernel}_kernel")
    f64 = constexprs.get("ACC") == tl.float64 or kernel in ("alpha", "adam_alpha")
    sig = _signatures("*fp64" if f64 else "*fp32")[kernel]
    sig.update({k: "constexpr" for k in constexprs})
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
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
    for kernel, label, constexprs in variants(args.all, args.dtypes.split(","), not args.no_alpha):
        try:
            loads, error = compile_variant(kernel, constexprs, args.arch), None
        except Exception as exc:  # report every variant, then fail
            loads, error = {}, f"{type(exc).__name__}: {exc}"[:2000]
            failed += 1
        print(json.dumps(dict(kernel=kernel, variant=label, ok=error is None, error=error,
                              loads=loads)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
