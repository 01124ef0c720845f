#!/usr/bin/env python
"""How much the C++ kernels owe to ATen's AVX2 vector code, bf16 above all.

Built for x86-64-v2 without ``CPU_CAPABILITY_AVX2``, ``at::vec::Vectorized`` falls back to
its generic implementation: arrays the compiler may or may not vectorize, and a bf16 <->
float conversion done element by element. That build ran the bf16 phases 2-4x slower
than fp32, per element; ``setup.py`` now builds the AVX2 specializations where the build
machine has AVX2 (``SECANT_EXT_CPU``). This script builds the same sources for the other
variant (``--variant generic`` by default, the one not installed here) into a temporary
folder and times each phase on one thread with the installed build and with that one,
each in its own process (both register the ``secant_ext`` op namespace). CPU time per
call, so that other work on a shared machine counts less.

    python bench/isa_experiment.py                    # builds once (minutes), then times
    python bench/isa_experiment.py --variant avx2     # where the generic build is installed

Needs a C++ compiler (and an AVX2 CPU for that variant). Measures; changes nothing.
"""
from __future__ import annotations

import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The flags of setup.py's two variants.
FLAGS = {"generic": ["-march=x86-64-v2", "-mtune=generic"],
         "avx2": ["-mavx2", "-mfma", "-mf16c", "-mtune=generic", "-DCPU_CAPABILITY=AVX2",
                  "-DCPU_CAPABILITY_AVX2"]}
COMMON = ["-O3", "-fopenmp", "-DAT_PARALLEL_OPENMP=1", "-ffp-contract=off",
          "-Wno-unknown-pragmas", "-Wno-psabi"]

TIMER = r"""
import json, sys, time, torch
torch.set_num_threads(1)
torch.ops.load_library(sys.argv[1])
ops, N, res = torch.ops.secant_ext, 1 << 24, {}
for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    x = (torch.randn(N) * 10).to(dt); g = (torch.randn(N) * 1e-3).to(dt)
    gp = (g.float() * 1.5).to(dt); out = torch.zeros_like(x); m = torch.zeros_like(x)
    st = torch.tensor([1.0] + [0.0] * 11, dtype=torch.float64)
    hyper = dict(nesterov=False, weight_decay=0., sign_mode=0)  # SIGN_NONE
    tab = ops.secant_stats([g], [gp], [], [x], [], st, momentum=0., **hyper)
    ops.secant_alpha(tab, st, rule=0, safeguard=True)  # secant
    calls = {"lookahead": lambda: ops.lookahead([x], [g], [out]),
             "secant_stats": lambda: ops.secant_stats([g], [gp], [], [x], [], st, momentum=0.,
                                                      **hyper),
             "update sgd": lambda: ops.update([x], [g], [], tab, st, momentum=0., **hyper),
             "update sgdm": lambda: ops.update([x], [g], [m], tab, st, momentum=0.9, **hyper)}
    for phase, f in calls.items():
        f(); best = float("inf")
        for _ in range(5):
            t0 = time.process_time(); f(); best = min(best, time.process_time() - t0)
        res[f"{name} {phase}"] = best
print(json.dumps(res))
"""


def build(variant: str, folder: str) -> str:
    from torch.utils.cpp_extension import load
    name = f"secant_ext_{variant}"
    load(name=name, sources=sorted(glob.glob(str(ROOT / "csrc" / "**" / "*.cpp"),
                                             recursive=True)),
         extra_cflags=COMMON + FLAGS[variant], extra_ldflags=["-fopenmp"],
         build_directory=folder, is_python_module=False)
    return str(Path(folder) / f"{name}.so")


def time_library(path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", TIMER, path], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    import argparse
    p = argparse.ArgumentParser(description="C++ kernels with and without AVX2 at::vec")
    p.add_argument("--variant", choices=list(FLAGS), default="generic",
                   help="the build to compare with the installed one (default generic)")
    p.add_argument("--build-dir", help="keep that build here (default: a temporary folder)")
    args = p.parse_args()
    shipped = glob.glob(str(ROOT / "secant_ext" / "_C*.so"))
    if not shipped:
        sys.exit("the extension is not built: pip install --no-build-isolation -e .")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.build_dir or tmp
        Path(folder).mkdir(parents=True, exist_ok=True)
        other = time_library(build(args.variant, folder))
        installed = time_library(shipped[0])
    print(f"| phase (2^24 elements, 1 thread) | installed: CPU ms | {args.variant}: CPU ms "
          "| installed speedup |")
    print("|---|---:|---:|---:|")
    for key in installed:
        print(f"| {key} | {installed[key] * 1e3:.1f} | {other[key] * 1e3:.1f} | "
              f"{other[key] / installed[key]:.2f}x |")


if __name__ == "__main__":
    main()
