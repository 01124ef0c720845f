"""pytest-benchmark suite of the optimizer-side step (not part of ``pytest tests``).

    pytest bench/test_bench.py                        # 2**24 and 2**26, about 10 minutes
    SECANT_BENCH_SIZES=20 pytest bench/test_bench.py  # a quick pass
    pytest bench/test_bench.py -k "cpp and step" --benchmark-compare

Each case records its byte model and achieved GB/s in ``extra_info``; the ``copy`` cases
move the same bytes, so pytest-benchmark's comparison table shows the ratio to a copy.
``bench/run_bench.py`` prints the same measurements as one table with the targets.

The first tests check that the foreach baseline computes what the reference computes:
a fast wrong baseline would make every ratio meaningless.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from cases import DTYPES, bytes_moved, make_tensors  # noqa: E402
import foreach_reference  # noqa: E402
from impls import RULE, copy_call, implementations, phase_call, sgd_call  # noqa: E402
from secant_ext import _layout, reference  # noqa: E402

SIZES = [int(s) for s in os.environ.get("SECANT_BENCH_SIZES", "24,26").split(",")]
IMPLS = implementations(["eager", "foreach", "compile", "cpp"])
COMPILE_MODEL = os.environ.get("SECANT_BENCH_COMPILE_MODEL", "0") == "1"
PHASES = ["lookahead", "secant_stats", "secant_alpha", "update", "step"]


# --- the baseline is right ------------------------------------------------------------
def _problem(dtype=torch.float64, seed=0):
    """Parameters, momentum buffers and a different (g, g_plus) for each of three steps:
    with the same gradient every step the momentum average would equal it, and a wrong
    average would go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (3,), (64,), (2, 3, 4)]
    mk = lambda: [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]  # noqa: E731
    x, m = mk(), mk()
    grads = [(mk(), mk()) for _ in range(3)]
    return x, m, grads


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.0, False, 0.1),
                                                  (0.9, False, 0.0), (0.8, True, 0.05)])
@pytest.mark.parametrize("with_g", [False, True])
def test_foreach_matches_reference(momentum, nesterov, wd, with_g):
    """Three steps in float64 (the second and third with a ready momentum buffer): the
    foreach baseline and the reference agree to float64 rounding."""
    runs = {}
    for name, ns in (("reference", reference), ("foreach", foreach_reference)):
        x, m, grads = _problem()
        m = m if momentum else []
        state = torch.tensor(_layout.initial_state_values(), dtype=torch.float64)
        tables = []
        for g, g_plus in grads:
            out = [torch.empty_like(t) for t in x]
            ns.lookahead(x, g, out)
            assert all(torch.equal(o, xi + gi) for o, xi, gi in zip(out, x, g))
            table = ns.secant_stats(g, g_plus, g if with_g else [], x, m, state,
                                    momentum=momentum, nesterov=nesterov, weight_decay=wd,
                                    sign_mode=_layout.SIGN_NONE)
            ns.secant_alpha(table, state, rule=_layout.RULES["secant"], safeguard=True)
            ns.update(x, g, m, table, state, momentum=momentum, nesterov=nesterov,
                      weight_decay=wd, sign_mode=_layout.SIGN_NONE)
            tables.append(table.clone())
        runs[name] = (x, m, state, tables)
    (x0, m0, s0, t0), (x1, m1, s1, t1) = runs["reference"], runs["foreach"]
    assert s0[_layout.TAKEN] == 3 and (momentum == 0 or s0[_layout.MOMENTUM_READY] == 1)
    for a, b in zip(t0, t1):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=0)
    torch.testing.assert_close(s1, s0, rtol=1e-12, atol=0)
    for a, b in zip(x0 + m0, x1 + m1):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


def test_foreach_skips_a_nonfinite_step_exactly():
    x, _, grads = _problem()
    g, g_plus = grads[0]
    g_plus[1][0] = float("nan")
    before = [t.clone() for t in x]
    state = torch.tensor(_layout.initial_state_values(), dtype=torch.float64)
    table = foreach_reference.secant_stats(g, g_plus, [], x, [], state, momentum=0.0,
                                           nesterov=False, weight_decay=0.0,
                                           sign_mode=_layout.SIGN_NONE)
    foreach_reference.secant_alpha(table, state, rule=_layout.RULES["secant"], safeguard=True)
    foreach_reference.update(x, g, [], table, state, momentum=0.0, nesterov=False,
                             weight_decay=0.0, sign_mode=_layout.SIGN_NONE)
    assert state[_layout.SKIPPED] == 1
    assert all(torch.equal(a, b) for a, b in zip(x, before))


# --- the benchmarks ---------------------------------------------------------------------
@functools.lru_cache(maxsize=1)  # one tensor set alive at a time: 2**26 fp32 is 1.3 GB
def _tensors(layout, size, dtype_name):
    return make_tensors(layout, 1 << size, DTYPES[dtype_name])


def _rounds(nbytes: int) -> int:
    return 3 if nbytes >= 1 << 30 else 10


def _record(benchmark, nbytes):
    benchmark.extra_info["bytes"] = nbytes
    if nbytes:
        benchmark.extra_info["gbps"] = nbytes / benchmark.stats.stats.median / 1e9


# The decorator nearest the function varies slowest: one tensor set serves many cases.
@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("method", ["sgd", "sgdm"])
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["flat", "model"])
@pytest.mark.parametrize("size", SIZES)
def test_phase(benchmark, impl, phase, method, size, layout, dtype_name):
    if phase in ("lookahead", "secant_stats", "secant_alpha") and method == "sgdm":
        pytest.skip("this phase does the same work for A-SGD and A-SGDM: timed once")
    ns = IMPLS[impl]
    if isinstance(ns, str):
        pytest.skip(ns)
    if impl == "compile" and layout == "model" and not COMPILE_MODEL:
        pytest.skip("compiling a 148-tensor function takes minutes on 2 cores; "
                    "SECANT_BENCH_COMPILE_MODEL=1 includes it")
    T = _tensors(layout, size, dtype_name)
    state = T.state(f"{impl}-{method}")
    table = ns.secant_stats(T.g, T.g_plus, [], T.x, [], state, momentum=0.0, nesterov=False,
                            weight_decay=0.0, sign_mode=_layout.SIGN_NONE)
    ns.secant_alpha(table, state, rule=RULE, safeguard=True)
    fn = phase_call(ns, phase, method, T, state, table)
    nbytes = bytes_moved(phase, method, T.numel, T.dtype)
    benchmark.group = f"{phase}-{method} 2^{size} {layout} {dtype_name}"
    benchmark.pedantic(fn, rounds=_rounds(nbytes), warmup_rounds=1)
    _record(benchmark, nbytes)


@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("method", ["sgd", "sgdm"])
@pytest.mark.parametrize("phase", ["lookahead", "secant_stats", "update", "step"])
def test_copy_floor(benchmark, phase, method, size, dtype_name):
    """A copy of the bytes the phase moves: the floor its GB/s is measured against."""
    nbytes = bytes_moved(phase, method, 1 << size, DTYPES[dtype_name])
    fn = copy_call(nbytes)
    benchmark.group = f"{phase}-{method} 2^{size} flat {dtype_name}"
    benchmark.pedantic(fn, rounds=_rounds(nbytes), warmup_rounds=1)
    _record(benchmark, nbytes)


@pytest.mark.parametrize("kind", ["foreach", "fused"])
@pytest.mark.parametrize("method", ["sgd", "sgdm"])
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["flat", "model"])
@pytest.mark.parametrize("size", SIZES)
def test_torch_sgd_floor(benchmark, method, size, layout, dtype_name, kind):
    T = _tensors(layout, size, dtype_name)
    nbytes = bytes_moved("update", method, T.numel, T.dtype)
    fn = sgd_call(T, method, kind)
    benchmark.group = f"update-{method} 2^{size} {layout} {dtype_name}"
    benchmark.pedantic(fn, rounds=_rounds(nbytes), warmup_rounds=1)
    _record(benchmark, nbytes)
