"""What only the C++ CPU kernels (``torch.ops.secant_ext``) have: the dispatcher's empty-list
rule, thread-count independence, walking dense non-contiguous storage, their error
messages, ``opcheck`` and the fake kernels' table rows. Their parity with the reference,
phase by phase, is in ``test_phase_parity.py``.

A failed build must fail these tests loudly, hence the plain import of ``secant_ext._C``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import secant_ext._C as _C
import numerics
from numerics import CPP, DTYPES, StatsCall, UpdateCall, assert_bitwise, make_inputs, \
    make_state, sign_table
from secant_ext import _fake
from secant_ext import _layout as layout
from test_phase_parity import VARIANTS, whole_step

ops = torch.ops.secant_ext
MOMENTUM = 0.9


@pytest.mark.parametrize("sign_mode", [layout.SIGN_NONE, layout.SIGN_SCALED],
                         ids=["nosign", "sign"])
def test_empty_lists_and_tensors(sign_mode):
    state = make_state(taken=2)
    # lookahead's only arguments are lists: with all of them empty the dispatcher has no
    # tensor to pick a device by (torch's own _foreach_ ops refuse empty lists too). The
    # optimizer never calls it so; the other ops dispatch on the state and work.
    with pytest.raises(NotImplementedError, match="no tensor arguments"):
        ops.lookahead([], [], [])
    ops.update([], [], [], torch.zeros(1, layout.NUM_STATS), state, momentum=MOMENTUM,
               nesterov=True, weight_decay=0.1, sign_mode=sign_mode)
    table = ops.secant_stats([], [], [], [], [], state, momentum=0.0, nesterov=False,
                             weight_decay=0.0, sign_mode=sign_mode)
    assert_bitwise("empty bucket", table, torch.zeros(1, layout.NUM_STATS))
    inp = make_inputs([0, 0], torch.bfloat16)
    table = ops.secant_stats(inp["s"], inp["g_plus"], [], inp["x"], [], state, momentum=0.0,
                             nesterov=False, weight_decay=0.0, sign_mode=sign_mode)
    sign = sign_mode == layout.SIGN_SCALED
    assert_bitwise("empty tensors", table,
                   torch.zeros(1, layout.NUM_STATS + (2 if sign else 0)))


def test_secant_alpha_rejects_unknown_rule():
    with pytest.raises(RuntimeError, match="unknown rule code 7"):
        ops.secant_alpha(torch.zeros(1, 4), make_state(), rule=7, safeguard=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_results_do_not_depend_on_thread_count(dtype):
    sizes = [4097, 3, 100003, 2 * _C.CHUNK_NUMEL + 5, 1]
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            inp = make_inputs(sizes, dtype, seed=9)
            results.append((whole_step(ops, inp, make_state(taken=2, alpha=0.37), 0,
                                       layout.SIGN_SCALED), inp["x"], inp["m"]))
    finally:
        torch.set_num_threads(threads)
    ((out1, table1), x1, m1), ((out2, table2), x2, m2) = results
    assert table1.shape[0] > 2, "too few chunks to test the split over threads"
    assert_bitwise("stats table", table1, table2)
    for i in range(len(sizes)):
        assert_bitwise(f"out[{i}]", out1[i], out2[i])
        assert_bitwise(f"x[{i}]", x1[i], x2[i])
        assert_bitwise(f"m[{i}]", m1[i], m2[i])


def test_dense_non_contiguous_layouts_walk_storage():
    # A transposed matrix and a channels_last image are dense: the kernels walk their
    # storage, which is right as long as every tensor of a parameter shares the strides.
    gen = torch.Generator().manual_seed(10)

    def make():
        return [torch.randn(64, 33, generator=gen).t(),
                torch.randn(2, 3, 5, 7, generator=gen).to(memory_format=torch.channels_last)]

    inp = dict(x=make(), s=make(), g_plus=make(), g=make(), m=make())
    assert not any(t.is_contiguous() for t in inp["x"])
    out = [torch.empty_like(t) for t in inp["x"]]
    ops.lookahead(inp["x"], inp["s"], out)
    for i, (o, x) in enumerate(zip(out, inp["x"])):
        assert o.stride() == x.stride()
    numerics.check_lookahead("lookahead", out, inp["x"], inp["s"])
    v = VARIANTS["all"]
    kw = dict(momentum=v.mu, nesterov=v.nesterov, weight_decay=v.wd)
    call = StatsCall(inp["s"], inp["g_plus"], inp["g"], inp["x"], inp["m"],
                     make_state(taken=2), sign_mode=layout.SIGN_SCALED, **kw)
    numerics.check_stats("secant_stats", call.run(ops), call, CPP)
    for sign_mode in (layout.SIGN_NONE, layout.SIGN_SCALED):
        call = UpdateCall(inp["x"], inp["g"], inp["m"], sign_table(2, torch.float32),
                          make_state(taken=2, alpha=0.37), sign_mode=sign_mode, **kw)
        numerics.check_update("update", CPP, call, torch.float32)


def test_clear_errors_for_bad_input():
    a, b = torch.zeros(4), torch.zeros(4)
    state = make_state()
    none = dict(momentum=0.0, nesterov=False, weight_decay=0.0)
    with pytest.raises(RuntimeError, match=r"s\[0\] has dtype Double but the call's first"):
        ops.lookahead([a], [b.double()], [torch.empty(4)])
    with pytest.raises(RuntimeError, match=r"s has 2 tensors but x has 1"):
        ops.lookahead([a], [b, b], [a])
    with pytest.raises(RuntimeError, match=r"must share strides"):
        ops.lookahead([torch.zeros(4, 3).t()], [torch.zeros(3, 4)], [torch.zeros(3, 4)])
    with pytest.raises(RuntimeError, match=r"is not dense"):
        ops.lookahead([torch.zeros(8)[::2]], [torch.zeros(8)[::2]], [torch.zeros(8)[::2]])
    with pytest.raises(RuntimeError, match=r"has shape \[5\] but x\[0\] has shape \[4\]"):
        ops.lookahead([a], [torch.zeros(5)], [a])
    with pytest.raises(RuntimeError, match=r"has dtype Int; supported"):
        ops.lookahead([a.int()], [b.int()], [a.int()])
    with pytest.raises(RuntimeError, match=r"m has 2 tensors but s has 1 \(pass an empty"):
        ops.secant_stats([a], [b], [], [a], [a, b], state, momentum=0.9, nesterov=False,
                         weight_decay=0.0, sign_mode=layout.SIGN_SCALED)
    with pytest.raises(RuntimeError, match=r"state must be float64"):
        ops.secant_stats([a], [b], [], [a], [], state.float(), sign_mode=layout.SIGN_NONE,
                         **none)
    with pytest.raises(RuntimeError, match=r"needs a \[P, 5\] stats table"):
        ops.update([a], [b], [], torch.zeros(1, 4), state, sign_mode=layout.SIGN_SCALED,
                   **none)
    with pytest.raises(RuntimeError, match=r"unknown sign_mode 3"):
        ops.update([a], [b], [], torch.zeros(1, 4), state, sign_mode=3, **none)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_opcheck(dtype):
    inp = make_inputs([3, (2, 5), 1], dtype, seed=11)
    state = make_state(taken=2, alpha=0.37)
    kw = dict(momentum=MOMENTUM, nesterov=True, weight_decay=0.1)
    out = [torch.empty_like(x) for x in inp["x"]]
    torch.library.opcheck(ops.lookahead.default, (inp["x"], inp["s"], out))
    lists = (inp["s"], inp["g_plus"], inp["g"], inp["x"], inp["m"], state)
    for sign_mode in (layout.SIGN_NONE, layout.SIGN_SCALED):
        torch.library.opcheck(ops.secant_stats.default, lists,
                              dict(kw, sign_mode=sign_mode))
    table = ops.secant_stats(*lists, sign_mode=layout.SIGN_SCALED, **kw)
    torch.library.opcheck(ops.secant_alpha.default, (table, state.clone()),
                          dict(rule=0, safeguard=True))
    torch.library.opcheck(ops.update.default, (inp["x"], inp["g"], inp["m"], table, state),
                          dict(kw, sign_mode=layout.SIGN_SCALED))
    torch.library.opcheck(ops.update.default, (inp["x"], inp["g"], [], table, state),
                          dict(momentum=0.0, nesterov=False, weight_decay=0.0,
                               sign_mode=layout.SIGN_NONE))


def test_fake_table_rows_follow_the_chunks():
    chunk = _C.CHUNK_NUMEL
    for numels, rows in (([], 1), ([0], 1), ([1], 1), ([chunk], 1), ([chunk, 1], 2),
                         ([chunk - 1, 2, chunk], 3)):
        assert _fake.num_partial_rows(numels, torch.device("cpu")) == rows
        s = [torch.ones(n) for n in numels]
        table = ops.secant_stats(s, s, [], s, [], make_state(), momentum=0.0, nesterov=False,
                                 weight_decay=0.0, sign_mode=layout.SIGN_NONE)
        assert table.shape == (rows, layout.NUM_STATS), (numels, tuple(table.shape))


def _cascade_rows(columns, numels):
    """The stats table as the kernels sum it, replayed in float32 with NumPy: per chunk of
    ``CHUNK_NUMEL`` elements, each tensor's part in blocks of ``FLOAT_LANES`` (a short last
    block padded with zeros), every block's terms added lane by lane to level 0, level 0
    folded into level 1 every 16 blocks and level 1 into level 2 every 256, and the lanes of
    ``(level 2 + level 1) + level 0`` summed in order. ``columns(lo, hi)`` gives the terms of
    the elements [lo, hi) of the concatenated tensors, one float32 array per column."""
    lanes, chunk = _C.FLOAT_LANES, _C.CHUNK_NUMEL
    starts = np.cumsum([0] + numels)
    rows = []
    for c0 in range(0, max(starts[-1], 1), chunk):
        c1 = min(c0 + chunk, starts[-1])
        k = len(columns(0, 0))
        level = np.zeros((3, k, lanes), np.float32)
        blocks = 0
        for t0, t1 in zip(starts[:-1], starts[1:]):
            lo, hi = max(t0, c0), min(t1, c1)
            for b in range(lo, hi, lanes):  # blocks start at the segment's start
                terms = np.zeros((k, lanes), np.float32)
                for j, col in enumerate(columns(b, min(b + lanes, hi))):
                    terms[j, :len(col)] = col
                level[0] += terms
                blocks += 1
                if blocks % 16 == 0:
                    level[1] += level[0]
                    level[0] = 0
                    if blocks % 256 == 0:
                        level[2] += level[1]
                        level[1] = 0
        lane_sums = (level[2] + level[1]) + level[0]
        row = []
        for j in range(len(lane_sums)):
            total = np.float32(0)
            for v in lane_sums[j]:
                total = np.float32(total + v)
            row.append(total)
        rows.append(row)
    return np.array(rows, np.float32)


# 5 + 300 + 4100 + 40000 + 19 elements: chunks span tensors, segments start mid-group, a
# segment holds runs of whole groups, and tails are short.
CASCADE_NUMELS = [5, 300, 4100, 40000, 19]


def _secant_terms(s, g_plus, g):
    y = g_plus - s
    return [s * y, s * s, y * y, g * g]


def _adam_terms(s, g_plus, u):
    y = g_plus - s
    return [u * y, u * s, y * y, s * s]


# op: (its table from s, g_plus and a third list (g, or adam_stats' u), its terms per element)
CASCADE_OPS = {
    "secant_stats": (lambda s, gp, g: ops.secant_stats(
        s, gp, g, [], [], make_state(taken=2), momentum=0.0, nesterov=False, weight_decay=0.0,
        sign_mode=layout.SIGN_NONE)[:, :layout.NUM_STATS], _secant_terms),
    "adam_stats": (lambda s, gp, u: ops.adam_stats(u, gp, s, [], make_state(taken=2)),
                   _adam_terms),
}


@pytest.mark.parametrize("op", list(CASCADE_OPS))
def test_stats_sum_in_the_fixed_cascade_order(op):
    table, terms = CASCADE_OPS[op]
    gen = torch.Generator().manual_seed(3)
    s = [torch.randn(n, generator=gen) for n in CASCADE_NUMELS]
    gp = [t * 1.5 + 0.1 * torch.randn(t.shape, generator=gen) for t in s]
    third = [torch.randn(t.shape, generator=gen) for t in s]
    flat = [torch.cat(ts).numpy() for ts in (s, gp, third)]
    want = _cascade_rows(lambda lo, hi: terms(*(f[lo:hi] for f in flat)), CASCADE_NUMELS)
    assert np.array_equal(table(s, gp, third).numpy(), want)
