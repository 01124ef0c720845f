"""The cases the targets compare, timed in interleaved rounds.

The main table runs one tensor group after another, minutes apart; on a shared machine
the load changes between groups (measured: the copy bandwidth moved from 16 to 27 GB/s
within one run), so a ratio of two groups says more about the load than about the code.
Here every round calls each case once, in a fixed order, so all of them see the same
machine, and the ratios are taken from medians over rounds.
"""
from __future__ import annotations

import statistics
import time
from typing import Dict

import torch

from cases import DTYPES, bytes_moved, make_tensors
from impls import copy_call, phase_call
from timing import quantile

CASES = [  # name, implementation, layout, dtype
    ("cpp flat fp32", "cpp", "flat", "fp32"),
    ("cpp model fp32", "cpp", "model", "fp32"),
    ("cpp flat bf16", "cpp", "flat", "bf16"),
    ("eager flat fp32", "eager", "flat", "fp32"),
    ("foreach flat fp32", "foreach", "flat", "fp32"),
]


def run(size: int, impls: Dict[str, object], rounds: int = 5) -> Dict[str, dict]:
    """{case: {median_s, q25_s, q75_s, bytes}} for the A-SGD step at ``2**size`` and a
    copy of the fp32 step's bytes; cases whose implementation is missing are left out."""
    tensors, calls = {}, {}
    for name, impl, layout, dtype in CASES:
        ns = impls.get(impl)
        if ns is None or isinstance(ns, str):
            continue
        key = (layout, dtype)
        if key not in tensors:
            tensors[key] = make_tensors(layout, 1 << size, DTYPES[dtype])
        T = tensors[key]
        calls[name] = (phase_call(ns, "step", "sgd", T, T.state(f"inter-{impl}"), None),
                       bytes_moved("step", "sgd", T.numel, T.dtype))
    nbytes = bytes_moved("step", "sgd", 1 << size, torch.float32)
    calls["copy"] = (copy_call(nbytes), nbytes)
    times = {name: [] for name in calls}
    for fn, _ in calls.values():
        fn()  # warm: first touches, thread pool
    for _ in range(rounds):
        for name, (fn, _) in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: dict(median_s=statistics.median(ts), q25_s=quantile(ts, 0.25),
                       q75_s=quantile(ts, 0.75), bytes=calls[name][1], rounds=rounds)
            for name, ts in times.items()}
