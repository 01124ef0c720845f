"""The benchmark tables and the targets, as Markdown (readable in a terminal, pasted
as is into ``docs/PERFORMANCE.md``)."""
from __future__ import annotations

import csv
from typing import Dict, List, Optional

IMPL_COLUMNS = ["eager", "foreach", "compile", "cpp", "SGD-foreach", "SGD-fused"]
COLUMNS = ["size_log2", "numel", "layout", "n_tensors", "dtype", "phase", "method", "impl",
           "bytes", "median_s", "q25_s", "q75_s", "min_s", "max_s", "repeats", "first_s",
           "compile_s", "gbps", "copy_gbps", "frac_copy", "error", "skipped"]


def write_csv(path, rows: List[dict], keys: List[str]) -> None:
    """``rows`` as CSV with the columns ``keys`` (what every benchmark writes beside JSON)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def column_order(key: str) -> int:
    return COLUMNS.index(key) if key in COLUMNS else len(COLUMNS)


def find(rows: List[dict], **match) -> Optional[dict]:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()) and "median_s" in r:
            return r
    return None


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _cell(r: Optional[dict]) -> str:
    if r is None:
        return ""
    if "error" in r:
        return "failed"
    if "skipped" in r:
        return "skipped"
    spread = (r["q75_s"] - r["q25_s"]) / 2 / r["median_s"]
    text = f"{_ms(r['median_s'])} ±{spread:.0%}"
    if r.get("frac_copy") is not None:
        text += f" ({r['frac_copy']:.0%})"
    return text


def _table(header: List[str], body: List[List[str]]) -> List[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"] + \
        [line(b) for b in body]


def render_groups(rows: List[dict]) -> List[str]:
    out = []
    groups = []
    for r in rows:
        key = (r["size_log2"], r["layout"], r["dtype"])
        if key not in groups:
            groups.append(key)
    impls = [c for c in IMPL_COLUMNS if any(r["impl"] == c for r in rows)]
    for size, layout, dtype in groups:
        mine = [r for r in rows if (r["size_log2"], r["layout"], r["dtype"]) == (size, layout, dtype)]
        copy = next((r["copy_gbps"] for r in mine if r.get("copy_gbps")), None)
        n = mine[0]["n_tensors"]
        title = f"2^{size} elements, {layout} ({n} tensor{'s' if n > 1 else ''}), {dtype}"
        if copy:
            title += f"; copy {copy:.1f} GB/s"
        out += ["", f"**{title}**", ""]
        keys = []
        for r in mine:
            if (r["phase"], r["method"]) not in keys:
                keys.append((r["phase"], r["method"]))
        body = []
        for phase, method in keys:
            cells = [find(mine, phase=phase, method=method, impl=i) or
                     next((r for r in mine if r["phase"] == phase and r["method"] == method
                           and r["impl"] == i), None) for i in impls]
            nbytes = next(r["bytes"] for r in mine if (r["phase"], r["method"]) == (phase, method))
            body.append([phase, method, f"{nbytes / 1e6:.0f}" if nbytes else "-"] +
                        [_cell(c) for c in cells])
        out += _table(["phase", "method", "MB"] + impls, body)
    return out


def targets(inter: Dict[str, dict], e2e: List[dict], size: Optional[int]) -> List[dict]:
    """The targets, from the interleaved measurements (``interleaved.run``) at ``size``."""
    out = []

    def add(name, value, ok, detail, threshold):
        out.append(dict(target=name, value=value, threshold=threshold,
                        met=None if value is None else bool(ok(value)), detail=detail))

    def ratio(a, b):
        return inter[a]["median_s"] / inter[b]["median_s"] \
            if a in inter and b in inter else None

    where = f"A-SGD step, 2^{size} fp32, one flat tensor"
    add("cpp step / copy bandwidth >= 70%", ratio("copy", "cpp flat fp32"),
        lambda v: v >= 0.70, where, 0.70)
    add("eager / cpp >= 2x", ratio("eager flat fp32", "cpp flat fp32"),
        lambda v: v >= 2.0, where, 2.0)
    add("foreach / cpp >= 1.3x", ratio("foreach flat fp32", "cpp flat fp32"),
        lambda v: v >= 1.3, where, 1.3)
    add("model list / flat <= 1.3x", ratio("cpp model fp32", "cpp flat fp32"),
        lambda v: v <= 1.3, f"cpp A-SGD step, 2^{size} fp32, 148 tensors vs 1", 1.3)
    add("fp32 / bf16 >= 1.6x", ratio("cpp flat fp32", "cpp flat bf16"),
        lambda v: v >= 1.6, f"cpp A-SGD step, 2^{size}, one flat tensor", 1.6)
    for mlp in (r for r in e2e if r["backend"] == "cpp" and r["optimizer"] == "A-SGD"):
        add("optimizer share of an MLP step <= 8%", mlp["share"], lambda v: v <= 0.08,
            f"784-256-256-10, batch 128, cpp A-SGD, {mlp['threads']} thread(s)", 0.08)
    if not any(t["target"].startswith("optimizer share") for t in out):
        add("optimizer share of an MLP step <= 8%", None, None, "not run", 0.08)
    return out


def render_interleaved(inter: Dict[str, dict], size: int) -> List[str]:
    copy = inter.get("copy")
    body = []
    for name, r in inter.items():
        spread = (r["q75_s"] - r["q25_s"]) / 2 / r["median_s"]
        gbps = r["bytes"] / r["median_s"] / 1e9
        frac = f"{copy['median_s'] * r['bytes'] / copy['bytes'] / r['median_s']:.0%}" \
            if copy else ""
        body.append([name, f"{r['bytes'] / 1e6:.0f}", _ms(r["median_s"]), f"±{spread:.0%}",
                     f"{gbps:.1f}", frac])
    rounds = next(iter(inter.values()))["rounds"] if inter else 0
    return ["", f"**A-SGD step at 2^{size}, the cases of the targets in {rounds} interleaved "
            "rounds**", ""] + _table(["case", "MB", "median ms", "spread", "GB/s",
                                      "of copy GB/s"], body)


def render_targets(tgts: List[dict]) -> List[str]:
    body = []
    for t in tgts:
        v = t["value"]
        shown = "n/a" if v is None else (f"{v:.0%}" if t["threshold"] < 1 else f"{v:.2f}x")
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        body.append([t["target"], shown, verdict, t["detail"]])
    return _table(["target", "measured", "", "case"], body)


def render(rows: List[dict], e2e: List[dict], tgts: List[dict], info: Dict,
           inter: Dict[str, dict], inter_size: int) -> str:
    out = [f"Machine: {info['cpu']}, {info['cpus']} CPUs, torch {info['torch']} with "
           f"{info['torch_threads']} threads; load average {info['load_before'][0]:.2f} "
           f"before, {info['load_after'][0]:.2f} after",
           f"Command: {info['command']}",
           "",
           "Cells: median ms ±half the interquartile range (achieved bandwidth as a fraction "
           "of a copy of the same bytes measured in the same run). MB: the byte model.",
           ]
    out += render_groups(rows)
    compiled = [r for r in rows if r.get("compile_s") is not None]
    if compiled:
        cache = info.get("inductor_cache") or {}
        out += ["", "**torch.compile: compile time (first call minus a warm call; one "
                "compilation serves every size)** inductor FX graph cache: "
                f"{cache.get('fxgraph_cache_hit', 0)} hits, "
                f"{cache.get('fxgraph_cache_miss', 0)} misses", ""]
        out += _table(["size", "layout", "dtype", "phase", "method", "compile s"],
                      [[f"2^{r['size_log2']}", r["layout"], r["dtype"], r["phase"],
                        r["method"], f"{r['compile_s']:.1f}"] for r in compiled])
    errors = {}
    for r in rows:
        if "error" in r:
            errors.setdefault((r["impl"], r["error"]), []).append(
                f"2^{r['size_log2']} {r['layout']} {r['dtype']} {r['phase']} {r['method']}")
    for r in rows:
        if "skipped" in r:
            errors.setdefault((r["impl"], "skipped: " + r["skipped"]), []).append(
                f"2^{r['size_log2']} {r['layout']} {r['dtype']} {r['phase']} {r['method']}")
    if errors:
        out += ["", "**Failed or skipped cells**", ""]
        for (impl, err), where in errors.items():
            out.append(f"- {impl}: {err} ({len(where)} cases, e.g. {where[0]})")
    if e2e:
        out += ["", "**End to end: MNIST-sized MLP step (784-256-256-10, batch 128, two "
                "gradient evaluations per step)**", ""]
        out += _table(["optimizer", "backend", "threads", "step ms", "closures ms",
                       "optimizer ms", "of which phase calls ms", "optimizer share"],
                      [[r["optimizer"], r["backend"], r["threads"], f"{r['step_s'] * 1e3:.2f}",
                        f"{r['closures_s'] * 1e3:.2f}", f"{r['optimizer_s'] * 1e3:.2f}",
                        f"{r['phases_s'] * 1e3:.2f}", f"{r['share']:.1%}"] for r in e2e])
    out += render_interleaved(inter, inter_size)
    out += ["", "**Targets** (from the interleaved rounds and the MLP table)", ""]
    out += render_targets(tgts)
    return "\n".join(out)
