"""What only the Triton kernels have: their launch tables (row count, cache, rows that span
tensors), argument errors, a strided stats table, alpha and flags read from the device
state, agreement with the C++ ops, whole optimizer trajectories with ``backend="triton"``,
and what only the compiler shows. Their parity with the reference, phase by phase, is in
``test_phase_parity.py`` (``-k triton``).

On CPU the kernels run under Triton's interpreter (``conftest.py`` sets
``TRITON_INTERPRET=1``), so sizes stay small; ``bench/gpu_check.sh`` runs this file on
CUDA with the kernels compiled.
"""
from __future__ import annotations

import pytest
import torch

import numerics
import secant_ext
from numerics import CPP, TRITON, FULL, StatsCall, UpdateCall, assert_bitwise, \
    assert_bitwise_lists, assert_within, make_state, rand_list
from secant_ext import _layout as layout
from secant_ext import _triton
from secant_ext import reference
from secant_ext._triton import _common, _tables
from test_phase_parity import TRITON_SIZES, dyadic_table

BLOCK = _common.BLOCK


# -- metadata ---------------------------------------------------------------------------
def test_num_partial_rows_bounds_and_formula(monkeypatch):
    assert _triton.num_partial_rows([]) == 1
    assert _triton.num_partial_rows([0, 0]) == 1
    assert _triton.num_partial_rows([1]) == 1
    assert _triton.num_partial_rows([_tables.CHUNK + 1, 1]) == 3
    assert _triton.num_partial_rows([2 ** 33 + 7]) <= _tables.MAX_ROWS  # 2^33 elements
    monkeypatch.setattr(_tables, "CHUNK", 10)
    monkeypatch.setattr(_tables, "MAX_ROWS", 4)
    # 13 chunks, at most 4 rows: 4 chunks a row, the last row holds one
    assert _tables.rows_and_span([25, 0, 100]) == (4, 4)


def test_tables_are_cached_and_follow_storage(triton_device):
    x = rand_list((3, 0, 5), torch.float32, triton_device, 0)
    s = rand_list((3, 0, 5), torch.float32, triton_device, 1)
    first = _tables.launch_tables((x, s), x[0].device)
    assert _tables.launch_tables((x, s), x[0].device) is first
    moved = [t.clone() for t in x]      # new storage: a new table, never a stale one
    assert _tables.launch_tables((moved, s), x[0].device) is not first
    out = [torch.empty_like(t) for t in x]
    _triton.lookahead(moved, s, out)
    assert_bitwise_lists("lookahead after the storage moved", out,
                         [a + b for a, b in zip(x, s)])


@pytest.mark.parametrize("bad, message", [
    ("length", "s has 2 tensors but x has 3"),
    ("dtype", "expected torch.float32"),
    ("int", "float32, float64, bfloat16 or float16"),
    ("strided", "is not dense"),
])
def test_bad_lists_raise_clear_errors(bad, message):
    x = [torch.zeros(3), torch.zeros(4, 4), torch.zeros(2)]
    s = [torch.zeros_like(t) for t in x]
    out = [torch.zeros_like(t) for t in x]
    if bad == "length":
        s = s[:2]
    elif bad == "dtype":
        s[1] = s[1].double()
    elif bad == "int":
        x = [t.int() for t in x]
        s, out = [t.int() for t in s], [t.int() for t in out]
    elif bad == "strided":
        x[1] = torch.zeros(4, 8)[:, ::2]
    with pytest.raises((ValueError, TypeError), match=message):
        _triton.lookahead(x, s, out)


# -- secant_stats: rows that span tensors ------------------------------------------------
def test_secant_stats_rows_spanning_tensors(triton_device, monkeypatch):
    """Small chunks and few rows: a row sums several tensors and a tensor spans rows, so the
    per-tensor sign columns are flushed mid-row and zero-filled elsewhere."""
    monkeypatch.setattr(_tables, "CHUNK", 2 * BLOCK)
    monkeypatch.setattr(_tables, "MAX_ROWS", 3)
    sizes = (5000, 0, 5, 2100, 1, 1100)     # 3 + 0 + 1 + 2 + 1 + 1 chunks, 3 a row
    inp = numerics.make_inputs(sizes, torch.float64, seed=10, device=triton_device)
    kw = dict(momentum=0.9, nesterov=True, weight_decay=0.05)
    call = StatsCall(inp["s"], inp["g_plus"], inp["g"], inp["x"], inp["m"],
                     make_state(triton_device, taken=3), sign_mode=layout.SIGN_SCALED, **kw)
    table = call.run(_triton)
    assert table.shape == (3, layout.NUM_STATS + len(sizes))
    numerics.check_stats("secant_stats, rows spanning tensors", table, call, TRITON,
                         triton_device)
    # each tensor's column is non-zero only in the rows that hold its chunks
    chunks = [-(-n // (2 * BLOCK)) for n in sizes]
    first = [sum(chunks[:i]) for i in range(len(sizes))]
    span = -(-sum(chunks) // 3)
    for i, (f, c) in enumerate(zip(first, chunks)):
        rows = {r for r in range(3) if c and f < (r + 1) * span and f + c > r * span}
        nonzero = {r for r in range(3) if table[r, layout.NUM_STATS + i] != 0}
        assert nonzero <= rows, f"tensor {i}: sign sum written to rows {nonzero}, owns {rows}"
    # the scaled sign update reads those multi-row columns
    upd = UpdateCall(inp["x"], inp["g"], inp["m"], table,
                     make_state(triton_device, taken=3, alpha=0.25),
                     sign_mode=layout.SIGN_SCALED, **kw)
    numerics.check_update("sign update after a multi-row table", TRITON, upd, torch.float64)


# -- secant_alpha: a strided table --------------------------------------------------------
def test_secant_alpha_reads_a_strided_table(triton_device):
    wide = dyadic_table(40, 9, 2.0, 6.0, 3.0, 1.0, torch.float64, triton_device, seed=3)
    table = wide[:, :layout.NUM_STATS]          # the optimizer slices sign tables like this
    want, got = make_state(triton_device), make_state(triton_device)
    reference.secant_alpha(table, want, rule=layout.RULES["secant"], safeguard=True)
    _triton.secant_alpha(table, got, rule=layout.RULES["secant"], safeguard=True)
    assert_bitwise("state", got, want)
    assert got[layout.ALPHA].item() == 0.75


# -- update: alpha and flags come from the device state -------------------------------------
def test_update_reads_alpha_and_flags_from_the_state(triton_device):
    """Same inputs, different states: alpha and momentum readiness come from the device."""
    x = rand_list((5,), torch.float64, triton_device, 30)
    g = rand_list((5,), torch.float64, triton_device, 31)
    m = rand_list((5,), torch.float64, triton_device, 32)
    table = torch.zeros(1, layout.NUM_STATS, dtype=torch.float64, device=triton_device)
    results = []
    for alpha, ready in ((0.5, True), (0.25, True), (0.5, False)):
        st = make_state(triton_device, taken=1, alpha=alpha, ready=ready)
        call = UpdateCall(x, g, m, table, st, momentum=0.5)
        xt, mt = call.run(_triton)
        numerics.check_update(f"alpha={alpha}, ready={ready}", TRITON, call, torch.float64,
                              result=(xt, mt))
        m_new = 0.5 * m[0] + 0.5 * g[0] if ready else g[0]
        assert_within(f"m, alpha={alpha}, ready={ready}", mt[0], m_new,
                      4e-16 * (m_new.abs() + 1))
        assert_within(f"x, alpha={alpha}, ready={ready}", xt[0], x[0] - alpha * m_new,
                      4e-16 * (x[0].abs() + 1))
        results.append(xt[0])
    assert not torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])


# -- the C++ ops --------------------------------------------------------------------------
def test_equals_the_cpp_ops(triton_device):
    """The same calls through ``torch.ops.secant_ext`` (the C++ CPU kernels, on CPU copies
    of the inputs): each within its budget of the same truth, so within their sum of each
    other; CI always builds the extension, so its absence is a failure here."""
    assert secant_ext.cpp_available(), (
        "secant_ext._C is not built; build it with `pip install --no-build-isolation -e .`")
    ops, dev = CPP.ops(), triton_device
    kw = dict(momentum=0.9, nesterov=True, weight_decay=0.05)
    for dtype in FULL:
        inp = numerics.make_inputs(TRITON_SIZES, dtype, seed=40)
        for sign_mode in (layout.SIGN_NONE, layout.SIGN_SCALED):
            call = StatsCall(inp["s"], inp["g_plus"], inp["g"], inp["x"], inp["m"],
                             make_state(taken=3), sign_mode=sign_mode, **kw)
            on_dev = StatsCall(*[numerics.on(dev, t) for t in call.lists()],
                               call.state.to(dev), sign_mode=sign_mode, **kw)
            got = _triton.secant_stats(*on_dev.lists(), on_dev.state, **on_dev.kwargs())
            want = call.run(ops)
            exact, mag, rounds = numerics.stats_truth(call)
            tol = numerics.stats_tolerance(TRITON, call, got.shape[0], mag, rounds) + \
                numerics.stats_tolerance(CPP, call, want.shape[0], mag, rounds)
            assert_within(f"secant_stats {sign_mode} vs C++", got.double().sum(0).cpu(),
                          want.double().sum(0), tol)
        out_t = [torch.empty_like(t, device=dev) for t in inp["x"]]
        out_c = [torch.empty_like(t) for t in inp["x"]]
        _triton.lookahead(numerics.on(dev, inp["x"]), numerics.on(dev, inp["s"]), out_t)
        ops.lookahead(inp["x"], inp["s"], out_c)
        assert_bitwise_lists("lookahead vs C++", [t.cpu() for t in out_t], out_c)
        table = dyadic_table(30, 4, -1.0, 3.0, 2.0, 1.0, torch.float64, "cpu", seed=5)
        for rule in layout.RULES.values():
            st_t, st_c = make_state(dev, taken=1), make_state("cpu", taken=1)
            _triton.secant_alpha(table.to(dev), st_t, rule=rule, safeguard=True)
            ops.secant_alpha(table, st_c, rule=rule, safeguard=True)
            assert_bitwise(f"state rule {rule}", st_t.cpu(), st_c)
        for sign_mode in (layout.SIGN_NONE, layout.SIGN_SCALED):
            state = make_state(taken=2, alpha=0.3)
            table = reference.secant_stats(inp["g"], inp["g"], inp["g"], inp["x"], inp["m"],
                                           state, sign_mode=layout.SIGN_SCALED, **kw)
            call = UpdateCall(inp["x"], inp["g"], inp["m"], table, state,
                              sign_mode=sign_mode, **kw)
            on_dev = UpdateCall(numerics.on(dev, inp["x"]), numerics.on(dev, inp["g"]),
                                numerics.on(dev, inp["m"]), table.to(dev), state.to(dev),
                                sign_mode=sign_mode, **kw)
            xt, mt = on_dev.run(_triton)
            xc, mc = call.run(ops)
            tol_t, _ = numerics.update_tolerances(TRITON, call, dtype)
            tol_c, _ = numerics.update_tolerances(CPP, call, dtype)
            for i, ((txt, tmt), (cxt, cmt)) in enumerate(zip(tol_t, tol_c)):
                assert_within(f"update {sign_mode} vs C++ x[{i}]", xt[i].cpu(), xc[i],
                              txt + cxt)
                assert_within(f"update {sign_mode} vs C++ m[{i}]", mt[i].cpu(), mc[i],
                              tmt + cmt)


# -- whole trajectories ---------------------------------------------------------------------
TRAJECTORIES = {
    "sgd": (secant_ext.SecantSGD, {}),
    "sgd-wd-bb2": (secant_ext.SecantSGD, dict(weight_decay=0.01, rule="bb2")),
    "sgdm-nesterov": (secant_ext.SecantSGDM, dict(momentum=0.9, nesterov=True)),
    "signsgd": (secant_ext.SecantSignSGD, {}),
    "signum": (secant_ext.SecantSignSGD, dict(momentum=0.9)),
    # measures on steps 0, 3, 6, 9; the others take the carried alpha, lr and clipping
    "sgdm-carry-lr-clip": (secant_ext.SecantSGDM, dict(momentum=0.9, curvature_every=3,
                                                       curvature_warmup=0,
                                                       lr=0.7, max_grad_norm=0.05)),
    # W stored transposed: not contiguous, so the optimizer gives it to the reference and
    # c to Triton: two buckets, one alpha from the concatenated tables
    "sgdm-two-buckets": (secant_ext.SecantSGDM, dict(momentum=0.9, transposed_w=True)),
}


def _least_squares_run(device, cls, kwargs, backend, steps=10):
    kwargs = dict(kwargs)
    transposed_w = kwargs.pop("transposed_w", False)
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(64, 6, generator=gen, dtype=torch.float64).to(device)
    Y = torch.randn(64, 2, generator=gen, dtype=torch.float64).to(device)
    W = (0.1 * torch.randn(6, 2, generator=gen, dtype=torch.float64)).to(device)
    W = (W.t().contiguous().t() if transposed_w else W).requires_grad_()
    c = torch.zeros(2, dtype=torch.float64, device=device, requires_grad=True)
    opt = cls([W, c], backend=backend, **kwargs)
    batches = [torch.arange(64, device=device)[(torch.arange(16, device=device) * 5 + 3 * t) % 64]
               for t in range(steps)]

    def closure_for(rows):
        def closure():
            opt.zero_grad()
            loss = ((X[rows] @ W + c - Y[rows]) ** 2).mean()
            loss.backward()
            return loss
        return closure

    alphas = []
    for rows in batches:
        opt.step(closure_for(rows), probe_closure=closure_for(rows[:8]))
        alphas.append(opt.last_stats.alpha.item())
    return [W.detach().cpu(), c.detach().cpu()], torch.tensor(alphas, dtype=torch.float64)


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_trajectory_equals_reference(triton_device, name):
    cls, kwargs = TRAJECTORIES[name]
    params_t, alphas_t = _least_squares_run(triton_device, cls, kwargs, "triton")
    params_r, alphas_r = _least_squares_run(triton_device, cls, kwargs, "reference")
    # float64 all through: only summation order differs, ~1e-16 a step, grown over 10 steps
    assert_within(f"{name} alphas", alphas_t, alphas_r, 1e-12 * alphas_r.abs())
    for i, (a, b) in enumerate(zip(params_t, params_r)):
        assert_within(f"{name} param {i}", a, b, 1e-12 * (b.abs() + b.abs().max()))
    assert not torch.equal(params_r[0], _least_squares_run(triton_device, cls, kwargs,
                                                           "reference", steps=0)[0][0])


# -- what only the compiler shows ------------------------------------------------------------
def test_kernels_compile_for_sm90_with_wide_loads():
    """The interpreter accepts code the compiler rejects, and cannot show how memory is
    accessed: compile for sm_90 without a GPU (Triton's ahead-of-time path, in a process
    without the interpreter) and check that full blocks move 16 bytes a thread-access
    (2 such accesses a thread per fp32 block of 1024 over 128 threads, 1 for bf16)."""
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, "-m", "secant_ext._triton._aot", "--arch", "90",
                           "--dtypes", "fp32,bf16"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert results and proc.returncode == 0, proc.stderr[-3000:] + "\n" + "\n".join(
        f"{r['kernel']} {r['variant']}: {r['error']}" for r in results if not r["ok"])
    # (tensors read, tensors written) in full blocks
    tensors = {("lookahead", ""): (2, 1), ("stats", "sign=False"): (2, 0),
               ("stats", "sign=True"): (5, 0), ("update", "m=True"): (3, 2),
               ("update", "m=False"): (2, 1),
               # SecantAdam: u, g_plus, s, g (or s alone); x, g, m, v (+ u, avg) read and
               # x, m, v (+ u, avg) written
               ("adam_stats", "measure=True g=True"): (4, 0),
               ("adam_stats", "measure=False g=False"): (1, 0),
               ("adam_update", "record=True avg=True"): (5, 5),
               ("adam_update", "record=False avg=False"): (4, 3),
               # the previous step: m, v (+ x with weight decay) read, u written
               ("adam_previous_step", "wd=False"): (2, 1),
               ("adam_previous_step", "wd=True"): (3, 1)}
    checked = 0
    for r in results:
        for (kernel, flag), (reads, writes) in tensors.items():
            if r["kernel"] != kernel or flag not in r["variant"]:
                continue
            per_tensor = 2 if r["variant"].startswith("fp32") else 1
            loads, stores = r["loads"].get("ld.global.v4.b32", 0), \
                r["loads"].get("st.global.v4.b32", 0)
            assert (loads, stores) == (reads * per_tensor, writes * per_tensor), (
                f"{kernel} {r['variant']}: {loads} wide loads and {stores} wide stores, "
                f"expected {reads * per_tensor} and {writes * per_tensor}: {r['loads']}")
            checked += 1
    assert checked == 22, f"checked {checked} variants, expected 22"
    step_size = {r["kernel"] for r in results if r["kernel"] in ("alpha", "adam_alpha")}
    assert step_size == {"alpha", "adam_alpha"}, step_size


def test_triton_is_the_cuda_kernel_of_the_ops():
    """With the extension loaded, ``torch.ops.secant_ext.*`` on CUDA tensors dispatch to the
    Triton launchers (registering touches no GPU, so this holds on a CPU-only machine)."""
    assert secant_ext.cpp_available(), "secant_ext._C is not built"
    from secant_ext import _op_table
    secant_ext._backends._cpp()  # loads the extension and registers the CUDA kernels
    for name in _op_table.NAMES:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"secant_ext::{name}", "CUDA"), \
            f"secant_ext::{name} has no CUDA kernel"
