#!/usr/bin/env python
"""The in-place lookahead against the swap lookahead and a copy, calls interleaved.

The optimizer's lookahead runs in one of two modes (``lookahead='swap'|'inplace'``):

    swap     lookahead(x, s, out)           out = x + s          read x, s; write out      12 bytes
    inplace  lookahead_inplace(x, s, bak)   bak = x; x = x + s   read x, s; write bak, x   16 bytes
             restore(x, bak)                x = bak              read bak; write x          8 bytes

(per element, fp32; bf16 moves half). The swap then exchanges ``p.data`` for free; the
in-place mode pays 16 + 8 = 24 bytes against 12, so 2x the swap's time is its floor.
Each kernel's bandwidth by this byte model is compared with a copy (``dst.copy_(src)``,
credited with its read and its write, as in ``bench/impls.py``) of the same bytes, timed
in the same rounds: every round calls every case once, the order rotated from round to
round, so that load drift hits all of them alike. Target: each in-place kernel at >= 70%
of the copy bandwidth.

    python bench/lookahead_inplace.py               # 2**24 and 2**26, flat and 148 tensors
    python bench/lookahead_inplace.py --quick       # 2**20 and 2**22
    python bench/lookahead_inplace.py --layouts flat --repeats 21

Prints the table, the ratios and the targets; writes JSON and CSV to ``bench/out/``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # run from a checkout without installing

import torch  # noqa: E402

from cases import DTYPES, layout_shapes  # noqa: E402
from impls import copy_call  # noqa: E402
from report import _ms, _table, write_csv  # noqa: E402
from run_bench import machine_info  # noqa: E402
from timing import quantile  # noqa: E402

from secant_ext import _backends  # noqa: E402
from secant_ext import reference as _reference  # noqa: E402

FP32_BYTES = {"swap": 12, "inplace": 16, "restore": 8, "inplace+restore": 24}
TARGET = 0.70  # of the copy bandwidth, by the byte model, for each in-place kernel
TARGET_KERNELS = ("inplace", "restore", "inplace+restore")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="sizes 2**20 and 2**22")
    p.add_argument("--sizes", type=int, nargs="+", metavar="LOG2",
                   help="element counts as powers of two (default 24 26; --quick 20 22)")
    p.add_argument("--layouts", nargs="+", default=["flat", "model"],
                   choices=["flat", "model"],
                   help="one flat tensor, and/or the 148 tensors of bench/cases.py")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--repeats", type=int, default=15,
                   help="interleaved rounds per tensor group (default 15)")
    p.add_argument("--no-eager", action="store_true", help="skip the reference rows")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", type=Path, default=HERE / "out", help="folder for JSON and CSV")
    return p.parse_args(argv)


def nbytes(kernel: str, numel: int, dtype: torch.dtype) -> int:
    return FP32_BYTES[kernel] * numel * torch.finfo(dtype).bits // 32


def make_group(layout: str, total: int, dtype: torch.dtype, seed: int = 0):
    """x, s, out, backup: lists of separate tensors, every page touched."""
    gen = torch.Generator().manual_seed(seed)
    shapes = layout_shapes(layout, total)
    x = [(torch.randn(sh, generator=gen) * 10.0).to(dtype) for sh in shapes]
    s = [(torch.randn(sh, generator=gen) * 1e-3).to(dtype) for sh in shapes]
    out = [torch.zeros_like(t) for t in x]
    backup = [torch.zeros_like(t) for t in x]
    return x, s, out, backup


def units(ns, x, s, out, backup, numel, dtype, prefix):
    """[[(case, fn, bytes)]]: each inner list runs in this order within a round (an
    in-place lookahead is always followed by its restore, so ``x`` does not drift)."""
    def pair():
        ns.lookahead_inplace(x, s, backup)
        ns.restore(x, backup)
    return [
        [(f"{prefix} swap", lambda: ns.lookahead(x, s, out), nbytes("swap", numel, dtype))],
        [(f"{prefix} inplace", lambda: ns.lookahead_inplace(x, s, backup),
          nbytes("inplace", numel, dtype)),
         (f"{prefix} restore", lambda: ns.restore(x, backup), nbytes("restore", numel, dtype))],
        [(f"{prefix} inplace+restore", pair, nbytes("inplace+restore", numel, dtype))],
    ]


def run_group(size, layout, dtype_name, rounds, eager, cpp):
    dtype = DTYPES[dtype_name]
    x, s, out, backup = make_group(layout, 1 << size, dtype)
    numel = sum(t.numel() for t in x)
    plan = units(cpp, x, s, out, backup, numel, dtype, "cpp")
    if eager:
        plan += units(_reference, x, s, out, backup, numel, dtype, "eager")[:2]
    copies = {}
    for k in ("swap", "inplace", "restore"):
        b = nbytes(k, numel, dtype)
        copies[b] = copy_call(b)
    plan += [[(f"copy {b}", fn, b)] for b, fn in copies.items()]
    for unit in plan:
        for _, fn, _ in unit:
            fn()  # warm: first touches, thread pool
    times = {case: [] for unit in plan for case, _, _ in unit}
    loads = [os.getloadavg()[0]]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            k = r % len(plan)
            for unit in plan[k:] + plan[:k]:
                for case, fn, _ in unit:
                    t0 = time.perf_counter()
                    fn()
                    times[case].append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    loads.append(os.getloadavg()[0])
    cpu_per_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    stats = {case: dict(median_s=statistics.median(ts), q25_s=quantile(ts, 0.25),
                        q75_s=quantile(ts, 0.75), min_s=min(ts), max_s=max(ts), rounds=len(ts))
             for case, ts in times.items()}
    bytes_of = {case: b for unit in plan for case, _, b in unit}
    copy_gbps = {b: b / stats[f"copy {b}"]["median_s"] / 1e9 for b in copies}
    rows = []
    base = dict(size_log2=size, numel=numel, layout=layout, n_tensors=len(x), dtype=dtype_name,
                threads=torch.get_num_threads(), load_start=loads[0], load_end=loads[1],
                cpu_per_wall=cpu_per_wall)
    for case, st in stats.items():
        if case.startswith("copy"):
            continue
        impl, kernel = case.split(" ", 1)
        b = bytes_of[case]
        if kernel == "inplace+restore":  # a copy of 24N bytes: the 16N and the 8N copies
            cb = nbytes("inplace", numel, dtype), nbytes("restore", numel, dtype)
            copy_s = sum(stats[f"copy {c}"]["median_s"] for c in cb)
        else:
            copy_s = stats[f"copy {b}"]["median_s"]
        rows.append(dict(base, impl=impl, kernel=kernel, bytes=b, **st,
                         gbps=b / st["median_s"] / 1e9, copy_gbps=b / copy_s / 1e9,
                         frac_copy=copy_s / st["median_s"]))
    for impl in ("cpp", "eager"):
        sw = stats.get(f"{impl} swap")
        if sw is None:
            continue
        parts = stats[f"{impl} inplace"]["median_s"] + stats[f"{impl} restore"]["median_s"]
        pair = stats.get(f"{impl} inplace+restore")
        rows.append(dict(base, impl=impl, kernel="ratio", bytes=None,
                         sum_over_swap=parts / sw["median_s"],
                         pair_over_swap=pair["median_s"] / sw["median_s"] if pair else None))
    del x, s, out, backup, plan, copies
    gc.collect()
    return rows, copy_gbps


def _cell_spread(r):
    return f"±{(r['q75_s'] - r['q25_s']) / 2 / r['median_s']:.0%}"


def render(rows, info, rounds):
    out = [f"Machine: {info['cpu']}, {info['cpus']} CPUs, torch {info['torch']} with "
           f"{info['torch_threads']} threads; load average {info['load_before'][0]:.2f} "
           f"before, {info['load_after'][0]:.2f} after",
           f"Command: {info['command']}",
           f"Rounds: {rounds} per tensor group, each calling every case once (order rotated)",
           "",
           "median ms, spread = half the interquartile range; GB/s by the byte model; "
           "'of copy' = that bandwidth over the bandwidth of a copy of the same bytes in "
           "the same rounds (inplace+restore: the 16N and 8N copies together)",
           ""]
    body = []
    for r in rows:
        if r["kernel"] == "ratio":
            continue
        target = ""
        if r["impl"] == "cpp" and r["kernel"] in TARGET_KERNELS:
            target = "met" if r["frac_copy"] >= TARGET else "MISSED"
        body.append([f"2^{r['size_log2']}", f"{r['layout']} ({r['n_tensors']})", r["dtype"],
                     r["impl"], r["kernel"], f"{r['bytes'] / 1e6:.0f}", _ms(r["median_s"]),
                     _cell_spread(r), f"{r['gbps']:.1f}", f"{r['copy_gbps']:.1f}",
                     f"{r['frac_copy']:.0%}", target])
    out += _table(["size", "layout", "dtype", "impl", "kernel", "MB", "median ms", "spread",
                   "GB/s", "copy GB/s", "of copy", f">= {TARGET:.0%}"], body)
    out += ["", "**In-place total over swap** (floor by the byte model: 24/12 = 2.00x)", ""]
    body = [[f"2^{r['size_log2']}", f"{r['layout']} ({r['n_tensors']})", r["dtype"], r["impl"],
             f"{r['sum_over_swap']:.2f}x",
             "" if r["pair_over_swap"] is None else f"{r['pair_over_swap']:.2f}x",
             f"{r['load_start']:.2f} -> {r['load_end']:.2f}", f"{r['cpu_per_wall']:.2f}"]
            for r in rows if r["kernel"] == "ratio"]
    out += _table(["size", "layout", "dtype", "impl", "(inplace + restore) / swap",
                   "inplace+restore call / swap", "load", "CPU s / wall s"], body)
    out += ["", "CPU s / wall s: this process's CPU time over the wall time of the group's "
            f"rounds: near {torch.get_num_threads()} when the kernels' threads had the cores to "
            "themselves, lower when other work took them (or threads waited)"]
    missed = [r for r in rows if r["impl"] == "cpp" and r["kernel"] in TARGET_KERNELS
              and r["frac_copy"] < TARGET]
    checked = [r for r in rows if r["impl"] == "cpp" and r["kernel"] in TARGET_KERNELS]
    out += ["", f"**Target** cpp in-place kernels >= {TARGET:.0%} of the copy bandwidth: "
            f"met in {len(checked) - len(missed)} of {len(checked)} cases"]
    for r in missed:
        out.append(f"- MISSED: 2^{r['size_log2']} {r['layout']} {r['dtype']} {r['kernel']}: "
                   f"{r['frac_copy']:.0%}")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not _backends.cpp_available():
        sys.exit("the C++ extension secant_ext._C is not built (pip install "
                 "--no-build-isolation -e .)")
    cpp = _backends._cpp()
    sizes = args.sizes or ([20, 22] if args.quick else [24, 26])
    info = machine_info()
    info["command"] = " ".join([Path(sys.executable).name] + sys.argv)
    info["started"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if info["load_before"][0] > 0.5 * (info["cpus"] or 1):
        print(f"warning: load average {info['load_before'][0]:.1f} on {info['cpus']} CPUs: "
              "other work shares the cores; absolute times will be off (ratios less so)",
              file=sys.stderr)
    rows = []
    for size in sizes:
        for layout in args.layouts:
            for dtype in args.dtypes:
                print(f"2^{size} {layout} {dtype}...", file=sys.stderr)
                r, _ = run_group(size, layout, dtype, args.repeats, not args.no_eager, cpp)
                rows += r
    info["load_after"] = os.getloadavg()
    print(render(rows, info, args.repeats))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = args.out / f"lookahead_inplace-{stamp}.json"
    json_path.write_text(json.dumps(dict(machine=info, rows=rows, target=TARGET), indent=1))
    csv_path = args.out / f"lookahead_inplace-{stamp}.csv"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(csv_path, rows, keys)
    print(f"\nwrote {json_path} and {csv_path}")


if __name__ == "__main__":
    main()
