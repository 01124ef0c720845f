"""GPU check of the Triton kernels, for a lent GPU machine (run through bench/gpu_check.sh).

Sections, each recorded even when another fails:
  parity   each phase against the eager reference on CUDA at 2^26 elements (one tensor and
           a model-like list), fp32 and bf16
  big      one tensor above 2^31 elements (int64 offsets), when free memory allows
  graph    a whole optimizer step, closure included, captured in a CUDA graph and replayed,
           against the same steps run eagerly
  sync     one steady-state step under torch.cuda.set_sync_debug_mode("error")
  launches kernel launches per step (torch.profiler), per phase and in total
  timing   each phase with triton.testing.do_bench (median, 20th/80th percentiles) against
           a copy of the same bytes, GB/s by the byte model of docs/ALGORITHM.md
Writes gpu_check.json and gpu_check.log to --out ($OUT or bench/out) and prints a short
table last. ``--dry-run`` runs the same code on CPU under the Triton interpreter at tiny
sizes (no graph, sync or profiler sections): a check that the script itself works.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "bench", "out"))
    p.add_argument("--dry-run", action="store_true", help="CPU + interpreter, tiny sizes")
    p.add_argument("--n-log2", type=int, default=26, help="elements of the parity/timing runs")
    p.add_argument("--no-big", action="store_true", help="skip the tensor above 2^31 elements")
    p.add_argument("--pytest-summary", default="", help="line to show in the final table")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["TRITON_INTERPRET"] = "1" if ARGS.dry_run else "0"
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the numerics toolkit of the tests

import torch  # noqa: E402

import numerics  # noqa: E402
import secant_ext  # noqa: E402
from secant_ext import _layout as layout  # noqa: E402
from secant_ext import _triton  # noqa: E402
from secant_ext import reference  # noqa: E402
from secant_ext._triton import _tables  # noqa: E402

LOG_LINES = []
NO_DIRECTION = dict(momentum=0.0, nesterov=False, weight_decay=0.0, sign_mode=layout.SIGN_NONE)
MOMENTUM = dict(NO_DIRECTION, momentum=0.9)


def log(msg: str) -> None:
    LOG_LINES.append(msg)
    print(msg, flush=True)


def section(results, name, fn, *args):
    t0 = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception as exc:  # record and go on: one broken section must not hide the rest
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()[-4000:]}
        log(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
    results[name]["seconds"] = round(time.perf_counter() - t0, 2)


# -- inputs ------------------------------------------------------------------------------------
def model_sizes(n: int, layers: int = 12):
    """A transformer-like list summing to about n: per layer 3d*d, d*d, 4d*d, d*4d weights,
    their biases and two norms; plus odd, one-element and empty tensors."""
    layers = 2 if ARGS is not None and ARGS.dry_run else layers
    d = max(8, int(math.sqrt(n / 12 / layers)))
    layer = [3 * d * d, 3 * d, d * d, d, 4 * d * d, 4 * d, 4 * d * d, d, d, d]
    return layer * layers + [1000, 1, 0, 257]


def rand(sizes, dtype, dev, seed, scale=1.0):
    """Generated on the device (2^26 elements through a CPU generator would take long)."""
    gen = torch.Generator(device=dev).manual_seed(seed)
    return [(scale * torch.randn(n, generator=gen, device=dev, dtype=torch.float32)).to(dtype)
            for n in sizes]


def state(dev, taken=2, alpha=0.3):
    return numerics.make_state(dev, alpha=alpha, taken=taken)


# -- parity --------------------------------------------------------------------------------------
def _inplace_parity(x, s, expected):
    """lookahead_inplace writes the bits of x to the backup and those of the swap's
    ``expected`` (x + s) to x; restore gives x back bit for bit."""
    x_before = [t.clone() for t in x]
    backup = [torch.empty_like(t) for t in x]
    _triton.lookahead_inplace(x, s, backup)
    ok = all(torch.equal(a.view(torch.int16 if a.element_size() == 2 else torch.int32),
                         b.view(torch.int16 if b.element_size() == 2 else torch.int32))
             for a, b in zip(backup, x_before))
    ok = ok and all(torch.equal(a, b) for a, b in zip(x, expected))
    _triton.restore(x, backup)
    return ok and all(torch.equal(a, b) for a, b in zip(x, x_before))


def parity(dev, n):
    """Each phase within the budgets of tests/numerics.py (errors reported in units of the
    budget: <= 1 passes), bf16 also against twice the error of the reference run in bf16."""
    kw = dict(momentum=0.9, nesterov=True, weight_decay=0.01)
    rows = []
    for label, sizes in (("one tensor", [n]), ("model-like", model_sizes(n))):
        n_rows, _ = _tables.rows_and_span(sizes)
        for dtype in (torch.float32, torch.bfloat16):
            x, s, gp, g, m = (rand(sizes, dtype, dev, k) for k in range(5))
            st = state(dev)
            out = [torch.empty_like(t) for t in x]
            _triton.lookahead(x, s, out)
            try:
                numerics.check_lookahead("lookahead", out, x, s)
                look_ok = True
            except AssertionError as exc:
                look_ok = False
                log(f"[parity] {str(exc)[:500]}")
            call = numerics.StatsCall(s, gp, g, x, m, st, sign_mode=layout.SIGN_SCALED, **kw)
            table = call.run(_triton)
            stat_ratio = numerics.stats_error_ratio(numerics.TRITON, call, table)
            stats_ok, stat_msg = stat_ratio <= 1, f"{stat_ratio:.3g} of the budget"
            upd = numerics.UpdateCall(x, g, m, table[:, :layout.NUM_STATS], st,
                                      sign_mode=layout.SIGN_NONE, **kw)
            xt, mt = upd.run(_triton)
            upd_ratio = numerics.update_error_ratio(numerics.TRITON, upd, dtype, xt, mt)
            upd_ok, upd_msg = upd_ratio <= 1, f"{upd_ratio:.3g} of the budget"
            if dtype in numerics.LOW:
                try:
                    numerics.check_stats("secant_stats", table, call, numerics.TRITON, dev.type)
                    numerics.check_update("update", numerics.TRITON, upd, dtype, result=(xt, mt))
                except AssertionError as exc:
                    stats_ok = upd_ok = False
                    stat_msg = upd_msg = str(exc)[:500]
            inplace_ok = _inplace_parity(x, s, out)
            row = dict(sizes=label, dtype=str(dtype), numel=sum(sizes), tensors=len(sizes),
                       table_rows=n_rows, lookahead_bitwise=look_ok, stats_ok=stats_ok,
                       stats=stat_msg, update_ok=upd_ok, update=upd_msg,
                       inplace_bitwise=inplace_ok)
            log(f"[parity] {label} {dtype}: lookahead bitwise={look_ok}; stats {stat_msg}; "
                f"update (nesterov, wd) {upd_msg}; in-place lookahead and restore bitwise="
                f"{inplace_ok}")
            rows.append(row)
            del x, s, gp, g, m, out, xt, mt, table
    ok = all(r["lookahead_bitwise"] and r["stats_ok"] and r["update_ok"] and
             r["inplace_bitwise"] for r in rows)
    return {"ok": ok, "rows": rows}


# -- above 2^31 elements ---------------------------------------------------------------------------
def big(dev):
    n = 2 ** 31 + 2 ** 20 + 3
    need = 3 * 4 * n + (4 << 30)
    free = torch.cuda.mem_get_info(dev)[0]
    if free < need:
        log(f"[big] skipped: {free / 2**30:.1f} GiB free, {need / 2**30:.1f} GiB needed")
        return {"ok": True, "skipped": True, "free_gib": free / 2 ** 30}
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(n, generator=gen, device=dev)
    s = torch.rand(n, generator=gen, device=dev)
    out = torch.empty_like(x)
    piece = 2 ** 28
    spans = [(i, min(i + piece, n)) for i in range(0, n, piece)]
    _triton.lookahead([x], [s], [out])
    look_ok = all(torch.equal(out[a:b], x[a:b] + s[a:b]) for a, b in spans)
    # stats: out plays g_plus. Sums checked in fp64 piece by piece, then on the tail alone
    # (everything below 2^31 zeroed): a wrong offset there cannot hide in the rounding.
    st = state(dev)
    results = {}
    for label in ("all", "tail above 2^31"):
        if label != "all":
            s[:2 ** 31].zero_()
            out[:2 ** 31].zero_()
        got = _triton.secant_stats([s], [out], [], [x], [], st, **NO_DIRECTION).double().sum(0)
        want = torch.zeros(4, dtype=torch.float64, device=dev)
        for a, b in spans:
            sa, ya = s[a:b].double(), out[a:b].double() - s[a:b].double()
            want += torch.stack([(sa * ya).sum(), (sa * sa).sum(), (ya * ya).sum(), (sa * sa).sum()])
        rel = ((got - want).abs() / want.abs()).max().item()
        results[label] = rel
    stats_ok = all(r < 1e-5 for r in results.values())
    # update with alpha = 0.5: x - 0.5 * g is exact to one rounding on both sides: bitwise
    out.copy_(x)
    st = state(dev, alpha=0.5)
    table = torch.zeros(1, 4, device=dev)
    _triton.update([x], [s], [], table, st, **NO_DIRECTION)
    upd_ok = all(torch.equal(x[a:b], out[a:b] - 0.5 * s[a:b]) for a, b in spans)
    log(f"[big] n = 2^31 + 2^20 + 3: lookahead bitwise={look_ok}; stats relative error "
        f"{results}; update bitwise={upd_ok}")
    del x, s, out
    torch.cuda.empty_cache()
    return {"ok": look_ok and stats_ok and upd_ok, "numel": n, "lookahead_bitwise": look_ok,
            "stats_rel_err": results, "update_bitwise": upd_ok}


# -- a whole step: CUDA graph, host syncs, launches ---------------------------------------------------
def _mlp_and_opt(dev, seed=0, width=512, depth=8):
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).to(dev)
    opt = secant_ext.SecantSGDM(model.parameters(), momentum=0.9, backend="triton")
    gen = torch.Generator(device=dev).manual_seed(1)
    X = torch.randn(256, width, device=dev, generator=gen)
    Y = torch.randn(256, 1, device=dev, generator=gen)

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(X), Y)
        loss.backward()
        return loss
    return model, opt, closure


def _graph_once(dev, steps):
    model_e, opt_e, closure_e = _mlp_and_opt(dev)
    model_g, opt_g, closure_g = _mlp_and_opt(dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up: state, buffers and kernels exist before capture
            opt_g.step(closure_g)
    torch.cuda.current_stream().wait_stream(side)
    for _ in range(3):
        opt_e.step(closure_e)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_loss = opt_g.step(closure_g)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        g.replay()
    torch.cuda.synchronize()
    t_graph = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        loss_e = opt_e.step(closure_e)
    torch.cuda.synchronize()
    t_eager = (time.perf_counter() - t0) / steps
    diff = max((a - b).abs().max().item() for a, b in zip(model_g.parameters(),
                                                         model_e.parameters()))
    size = max(p.abs().max().item() for p in model_e.parameters())
    alpha_g, alpha_e = opt_g.last_stats.alpha.item(), opt_e.last_stats.alpha.item()
    # the kernels are deterministic, but cuBLAS may pick other algorithms under capture:
    # equal to fp32 rounding accumulated over a few steps, not necessarily bitwise
    ok = diff <= 1e-5 * size and abs(alpha_g - alpha_e) <= 1e-5 * abs(alpha_e) and \
        abs(static_loss.item() - loss_e.item()) <= 1e-5 * abs(loss_e.item())
    log(f"[graph] {steps} replays vs eager steps: max |param diff| {diff:.3g}, alpha "
        f"{alpha_g:.6g} vs {alpha_e:.6g}; step {t_graph * 1e3:.3f} ms graphed, "
        f"{t_eager * 1e3:.3f} ms eager")
    return {"ok": ok, "max_param_diff": diff, "alpha_graph": alpha_g, "alpha_eager": alpha_e,
            "ms_per_step_graph": t_graph * 1e3, "ms_per_step_eager": t_eager * 1e3}


class _CpuRngOnly:
    """The optimizer's RNG replay without the CUDA generator, whose get/set_rng_state
    PyTorch refuses during capture; harmless here, the MLP draws no random numbers."""

    def __init__(self, devices):
        self.cpu = torch.get_rng_state()

    def restore(self):
        torch.set_rng_state(self.cpu)


def graph(dev, steps=5):
    """The step as shipped first. The optimizer saves and restores the CUDA RNG state around
    the lookahead, which capture may refuse ("Cannot call CUDAGeneratorImpl::current_seed
    during CUDA graph capture"); if so, that is recorded and the capture is retried with the
    CUDA RNG replay left out, so the kernels and the closure are still checked in a graph."""
    try:
        return _graph_once(dev, steps)
    except Exception as exc:
        first = f"{type(exc).__name__}: {exc}"
        log(f"[graph] capture of the step as shipped failed: {first[:300]}")
    torch.cuda.synchronize()
    import secant_ext._base as base
    saved, base.RngState = base.RngState, _CpuRngOnly
    try:
        result = _graph_once(dev, steps)
    finally:
        base.RngState = saved
    result.update(ok=False, as_shipped_error=first[:2000], retried_without_cuda_rng=True,
                  error="step as shipped not capturable (CUDA RNG replay); without it: "
                        + ("replays match" if result["ok"] else "replays DIFFER"))
    return result


def sync(dev):
    _, opt, closure = _mlp_and_opt(dev)
    for _ in range(2):
        opt.step(closure)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step(closure)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    log("[sync] a steady-state step ran under set_sync_debug_mode('error'): no host sync")
    return {"ok": True}


def launches(dev):
    from torch.profiler import ProfilerActivity, profile
    _, opt, closure = _mlp_and_opt(dev)
    for _ in range(2):
        opt.step(closure)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        opt.step(closure)
        torch.cuda.synchronize()
    counts = {}
    for ev in prof.key_averages():
        counts[ev.key] = counts.get(ev.key, 0) + ev.count
    phase = {k: sum(c for name, c in counts.items() if k in name)
             for k in ("_lookahead_kernel", "_stats_kernel", "_alpha_kernel", "_update_kernel")}
    kernels = sum(e.count for e in prof.key_averages()
                  if getattr(e, "device_type", None) is not None and
                  "CUDA" in str(e.device_type) and "Memcpy" not in e.key and "Memset" not in e.key)
    htod = sum(c for name, c in counts.items() if "HtoD" in name)
    syncs = {k: c for k, c in counts.items() if "Synchronize" in k and k != "cudaDeviceSynchronize"}
    n_params = len(opt.param_groups[0]["params"])
    ok = all(v == 1 for v in phase.values()) and not syncs
    log(f"[launches] one step over {n_params} tensors: {phase}; all GPU kernels {kernels}; "
        f"HtoD copies {htod}; stream/event syncs {syncs or 'none'}")
    return {"ok": ok, "per_phase": phase, "kernels_total": kernels, "htod_copies": htod,
            "syncs": syncs, "tensors": n_params}


# -- timing ---------------------------------------------------------------------------------------
def _bench(fn, dev):
    if dev.type == "cuda":
        import triton.testing
        med, lo, hi = triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
        return med, lo, hi
    times = []
    for _ in range(5):  # dry run: wall clock of the interpreter, for the table code only
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[2], times[1], times[3]


ADAM = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)


def _fused_adamw(x, g):
    """One ``torch.optim.AdamW(fused=True)`` step on copies of ``x`` with gradients ``g``."""
    params = [torch.nn.Parameter(t.clone()) for t in x]
    for p, gi in zip(params, g):
        p.grad = gi.clone()
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    return opt.step


def timing(dev, n):
    rows = []
    for label, sizes in (("one tensor", [n]), ("model-like", model_sizes(n))):
        N = sum(sizes)
        x, s, gp, g, m = (rand(sizes, torch.float32, dev, k, 1e-3) for k in range(5))
        out = [torch.empty_like(t) for t in x]
        src = torch.randn(N, device=dev)
        dst = torch.empty_like(src)
        st = state(dev, alpha=1e-6)
        st_alpha = st.clone()
        table = _triton.secant_stats(s, gp, [], x, [], st, **NO_DIRECTION)
        backup = [torch.empty_like(t) for t in x]
        cases = [
            ("copy (same bytes)", 8 * N, lambda: dst.copy_(src), None),
            ("lookahead", 12 * N, lambda: _triton.lookahead(x, s, out),
             lambda: reference.lookahead(x, s, out)),
            # repeated without a restore, x drifts by s (1e-3) a call: harmless for timing
            ("lookahead_inplace", 16 * N, lambda: _triton.lookahead_inplace(x, s, backup),
             lambda: reference.lookahead_inplace(x, s, backup)),
            ("restore", 8 * N, lambda: _triton.restore(x, backup),
             lambda: reference.restore(x, backup)),
            ("average", 12 * N, lambda: _triton.average(m, x, st),
             lambda: reference.average(m, x, st)),
            ("secant_stats", 8 * N,
             lambda: _triton.secant_stats(s, gp, [], x, [], st, **NO_DIRECTION),
             lambda: reference.secant_stats(s, gp, [], x, [], st, **NO_DIRECTION)),
            ("secant_alpha", 0, lambda: _triton.secant_alpha(table, st_alpha, rule=0, safeguard=True),
             None),
            ("update sgd", 12 * N,
             lambda: _triton.update(x, g, [], table, st, **NO_DIRECTION),
             lambda: reference.update(x, g, [], table, st, **NO_DIRECTION)),
            ("update sgdm", 20 * N,
             lambda: _triton.update(x, g, m, table, st, **MOMENTUM),
             lambda: reference.update(x, g, m, table, st, **MOMENTUM)),
            # SecantAdam: the update (x, g, m, v in; x, m, v out; u too on a recording step,
            # the average in and out at its defaults) against torch.optim.AdamW(fused=True)'s
            # step on the same sizes
            ("adam_update", 28 * N,
             lambda: _triton.adam_update(x, g, m, gp, [], [], st, **ADAM),
             lambda: reference.adam_update(x, g, m, gp, [], [], st, **ADAM)),
            ("adam_update + u", 32 * N,
             lambda: _triton.adam_update(x, g, m, gp, out, [], st, **ADAM),
             lambda: reference.adam_update(x, g, m, gp, out, [], st, **ADAM)),
            ("adam_update + avg", 36 * N,
             lambda: _triton.adam_update(x, g, m, gp, [], s, st, **ADAM),
             lambda: reference.adam_update(x, g, m, gp, [], s, st, **ADAM)),
            ("adam_stats", 12 * N, lambda: _triton.adam_stats(out, gp, s, [], st), None),
            ("adam_previous_step", 12 * N,
             lambda: _triton.adam_previous_step(x, m, gp, out, st, eps=1e-8, weight_decay=0.0),
             lambda: reference.adam_previous_step(x, m, gp, out, st, eps=1e-8,
                                                  weight_decay=0.0)),
            ("AdamW(fused=True)", 28 * N, _fused_adamw(x, g), None),
        ]
        copy_gbs = None
        for name, nbytes, fn, ref in cases:
            med, lo, hi = _bench(fn, dev)
            gbs = nbytes / med / 1e6 if nbytes else float("nan")
            if name.startswith("copy"):
                copy_gbs = gbs
            ref_ms = _bench(ref, dev)[0] if ref is not None else float("nan")
            row = dict(sizes=label, numel=N, tensors=len(sizes), phase=name, bytes=nbytes,
                       median_ms=med, p20_ms=lo, p80_ms=hi, gbs=gbs,
                       vs_copy=gbs / copy_gbs if copy_gbs else float("nan"),
                       reference_ms=ref_ms)
            rows.append(row)
            log(f"[timing] {label} {name}: {med:.4f} ms [{lo:.4f}, {hi:.4f}] {gbs:.0f} GB/s "
                f"({row['vs_copy']:.2f} of copy); eager reference {ref_ms:.4f} ms")
        del x, s, gp, g, m, out, src, dst, backup
    return {"ok": True, "rows": rows}


# -- report ---------------------------------------------------------------------------------------
def table(results) -> str:
    lines = ["", "== secant_ext GPU check " + "=" * 52,
             f"{'phase':<20}{'sizes':<12}{'median ms':>11}{'p20-p80 ms':>19}{'GB/s':>8}"
             f"{'x copy':>8}{'ref ms':>9}"]
    for r in results.get("timing", {}).get("rows", []):
        lines.append(f"{r['phase']:<20}{r['sizes']:<12}{r['median_ms']:>11.4f}"
                     f"{r['p20_ms']:>9.4f}-{r['p80_ms']:<9.4f}{r['gbs']:>8.0f}"
                     f"{r['vs_copy']:>8.2f}{r['reference_ms']:>9.3f}")
    lines.append("")
    for r in results.get("memory", {}).get("rows", []):
        lines.append(f"{r['optimizer']:<44} {r['between']:6.1f} B/param between steps, "
                     f"{r['peak_above_model']:6.1f} at peak (CUDA allocator)")
    for name in ("pytest", "parity", "big", "graph", "sync", "launches", "memory", "timing"):
        if name == "pytest":
            if ARGS and ARGS.pytest_summary:
                lines.append(f"{'pytest':<10}{ARGS.pytest_summary}")
            continue
        r = results.get(name)
        if r is None:
            lines.append(f"{name:<10}not run")
        elif not r.get("ok"):
            lines.append(f"{name:<10}FAILED  {r.get('error', 'see gpu_check.json')[:100]}")
        else:
            extra = {"big": "skipped (memory)" if r.get("skipped") else "ok",
                     "launches": f"ok  per phase {r.get('per_phase')}, HtoD {r.get('htod_copies')}",
                     "graph": f"ok  {r.get('ms_per_step_graph', 0):.3f} ms/step graphed, "
                              f"{r.get('ms_per_step_eager', 0):.3f} eager"}.get(name, "ok")
            lines.append(f"{name:<10}{extra}")
    return "\n".join(lines)


def cuda_memory(dev):
    """Bytes per parameter each optimizer of ``bench/memory.py`` holds between steps (the
    storages, as on the CPU) and the most the CUDA allocator had above the model, its
    gradients and the batch during a step (``torch.cuda.max_memory_allocated``)."""
    import memory
    rows = []
    for name, make in memory.makers().items():
        if make is None:
            continue
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Tanh(),
                                    torch.nn.Linear(1024, 1024)).to(dev)
        x, y = torch.randn(64, 1024, device=dev), torch.randn(64, 1024, device=dev)
        params = list(model.parameters())
        n = sum(p.numel() for p in params)
        opt = make(params)
        if hasattr(opt, "train") and not hasattr(opt, "in_lookahead"):
            opt.train()

        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss
        closure()  # gradients and autograd's buffers allocated once, before the baseline
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(memory.STEPS):
            if hasattr(opt, "in_lookahead"):
                opt.step(closure)
            else:
                closure()
                opt.step()
        torch.cuda.synchronize(dev)
        rows.append(dict(optimizer=name, between=memory.held_bytes(opt, params) / n,
                         peak_above_model=(torch.cuda.max_memory_allocated(dev) - base) / n))
        log(f"[memory] {rows[-1]}")
        del opt, model
        torch.cuda.empty_cache()
    return {"ok": True, "rows": rows}


def main() -> int:
    args = ARGS
    os.makedirs(args.out, exist_ok=True)
    dev = torch.device("cpu" if args.dry_run else "cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        log("no CUDA device visible to torch; run with --dry-run on a CPU machine")
        return 2
    n = 2 ** (10 if args.dry_run else args.n_log2)
    import triton
    env = dict(torch=torch.__version__, triton=triton.__version__, device=str(dev),
               name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               interpret=os.environ["TRITON_INTERPRET"], n=n, dry_run=args.dry_run)
    log(f"[env] {env}")
    results = {"env": env}
    section(results, "parity", parity, dev, n)
    if dev.type == "cuda":
        if not args.no_big:
            section(results, "big", big, dev)
        section(results, "graph", graph, dev)
        section(results, "sync", sync, dev)
        section(results, "launches", launches, dev)
        section(results, "memory", cuda_memory, dev)
    section(results, "timing", timing, dev, n)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    report = table(results)
    LOG_LINES.append(report)
    with open(os.path.join(args.out, "gpu_check.log"), "w") as f:
        f.write("\n".join(LOG_LINES) + "\n")
    print(report, flush=True)
    return 0 if all(r.get("ok", True) for k, r in results.items() if k != "env") else 1


if __name__ == "__main__":
    sys.exit(main())
