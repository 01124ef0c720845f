"""The implementations the benchmarks compare, and the floors they are measured against.

Each implementation is a namespace with the four phase functions of
``secant_ext.reference`` (same signatures) plus ``step``, the optimizer-side step with
the gradients given: lookahead, stats, alpha, update. Without a probe closure the probe
gradient ``s`` is the training gradient ``g``, as in ``SecantOptimizer.step``.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional

import torch

from secant_ext import _backends, _layout
from secant_ext import reference as _reference

import foreach_reference as _foreach
from cases import MOMENTUM, StepTensors

RULE = _layout.RULES["secant"]


def phase_step(ns, x, g, g_plus, out, m, state, momentum: float) -> None:
    """One optimizer-side step of A-SGD (``m`` empty) or A-SGDM, gradients given."""
    ns.lookahead(x, g, out)
    table = ns.secant_stats(g, g_plus, [], x, m, state, momentum=momentum, nesterov=False,
                            weight_decay=0.0, sign_mode=_layout.SIGN_NONE)
    ns.secant_alpha(table, state, rule=RULE, safeguard=True)
    ns.update(x, g, m, table, state, momentum=momentum, nesterov=False, weight_decay=0.0,
              sign_mode=_layout.SIGN_NONE)


def _namespace(name: str, module) -> SimpleNamespace:
    ns = SimpleNamespace(name=name, lookahead=module.lookahead,
                         secant_stats=module.secant_stats,
                         secant_alpha=module.secant_alpha, update=module.update)
    ns.step = functools.partial(phase_step, ns)
    return ns


def _reference_step(x, g, g_plus, out, m, state, momentum: float) -> None:
    phase_step(_reference, x, g, g_plus, out, m, state, momentum)


def _compiled_namespace() -> SimpleNamespace:
    """``torch.compile`` of each reference phase and of the whole reference step.

    ``dynamic=True``: one compilation per function, dtype and tensor count serves every
    size, so each is compiled once. (Compiling is slow on 2 cores: about 10 s for one
    tensor, minutes for a 148-tensor list.) ``fullgraph=True``: a graph break fails
    loudly instead of timing a half-eager function. The recompile limit is raised so
    that no specialization silently falls back to eager."""
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    compile_ = functools.partial(torch.compile, dynamic=True, fullgraph=True)
    return SimpleNamespace(
        name="compile", lookahead=compile_(_reference.lookahead),
        secant_stats=compile_(_reference.secant_stats),
        secant_alpha=compile_(_reference.secant_alpha), update=compile_(_reference.update),
        step=compile_(_reference_step))


def implementations(names: List[str]) -> Dict[str, SimpleNamespace]:
    """The requested implementations that exist here; the missing ones map to the reason,
    as a string, so the table can say why a column is empty."""
    out: Dict[str, object] = {}
    for name in names:
        if name == "eager":
            out[name] = _namespace("eager", _reference)
        elif name == "foreach":
            out[name] = _namespace("foreach", _foreach)
        elif name == "compile":
            out[name] = _compiled_namespace()
        elif name == "cpp":
            if _backends.cpp_available():
                cpp = _backends._cpp()
                out[name] = _namespace("cpp", cpp)
            else:
                out[name] = ("the C++ extension secant_ext._C is not built (pip install "
                             "--no-build-isolation -e .)")
        else:
            raise ValueError(f"unknown implementation {name!r}; choose from "
                             "eager, foreach, compile, cpp")
    return out


# --- the calls the benchmarks time ----------------------------------------------------
def phase_call(ns, phase: str, method: str, T: StepTensors, state: torch.Tensor,
               table: Optional[torch.Tensor]) -> Callable[[], object]:
    """A no-argument callable running ``phase`` of ``ns`` on ``T``; ``table`` is a stats
    table from this implementation (what alpha and update read)."""
    mu = MOMENTUM[method]
    m = T.m if mu else []
    if phase == "lookahead":
        return lambda: ns.lookahead(T.x, T.g, T.out)
    if phase == "secant_stats":
        return lambda: ns.secant_stats(T.g, T.g_plus, [], T.x, m, state, momentum=mu,
                                       nesterov=False, weight_decay=0.0,
                                       sign_mode=_layout.SIGN_NONE)
    if phase == "secant_alpha":
        # alpha updates the state in place; the update that follows reads it
        return lambda: ns.secant_alpha(table, state, rule=RULE, safeguard=True)
    if phase == "update":
        return lambda: ns.update(T.x, T.g, m, table, state, momentum=mu, nesterov=False,
                                 weight_decay=0.0, sign_mode=_layout.SIGN_NONE)
    if phase == "step":
        return lambda: ns.step(T.x, T.g, T.g_plus, T.out, m, state, mu)
    raise ValueError(f"unknown phase {phase!r}")


def copy_call(nbytes: int) -> Callable[[], object]:
    """``dst.copy_(src)`` moving ``nbytes`` in all (half read, half written)."""
    n = max(nbytes // 8, 1)
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.zeros(n, dtype=torch.float32)
    return lambda: dst.copy_(src)


def sgd_call(T: StepTensors, method: str, kind: str) -> Callable[[], object]:
    """``torch.optim.SGD`` stepping ``T.x`` with gradient ``T.g``: the update's floor.

    For A-SGDM, momentum 0.9 with dampening 0.9 is the same average ``m <- 0.9 m + 0.1 g``.
    Raises what torch raises where ``kind`` ("foreach" or "fused") is not supported."""
    params = [x.detach() for x in T.x]  # share storage with T.x: the same memory
    for p, g in zip(params, T.g):
        p.grad = g
    mu = MOMENTUM[method]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=mu, dampening=mu,
                          **{kind: True})
    return opt.step
