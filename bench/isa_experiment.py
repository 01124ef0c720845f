#!/usr/bin/env python
"""Why bf16 is slow on CPU: the C++ kernels with and without ATen's AVX2 vector code.

``setup.py`` builds ``csrc/`` with ``-march=x86-64-v2`` and no ``CPU_CAPABILITY_AVX2``,
so ``at::vec::Vectorized`` falls back to its generic implementation: arrays the compiler
may or may not vectorize, and a bf16 <-> float conversion done element by element. This
script builds the same sources a second time with the AVX2 specializations
(``-mavx2 -mfma -mf16c -DCPU_CAPABILITY_AVX2``, what ATen uses for its own AVX2 kernels)
into a temporary folder, and times each phase on one thread with both builds, each in its
own process (both register the ``secant_ext`` op namespace). CPU time per call, so that
other work on a shared machine does not count.

    python bench/isa_experiment.py            # builds once (about 2 minutes), then times

Needs a CPU with AVX2 and a C++ compiler. Prints a table; measures, changes nothing.
"""
from __future__ import annotations

import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2_FLAGS = ["-O3", "-fopenmp", "-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2",
              "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]

TIMER = r"""
import json, sys, time, torch
torch.set_num_threads(1)
torch.ops.load_library(sys.argv[1])
ops, N, res = torch.ops.secant_ext, 1 << 24, {}
for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    x = (torch.randn(N) * 10).to(dt); g = (torch.randn(N) * 1e-3).to(dt)
    gp = (g.float() * 1.5).to(dt); out = torch.zeros_like(x); m = torch.zeros_like(x)
    st = torch.tensor([1.0] + [0.0] * 11, dtype=torch.float64)
    tab = ops.secant_stats([g], [gp], [], [x], [], st, 0., False, 0., False)
    ops.secant_alpha(tab, st, 0, True)
    calls = {"lookahead": lambda: ops.lookahead([x], [g], [out]),
             "secant_stats": lambda: ops.secant_stats([g], [gp], [], [x], [], st, 0., False, 0., False),
             "update sgd": lambda: ops.update([x], [g], [], tab, st, 0., False, 0., 0),
             "update sgdm": lambda: ops.update([x], [g], [m], tab, st, 0.9, False, 0., 0)}
    for phase, f in calls.items():
        f(); best = float("inf")
        for _ in range(5):
            t0 = time.process_time(); f(); best = min(best, time.process_time() - t0)
        res[f"{name} {phase}"] = best
print(json.dumps(res))
"""


def build_avx2(folder: str) -> str:
    from torch.utils.cpp_extension import load
    load(name="secant_ext_avx2", sources=sorted(glob.glob(str(ROOT / "csrc" / "*.cpp"))),
         extra_cflags=AVX2_FLAGS, extra_ldflags=["-fopenmp"], build_directory=folder,
         is_python_module=False)
    return str(Path(folder) / "secant_ext_avx2.so")


def time_library(path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", TIMER, path], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    import argparse
    p = argparse.ArgumentParser(description="C++ kernels with and without AVX2 at::vec")
    p.add_argument("--build-dir", help="keep the AVX2 build here (default: a temporary folder)")
    args = p.parse_args()
    shipped = glob.glob(str(ROOT / "secant_ext" / "_C*.so"))
    if not shipped:
        sys.exit("the extension is not built: pip install --no-build-isolation -e .")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.build_dir or tmp
        Path(folder).mkdir(parents=True, exist_ok=True)
        base = time_library(shipped[0])
        avx2 = time_library(build_avx2(folder))
    print("| phase (2^24 elements, 1 thread) | as built: CPU ms | AVX2 at::vec: CPU ms | speedup |")
    print("|---|---:|---:|---:|")
    for key in base:
        print(f"| {key} | {base[key] * 1e3:.1f} | {avx2[key] * 1e3:.1f} | "
              f"{base[key] / avx2[key]:.2f}x |")


if __name__ == "__main__":
    main()
