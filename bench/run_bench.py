#!/usr/bin/env python
"""Benchmarks of the optimizer-side step: each phase and the whole step (gradients
given), for A-SGD and A-SGDM, against a copy of the same bytes measured in the same run.

    python bench/run_bench.py            # steps at 2**24 and 2**26, phases at 2**24
    python bench/run_bench.py --full     # phases at every size too (about twice as long)
    python bench/run_bench.py --quick    # 2**20 and 2**22: a minute, for a smoke test

Prints the tables and the targets, and writes JSON and CSV to ``bench/out/`` (or
``--out``). Implementations: ``eager`` (the per-tensor reference), ``foreach``
(``bench/foreach_reference.py``), ``compile`` (``torch.compile`` of the reference; its
compile time is reported apart) and ``cpp`` (the fused kernels, when built). Floors: a
copy of the same number of bytes, and ``torch.optim.SGD`` (foreach, fused) for the update.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # run from a checkout without installing

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from cases import DTYPES, bytes_moved, make_tensors  # noqa: E402
import e2e_mlp  # noqa: E402
from impls import RULE, copy_call, implementations, phase_call, sgd_call  # noqa: E402
import interleaved  # noqa: E402
import report  # noqa: E402
from timing import measure  # noqa: E402

from secant_ext import _layout  # noqa: E402

PHASES = [("lookahead", "-"), ("secant_stats", "-"), ("secant_alpha", "-"),
          ("update", "sgd"), ("update", "sgdm"), ("step", "sgd"), ("step", "sgdm")]
STEPS = [("step", "sgd"), ("step", "sgdm")]
FLOORS = [("update", "sgd", "SGD-foreach"), ("update", "sgd", "SGD-fused"),
          ("update", "sgdm", "SGD-foreach"), ("update", "sgdm", "SGD-fused")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="sizes 2**20 and 2**22")
    p.add_argument("--full", action="store_true", help="every phase at every size")
    p.add_argument("--sizes", type=int, nargs="+", metavar="LOG2",
                   help="element counts as powers of two (default 24 26; --quick 20 22)")
    p.add_argument("--layouts", nargs="+", default=["flat", "model"],
                   choices=["flat", "model"])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--impls", nargs="+", default=["eager", "foreach", "compile", "cpp"],
                   choices=["eager", "foreach", "compile", "cpp"])
    p.add_argument("--budget", type=float, default=0.5,
                   help="seconds of timed calls per case (at least 3 calls; default 0.5)")
    p.add_argument("--compile-model", action="store_true",
                   help="also torch.compile the 148-tensor model layout (minutes per "
                        "function on 2 cores; skipped by default)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds of the targets' cases (default 5)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end MLP step")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", type=Path, default=HERE / "out", help="folder for JSON and CSV")
    return p.parse_args(argv)


def plan(args):
    """[(size, layout, dtype, [(phase, method, impl)])]: what each tensor group runs."""
    sizes = args.sizes or ([20, 22] if args.quick else [24, 26])
    groups = []
    for size in sizes:
        with_phases = args.full or size == min(sizes)
        for layout in args.layouts:
            for dtype in args.dtypes:
                work = [(ph, me, im) for im in args.impls
                        for ph, me in (PHASES if with_phases else STEPS)]
                work += [f for f in FLOORS if with_phases]
                groups.append((size, layout, dtype, work))
    return groups


def run_group(size, layout, dtype_name, work, impls, budget, bar, copies,
              compile_model):
    """Time ``work`` on one set of tensors; rows for the table."""
    dtype = DTYPES[dtype_name]
    T = make_tensors(layout, 1 << size, dtype)
    rows, tables = [], {}
    base = dict(size_log2=size, numel=T.numel, layout=layout, n_tensors=len(T.x),
                dtype=dtype_name)
    for phase, method, impl in work:
        bar.set_postfix_str(f"2^{size} {layout} {dtype_name} {impl} {phase} {method}")
        row = dict(base, phase=phase, method=method, impl=impl)
        nbytes = bytes_moved(phase, "sgd" if method == "-" else method, T.numel, dtype)
        row["bytes"] = nbytes
        if impl == "compile" and layout == "model" and not compile_model:
            row["skipped"] = ("compiling a 148-tensor function takes minutes on 2 cores; "
                              "--compile-model includes it")
            rows.append(row)
            bar.update(1)
            continue
        graphs = _compiled_graphs()
        try:
            fn = _callable(phase, method, impl, impls, T, tables)
            timing = measure(fn, budget_s=budget, compiles=impl == "compile")
        except Exception as exc:  # noqa: BLE001 -- the table says why a cell is empty
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            rows.append(row)
            bar.update(1)
            continue
        row.update(timing.as_dict())
        if impl == "compile" and _compiled_graphs() > graphs:  # compiled here, not reused
            row["compile_s"] = max(timing.first_s - timing.median_s, 0.0)
        if nbytes:
            if nbytes not in copies:  # the copy floor of the same bytes, in this run
                copies[nbytes] = measure(copy_call(nbytes), budget_s=budget)
            cp = copies[nbytes]
            row["gbps"] = nbytes / timing.median_s / 1e9
            row["copy_gbps"] = nbytes / cp.median_s / 1e9
            row["frac_copy"] = cp.median_s / timing.median_s
        rows.append(row)
        bar.update(1)
    del T, tables
    gc.collect()
    return rows


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


def _callable(phase, method, impl, impls, T, tables):
    if impl.startswith("SGD-"):
        return sgd_call(T, method, impl.split("-")[1])
    ns = impls[impl]
    if isinstance(ns, str):
        raise RuntimeError(ns)
    key = f"{impl}-{method}"
    state = T.state(key)
    table = None
    if phase in ("secant_alpha", "update"):
        # this implementation's own table, as the step would hand it over
        table = tables.get(impl)
        if table is None:
            table = tables[impl] = ns.secant_stats(
                T.g, T.g_plus, [], T.x, [], state, momentum=0.0, nesterov=False,
                weight_decay=0.0, sign_mode=_layout.SIGN_NONE)
        if phase == "update":
            ns.secant_alpha(table, state, rule=RULE, safeguard=True)
    return phase_call(ns, phase, method if method != "-" else "sgd", T, state, table)


def machine_info():
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(cpu=model, cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(),
                load_before=os.getloadavg())


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    groups = plan(args)
    impls = implementations(args.impls)
    info = machine_info()
    info["command"] = " ".join([Path(sys.executable).name] + sys.argv)
    if info["load_before"][0] > 0.5 * (info["cpus"] or 1):
        print(f"warning: load average {info['load_before'][0]:.1f} on {info['cpus']} CPUs: "
              "other work shares the cores; OpenMP loops slow down badly when "
              "oversubscribed, so absolute times will be off (ratios less so)",
              file=sys.stderr)
    rows, copies = [], {}
    total = sum(len(w) for *_, w in groups)
    with tqdm(total=total, desc="cases", unit="case") as bar:
        for size, layout, dtype, work in groups:
            copies.clear()  # measured again for each group: the same run, the same moment
            rows += run_group(size, layout, dtype, work, impls, args.budget, bar, copies,
                              args.compile_model)
    e2e = []
    if not args.no_e2e:
        backends = ["cpp"] if "cpp" in impls and not isinstance(impls["cpp"], str) else []
        e2e = e2e_mlp.run(backends + ["reference"],
                          sorted({torch.get_num_threads(), 1}, reverse=True))
    sizes = sorted({g[0] for g in groups})
    inter_size = 26 if 26 in sizes else sizes[-1]  # the targets are stated at 2**26
    print(f"interleaved rounds of the targets' cases at 2^{inter_size}...", file=sys.stderr)
    inter = interleaved.run(inter_size, impls, rounds=args.rounds)
    info["load_after"] = os.getloadavg()
    from torch._dynamo.utils import counters
    info["inductor_cache"] = {k: v for k, v in counters["inductor"].items()
                              if k.startswith("fxgraph_cache")}
    targets = report.targets(inter, e2e, inter_size)
    text = report.render(rows, e2e, targets, info, inter, inter_size)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = args.out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(dict(machine=info, rows=rows, e2e=e2e, targets=targets,
                                         interleaved=dict(size_log2=inter_size, **inter)),
                                    indent=1))
    csv_path = args.out / f"bench-{stamp}.csv"
    keys = sorted({k for r in rows for k in r}, key=report.column_order)
    report.write_csv(csv_path, rows, keys)
    print(f"\nwrote {json_path} and {csv_path}")


if __name__ == "__main__":
    main()
