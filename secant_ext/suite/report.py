"""What a suite run writes beside its per-run records: ``results.json`` and
``results.csv`` (one row per workload, method and seed), ``scores.json`` (targets, medians,
ratios, profiles), ``table.txt`` (what the terminal shows), ``performance_profile.png``
and ``anytime.png``."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Dict, List, Optional, Sequence

from ..experiments._deps import pyplot
from ..experiments.output import _write_atomic, fmt, table
from . import scoring


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def rows(scores: Dict[str, Optional[dict]], held_out: Dict[str, bool]) -> List[dict]:
    """One row per workload, method and seed."""
    out = []
    for w, s in scores.items():
        if s is None:
            continue
        for m, ms in s["methods"].items():
            for p in ms["per_seed"]:
                out.append({"workload": w, "held_out": held_out.get(w, False), "method": m,
                            "label": ms["label"], "group": ms["group"], "lr": ms["lr"],
                            "target": s["target"], **{k: v for k, v in p.items()}})
    return out


def write_results(out: str, scores: Dict[str, Optional[dict]], held_out: Dict[str, bool],
                  summaries: Dict[str, dict], meta: dict) -> None:
    rs = rows(scores, held_out)
    _write_atomic(os.path.join(out, "results.json"), json.dumps(_clean(rs), indent=1))
    buf = io.StringIO()
    if rs:
        writer = csv.DictWriter(buf, fieldnames=list(rs[0]))
        writer.writeheader()
        for r in rs:
            writer.writerow({k: ("inf" if isinstance(v, float) and math.isinf(v) else v)
                             for k, v in r.items()})
    _write_atomic(os.path.join(out, "results.csv"), buf.getvalue())
    _write_atomic(os.path.join(out, "scores.json"),
                  json.dumps(_clean({"meta": meta, "workloads": scores,
                                     "summary": summaries}), indent=1))


def workload_table(name: str, s: dict, metric: str) -> str:
    order = sorted(s["methods"].items(),
                   key=lambda kv: (kv[1]["evals_to_target"], kv[1]["final_metric"]))
    rows_ = []
    for key, m in order:
        rows_.append({"method": m["label"] + (f" lr={m['lr']:g}" if m["lr"] else ""),
                      "final": m["final_metric"],
                      "spread": f"{fmt(m['final_metric_min'])}-{fmt(m['final_metric_max'])}",
                      "loss": m["final_loss"], "evals": m["evals_to_target"],
                      "seconds": m["seconds_to_target"], "seeds": m["seeds"],
                      "diverged": m["diverged_seeds"], "tuning": m["tuning_runs"] or "-"})
    head = (f"{name}: target {metric} <= {s['target']:.4g} (the ceiling's final at lr "
            f"{s['ceiling_lr']:g}, +{100 * scoring.TARGET_SLACK:g}%)")
    return head + "\n" + table(rows_, ["method", "final", "spread", "loss", "evals",
                                       "seconds", "seeds", "diverged", "tuning"],
                               ["method", f"final {metric} (median)", "seeds' range",
                                "final held-out loss", "grad evals to target",
                                "seconds to target", "seeds", "diverged", "tuning runs"])


def summary_table(summ: Dict[str, dict], labels: Dict[str, str], title: str) -> str:
    order = sorted(summ.items(), key=lambda kv: kv[1]["geomean_ratio"])
    rows_ = [{"method": labels.get(k, k), "geo": v["geomean_ratio"],
              "first": f"{v['first_on']}/{v['workloads']}",
              "solved": f"{v['solved']}/{v['workloads']}"} for k, v in order]
    return title + "\n" + table(rows_, ["method", "geo", "first", "solved"],
                                ["method", "geomean ratio to best (capped at "
                                 f"{scoring.TAU_MAX:g})", "first on", "reached target"])


def plot_profiles(path: str, scores, groups: Dict[str, Sequence[str]],
                  labels: Dict[str, str]) -> Optional[str]:
    """Performance profiles: one column per cost (gradient evaluations, seconds), one row
    per set of workloads (main, held-out)."""
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None
    plt = pyplot()
    taus = scoring.default_taus()
    palette = plt.get_cmap("tab20").colors
    color = {k: palette[i % len(palette)] for i, k in enumerate(labels)}
    fig, axes = plt.subplots(len(groups), 2, figsize=(16, 4.4 * len(groups)), squeeze=False)
    handles = {}
    for row, (gname, ws) in enumerate(groups.items()):
        for col, (key, cost) in enumerate((("evals_to_target", "gradient evaluations"),
                                           ("seconds_to_target", "training seconds"))):
            ax = axes[row][col]
            curves = scoring.profile_curves(scores, ws, key, taus)
            for m, ys in curves.items():
                style = "-" if m.startswith("secant") else "--" if m in (
                    "adamw-cosine", "muon") else ":"
                only = " (transformers only)" if m == "muon" else ""
                line, = ax.step(taus, ys, where="post", ls=style,
                                lw=3 if m == "secant-adam" else 1.4,
                                color="black" if m == "secant-adam" else color.get(m),
                                label=labels.get(m, m) + only)
                handles[m] = line
            ax.set(xlabel=f"tau (time to target within tau x the best, {cost})",
                   ylabel="fraction of workloads", ylim=(-0.02, 1.02),
                   title=f"{gname} workloads ({len(ws)}), {cost}")
            ax.grid(alpha=0.3)
    order = [k for k in labels if k in handles]
    fig.legend([handles[k] for k in order], [handles[k].get_label() for k in order],
               loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.74, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_anytime(path: str, records_by_workload: Dict[str, List[dict]],
                 metric_of: Dict[str, str]) -> Optional[str]:
    """The methods that need no horizon along the run (first seed) against the ceiling's
    cosine runs of several lengths at its best rate: what stopping early costs each."""
    panels = {w: rs for w, rs in records_by_workload.items() if rs}
    if not panels:
        return None
    plt = pyplot()
    from .methods import METHODS
    palette = plt.get_cmap("tab20").colors
    color = {m.key: palette[i % len(palette)] for i, m in enumerate(METHODS)}
    n = len(panels)
    cols = min(n, 3)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 4.3 * nrows), squeeze=False)
    for ax, (w, rs) in zip(axes.flat, panels.items()):
        for r in sorted(rs, key=lambda r: r["job"]["budget"]):
            j = r["job"]
            xs = [e["grad_evals"] for e in r["evals"]]
            ys = [e["metric"] if math.isfinite(e["metric"]) else float("nan") for e in r["evals"]]
            if j["method"] == "adamw-cosine":
                ax.plot(xs, ys, color="gray", lw=1, ls="--",
                        label=f"AdamW cosine to {j['budget']}")
            else:
                ax.plot(xs, ys, lw=2.6 if j["method"] == "secant-adam" else 1.2,
                        color="black" if j["method"] == "secant-adam" else color.get(
                            j["method"]), label=r["label"])
        finite = [e["metric"] for r in rs for e in r["evals"][len(r["evals"]) // 4:]
                  if math.isfinite(e["metric"])]
        if finite:
            lo, hi = min(finite), sorted(finite)[int(0.9 * (len(finite) - 1))]
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo))
        ax.set(title=w, xlabel="gradient evaluations", ylabel=metric_of.get(w, "metric"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=60)  # many panels: a small file
    plt.close(fig)
    return path


def _m(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "never"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def markdown(ws, scores, summaries, labels, meta) -> str:
    """``results.md``: the run's tables in Markdown, for docs/RESULTS.md."""
    out = [f"Command: `{meta['command']}`; seeds {meta['seeds']}; images: {meta['images']}; "
           f"target: the ceiling's final metric + {100 * scoring.TARGET_SLACK:g}%.", ""]
    for gname, key in (("main", False), ("held-out", True)):
        names = [w.name for w in ws if w.held_out == key]
        if not names:
            continue
        for cost, title in (("evals", "gradient evaluations"), ("seconds", "seconds")):
            summ = summaries[gname][cost]
            out += [f"**{gname.capitalize()} workloads ({len(names)}), time to target in "
                    f"{title}**", "",
                    "| method | geomean ratio to best (cap 4) | first on | reached target |",
                    "| --- | ---: | ---: | ---: |"]
            for k, v in sorted(summ.items(), key=lambda kv: kv[1]["geomean_ratio"]):
                out.append(f"| {labels.get(k, k)} | {v['geomean_ratio']:.2f} | "
                           f"{v['first_on']}/{v['workloads']} | {v['solved']}/{v['workloads']} |")
            out.append("")
    for w in ws:
        s = scores.get(w.name)
        if s is None:
            out += [f"**{w.name}**: no score (the ceiling has no finished run)", ""]
            continue
        tag = " (held-out)" if w.held_out else ""
        out += [f"**{w.name}**{tag}: {w.metric}, target {s['target']:.4g} (ceiling lr "
                f"{s['ceiling_lr']:g})", "",
                "| method | final (median) | seeds' range | held-out loss | evals to target "
                "| s to target | seeds |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        order = sorted(s["methods"].items(),
                       key=lambda kv: (kv[1]["evals_to_target"], kv[1]["final_metric"]))
        for k, m in order:
            name = m["label"] + (f" lr={m['lr']:g}" if m["lr"] else "")
            if k == "secant-adam":
                name = f"**{name}**"
            div = f", {m['diverged_seeds']} diverged" if m["diverged_seeds"] else ""
            out.append(f"| {name} | {_m(m['final_metric'])} | {_m(m['final_metric_min'])}-"
                       f"{_m(m['final_metric_max'])} | {_m(m['final_loss'])} | "
                       f"{_m(m['evals_to_target'])} | {_m(m['seconds_to_target'], 3)} | "
                       f"{m['seeds']}{div} |")
        out.append("")
    return "\n".join(out)
