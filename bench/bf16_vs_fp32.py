#!/usr/bin/env python
"""The fused A-SGD step in fp32 and in bf16, calls interleaved, wall and CPU time.

The bf16 step moves half the bytes of the fp32 one, but converts every element it loads
and stores. Where the fp32 step is bound by memory and the bf16 step partly by those
conversions, the bf16 speedup depends on how much CPU the step gets: this measures it
at 1 and 2 threads, alternating fp32 and bf16 calls so that both see the same machine.
CPU time (``time.process_time``) counts every thread of the process.

    python bench/bf16_vs_fp32.py            # 2**26 elements, one flat tensor
    python bench/bf16_vs_fp32.py --log2 24 --repeats 10
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import torch  # noqa: E402

from cases import DTYPES, bytes_moved, make_tensors  # noqa: E402
from impls import implementations, phase_call  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log2", type=int, default=26)
    p.add_argument("--repeats", type=int, default=6)
    args = p.parse_args()
    cpp = implementations(["cpp"])["cpp"]
    if isinstance(cpp, str):
        sys.exit(cpp)
    calls = {}
    for name in ("fp32", "bf16"):
        T = make_tensors("flat", 1 << args.log2, DTYPES[name])
        calls[name] = (phase_call(cpp, "step", "sgd", T, T.state("cpp"), None),
                       bytes_moved("step", "sgd", T.numel, T.dtype))
    print(f"| threads | dtype | wall ms | CPU ms | GB/s (wall) | fp32/bf16 wall |")
    print("|---:|---|---:|---:|---:|---:|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        wall = {k: [] for k in calls}
        cpu = {k: [] for k in calls}
        for fn, _ in calls.values():
            fn()  # warm
        for _ in range(args.repeats):
            for name, (fn, _) in calls.items():
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
        med = {k: statistics.median(v) for k, v in wall.items()}
        for name, (_, nbytes) in calls.items():
            ratio = f"{med['fp32'] / med['bf16']:.2f}x" if name == "bf16" else ""
            print(f"| {threads} | {name} | {med[name] * 1e3:.0f} | "
                  f"{statistics.median(cpu[name]) * 1e3:.0f} | {nbytes / med[name] / 1e9:.1f} | "
                  f"{ratio} |")


if __name__ == "__main__":
    main()
