"""``secant_ext._C``'s direct calls of the CPU kernels against the ops they stand for.

The C++ backend calls ``secant_ext._C.<op>`` (``csrc/direct_calls.cpp``) instead of
``torch.ops.secant_ext.<op>``: the same kernel without the dispatcher. The reference here is
the op itself, called through the dispatcher: every call must give its bits, its errors, and
its profiler event, and every call the dispatcher could treat otherwise must go to it.
"""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import secant_ext._C as _C
from numerics import assert_bitwise, assert_bitwise_lists, clones, make_inputs, make_state, \
    rand_list
from secant_ext import _backends
from secant_ext import _layout as layout

ops = torch.ops.secant_ext
SIZES = [3, 4100, 257, 1]
STAT_KW = dict(momentum=0.9, nesterov=True, weight_decay=0.01)


def _calls(dtype):
    """(op name, args, kwargs, indices of the mutated list/tensor arguments) for every op the
    step calls, on fresh inputs (the same for every call of this function)."""
    inp = make_inputs(SIZES, dtype, seed=3)
    x, s, g, g_plus, m = inp["x"], inp["s"], inp["g"], inp["g_plus"], inp["m"]
    out = [torch.zeros_like(t) for t in x]
    u = rand_list(SIZES, dtype, seed=5)
    v = [t.abs() for t in rand_list(SIZES, dtype, seed=6)]
    avg = rand_list(SIZES, dtype, seed=7)
    state = make_state(taken=2, ready=True)
    table = torch.tensor([[0.5, 2.0, 3.0, 2.5], [0.25, 1.0, 1.5, 1.25]], dtype=torch.float64)
    sign_table = torch.cat([table, torch.full((2, len(SIZES)), 0.5, dtype=torch.float64)], 1)
    adam_table = torch.tensor([[0.5, 2.0, 3.0, 2.5, 1.0]], dtype=torch.float64)
    adam = dict(beta1=0.9, beta2=0.999)
    return [
        ("lookahead", (x, s, out), {}, [2]),
        ("lookahead_inplace", (x, s, out), {}, [0, 2]),
        ("restore", (x, avg), {}, [0]),
        ("average", (avg, x, state), {}, [0]),
        ("secant_stats", (s, g_plus, g, x, m, state),
         dict(STAT_KW, sign_mode=layout.SIGN_SCALED), []),
        ("secant_stats", (s, g_plus, [], [], [], state),
         dict(momentum=0.0, nesterov=False, weight_decay=0.0, sign_mode=layout.SIGN_NONE), []),
        ("secant_alpha", (table, state), dict(rule=layout.RULES["secant"], safeguard=True), [1]),
        ("secant_alpha", (table, state),
         dict(rule=layout.RULES["secant"], safeguard=False, measure=False), [1]),
        ("update", (x, g, m, sign_table, state), dict(STAT_KW, sign_mode=layout.SIGN_SCALED),
         [0, 2]),
        ("update", (x, g, [], table, state),
         dict(momentum=0.0, nesterov=False, weight_decay=0.0, sign_mode=layout.SIGN_NONE), [0]),
        ("adam_stats", (u, g_plus, s, g, state), {}, []),
        ("adam_alpha", (adam_table, state),
         dict(adam, ema=0.9, growth=2.0, measure=True, record=True), [1]),
        ("adam_update", (x, g, m, v, u, avg, state), dict(adam, eps=1e-8, weight_decay=0.01),
         [0, 2, 3, 4, 5]),
        ("adam_previous_step", (x, m, v, u, state), dict(eps=1e-8, weight_decay=0.01), [3]),
    ]


def _run(fn, args, kwargs, mutated):
    """fn on copies of the arguments: its result and the mutated arguments afterwards."""
    args = [clones(a) if isinstance(a, list) else a.clone() for a in args]
    result = fn(*args, **kwargs)
    return result, [args[i] for i in mutated]


def _same(what, a, b):
    (res_a, mut_a), (res_b, mut_b) = a, b
    assert (res_a is None) == (res_b is None), what
    if res_a is not None:
        assert_bitwise(f"{what}: result", res_a, res_b)
    for i, (ta, tb) in enumerate(zip(mut_a, mut_b)):
        if isinstance(ta, list):
            assert_bitwise_lists(f"{what}: mutated argument {i}", ta, tb)
        else:
            assert_bitwise(f"{what}: mutated argument {i}", ta, tb)


def test_the_cpp_backend_calls_the_direct_functions():
    backend = _backends.resolve("cpp", torch.device("cpu"))
    for phase in _backends.PHASES:
        assert getattr(backend, phase) is getattr(_C, phase), phase


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_same_bits_as_the_op(dtype):
    with torch.no_grad():
        for k, (name, args, kwargs, mutated) in enumerate(_calls(dtype)):
            _same(f"{name} #{k}", _run(getattr(_C, name), args, kwargs, mutated),
                  _run(getattr(ops, name), args, kwargs, mutated))


def test_positional_and_keyword_arguments_as_the_op_takes_them():
    (_, (x, s, out), _, _) = _calls(torch.float32)[0]
    with torch.no_grad():
        expected = _run(ops.lookahead, (x, s, out), {}, [2])
        got = _run(lambda x, s, out: _C.lookahead(x, out=out, s=s), (x, s, out), {}, [2])
        _same("keywords", got, expected)
        got = _run(lambda *a: _C.lookahead(*[tuple(t) for t in a]), (x, s, out), {}, [2])
        _same("tuples", got, expected)


class _Seen(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _update_call():
    name, args, kwargs, mutated = _calls(torch.float32)[9]
    assert name == "update"
    return args, kwargs, mutated


def test_a_dispatch_mode_sees_the_op():
    args, kwargs, mutated = _update_call()
    with torch.no_grad():
        expected = _run(ops.update, args, kwargs, mutated)
        with _Seen() as seen:
            got = _run(_C.update, args, kwargs, mutated)
    assert "secant_ext.update.default" in seen.ops
    _same("under a dispatch mode", got, expected)


def test_a_torch_function_mode_sees_the_op():
    seen = []

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    args, kwargs, mutated = _update_call()
    with torch.no_grad():
        expected = _run(ops.update, args, kwargs, mutated)
        with Mode():
            got = _run(_C.update, args, kwargs, mutated)
    assert any("update" in str(f) for f in seen), seen
    _same("under a torch function mode", got, expected)


def test_a_tensor_subclass_goes_to_the_op():
    seen = []

    class Tracked(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            seen.append(func)
            return super().__torch_function__(func, types, args, kwargs)

    args, kwargs, mutated = _update_call()
    with torch.no_grad():
        expected = _run(ops.update, args, kwargs, mutated)
        x, g, m, table, state = args
        sub = [g[0].as_subclass(Tracked)] + g[1:]
        got = _run(_C.update, (x, sub, m, table, state), kwargs, mutated)
    assert any("update" in str(f) for f in seen), seen
    _same("subclass gradient", got, expected)


def test_a_negative_view_is_read_as_its_values():
    # A negative view's storage holds -g; the dispatcher's fallback hands the kernel g.
    args, kwargs, mutated = _update_call()
    x, g, m, table, state = args
    with torch.no_grad():
        expected = _run(ops.update, (x, [t.neg() for t in g], m, table, state), kwargs, mutated)
        neg_views = [torch._neg_view(t) for t in g]
        assert neg_views[0].is_neg()
        got = _run(_C.update, (x, neg_views, m, table, state), kwargs, mutated)
    _same("negative view", got, expected)


def test_grad_mode_on_goes_to_the_op():
    args, kwargs, mutated = _update_call()
    with torch.no_grad():
        expected = _run(ops.update, args, kwargs, mutated)
    with torch.enable_grad(), _Seen() as seen:
        got = _run(_C.update, args, kwargs, mutated)
    assert "secant_ext.update.default" in seen.ops
    _same("grad mode on", got, expected)


def _error_of(fn, *args, **kwargs):
    with torch.no_grad(), pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return type(info.value), str(info.value).split("\n")[0]


@pytest.mark.parametrize("case", ["unknown keyword", "missing keyword", "int for a bool",
                                  "shape mismatch", "empty lists", "bad rule"])
def test_errors_are_the_ops(case):
    args, kwargs, _ = _update_call()
    x, g, m, table, state = args
    name, call_args, call_kwargs = {
        "unknown keyword": ("update", args, dict(kwargs, lr=1.0)),
        "missing keyword": ("update", args, {k: v for k, v in kwargs.items() if k != "momentum"}),
        "int for a bool": ("update", args, dict(kwargs, nesterov=1)),
        "shape mismatch": ("update", (x, g[::-1], m, table, state), kwargs),
        "empty lists": ("lookahead", ([], [], []), {}),
        "bad rule": ("secant_alpha", (table, state), dict(rule=7, safeguard=True)),
    }[case]
    try:
        with torch.no_grad():
            getattr(ops, name)(*clones_of(call_args), **call_kwargs)
    except Exception:
        assert _error_of(getattr(_C, name), *clones_of(call_args), **call_kwargs) == \
            _error_of(getattr(ops, name), *clones_of(call_args), **call_kwargs)
    else:  # the op takes it (an int for a bool): the direct call gives the same bits
        mutated = [0] if name == "update" else []
        with torch.no_grad():
            _same(case, _run(getattr(_C, name), call_args, call_kwargs, mutated),
                  _run(getattr(ops, name), call_args, call_kwargs, mutated))


def clones_of(args):
    return [clones(a) if isinstance(a, list) else a.clone() for a in args]


def test_the_profiler_records_the_op_by_name():
    args, kwargs, _ = _update_call()
    with torch.no_grad(), torch.profiler.profile(activities=[
            torch.profiler.ProfilerActivity.CPU]) as prof:
        _C.update(*clones_of(args), **kwargs)
    assert "secant_ext::update" in {e.key for e in prof.key_averages()}


def test_a_call_before_the_ops_are_defined_says_so():
    """The direct calls read their parameters from the ops' registered schemas: called
    before ``_ops.load_cpp()`` defined them (the extension imported on its own), a call
    raises naming the op and what defines it, and works once they are defined."""
    import subprocess
    import sys
    code = (
        "import torch\n"
        "torch.set_grad_enabled(False)\n"  # (else the call goes to the op in any case)
        "import secant_ext._C as C\n"
        "x, b = [torch.zeros(3)], [torch.ones(3)]\n"
        "try:\n"
        "    C.restore(x, b)\n"
        "except RuntimeError as e:\n"
        "    print('raised:', str(e).splitlines()[0])\n"
        "from secant_ext import _ops\n"
        "_ops.load_cpp()\n"
        "C.restore(x, b)\n"
        "print('then:', x[0].tolist())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "raised: secant_ext::restore is not defined" in proc.stdout, proc.stdout
    assert "then: [1.0, 1.0, 1.0]" in proc.stdout, proc.stdout
