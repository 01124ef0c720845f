"""A research prototype: Adam's direction with a step size measured by a secant, looking back.

``SecantAdamPrototype`` steps along Adam's direction ``d = m_hat / (sqrt(v_hat) + eps)``
(betas 0.9, 0.999, decoupled weight decay as AdamW has it) with a step size ``eta`` that no
user sets: it is measured along the direction the previous step took.

On a measuring step (each of the first ``warmup`` steps from the second on, then every
``every``-th), the training batch ``B_t`` of the step is evaluated once more, at
``x_t + eta d_(t-1)`` (the previous point, up to weight decay and rounding):

- ``b = <g_t(x_t), d_(t-1)>``: the descent still left along the previous direction at
  ``x_t``, measured on a batch drawn independently of that direction;
- ``a = <d_(t-1), g_t(x_t + eta d_(t-1)) - g_t(x_t)> / eta``: the curvature along it, a
  secant on one batch.

``A`` and ``B`` are exponential moving averages (weight ``ema``) of ``a`` and ``b``; while
both are positive, ``eta <- min(B / A, growth * eta)``, the greedy (Newton) step along the
direction for the averaged, expected loss, allowed to grow by at most ``growth`` per
measurement, from ``eta0``. Otherwise ``eta`` is kept. A measuring step costs 2 gradient
evaluations, any other step 1; the closure is the only thing the user gives.

With ``average=True`` the optimizer keeps ``avg <- avg + c (x - avg)``, ``c = max(1/t,
avg_floor)``, and ``eval()`` puts the average into the parameters (``train()`` puts the
iterate back, bit for bit), the convention of the package's ``average=True``.

The lookahead is exact: the parameters are copied to a saved clone before and copied back
after it (never ``x + s - s``), the random-number state of the training evaluation is
replayed for it (dropout masks match), and ``p.grad`` holds the training batch's gradient
at ``x_t`` when ``step`` returns.

Pure PyTorch, a prototype for measuring: the scalar rule runs on the host (one sync per
measuring step), and nothing is fused. ``last_stats`` holds the step's statistics as
tensors (``alpha`` = the step size applied, ``eta`` the same, ``a``, ``b``, ``measured``,
``grad_norm``, the averages ``A``, ``B``; ``clipped``/``skipped`` are always 0) so the
experiments' ``StepHistory`` records it like the Secant optimizers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from secant_ext._lookahead import RngState


@dataclass
class SecantAdamStats:
    alpha: torch.Tensor      # the step size applied on this step (== eta)
    eta: torch.Tensor
    a: torch.Tensor          # curvature measured on this step (nan when not measuring)
    b: torch.Tensor          # <g_t, d_(t-1)> (nan when not measuring)
    A: torch.Tensor          # EMA of a
    B: torch.Tensor          # EMA of b
    measured: torch.Tensor   # 1 on a measuring step
    updated: torch.Tensor    # 1 when eta was updated from B / A on this step
    grad_norm: torch.Tensor  # of the training batch's gradient at x_t
    clipped: torch.Tensor    # always 0 (no clipping): for the experiments' tables
    skipped: torch.Tensor    # always 0


def _t(v: float) -> torch.Tensor:
    return torch.tensor(float(v), dtype=torch.float64)


class SecantAdamPrototype(torch.optim.Optimizer):
    """Adam's direction, a step size from a look-back secant measurement; see the module.

    Args:
        betas: Adam's moment decays.
        eps: added to ``sqrt(v_hat)``.
        weight_decay: decoupled, ``x <- x - eta * weight_decay * x`` (AdamW's form).
        ema: weight of the moving averages of ``a`` and ``b``.
        growth: the largest factor by which one measurement may raise ``eta``.
        eta0: the step size before the first update.
        warmup: every step up to this one measures; afterwards every ``every``-th.
        every: measurement period after the warm-up.
        average: keep the averaged iterate for ``eval()``.
        avg_floor: the smallest averaging weight ``c``.
        bias_correction: Adam's bias corrections of ``m`` and ``v``.
        anchor: ``"current"`` (the default, the lead as described): ``b`` is measured at
            ``x_t``; ``"previous"``: at the look-back point, ``b' = <g_t(x_t + eta
            d_(t-1)), d_(t-1)> = b + eta a``, so ``B / A`` is the greedy step from the
            previous point (a lever).
        measure: False never measures: Adam at the constant step ``eta0`` with the same
            averaging (a control for what the averaging alone gives).
    """

    # what the experiments' StepHistory records per step
    HISTORY_FIELDS = ("alpha", "grad_norm", "clipped", "skipped", "a", "b", "A", "B",
                      "measured", "updated")

    def __init__(self, params, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, ema: float = 0.98, growth: float = 1.1,
                 eta0: float = 1e-5, warmup: int = 100, every: int = 8,
                 average: bool = True, avg_floor: float = 0.01,
                 bias_correction: bool = True, anchor: str = "current",
                 measure: bool = True):
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        if growth < 1.0:
            raise ValueError(f"growth must be >= 1, got {growth}")
        if eta0 <= 0.0:
            raise ValueError(f"eta0 must be > 0, got {eta0}")
        if anchor not in ("current", "previous"):
            raise ValueError(f"anchor must be 'current' or 'previous', got {anchor!r}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        defaults = dict(betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.ema, self.growth, self.warmup, self.every = ema, growth, warmup, every
        self.average, self.avg_floor = average, avg_floor
        self.bias_correction = bias_correction
        self.anchor = anchor
        self.measure = measure
        self.eta = float(eta0)
        self.A = 0.0
        self.B = 0.0
        self.t = 0  # steps taken
        self.training = True
        nan = _t(float("nan"))
        self.last_stats = SecantAdamStats(_t(eta0), _t(eta0), nan, nan, _t(0), _t(0),
                                          _t(0), _t(0), nan, _t(0), _t(0))

    # -- helpers ------------------------------------------------------------------------------
    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def measures(self, t: int) -> bool:
        """Whether step ``t`` (1-based) measures: it needs a previous direction."""
        return self.measure and t >= 2 and (t <= self.warmup or t % self.every == 0)

    # -- eval()/train(): the averaged iterate ------------------------------------------------
    @torch.no_grad()
    def eval(self) -> None:
        """Put the averaged iterate into the parameters (no-op without ``average`` or
        before the first step)."""
        if not self.training:
            return
        self.training = False
        if not self.average:
            return
        for p in self._params():
            st = self.state.get(p, {})
            if "avg" in st:
                st["x_train"] = p.detach().clone()
                p.copy_(st["avg"])

    @torch.no_grad()
    def train(self) -> None:
        """Put the iterate back, bit for bit."""
        if self.training:
            return
        self.training = True
        for p in self._params():
            st = self.state.get(p, {})
            x = st.pop("x_train", None)
            if x is not None:
                p.copy_(x)

    # -- the step -----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Callable] = None, probe_closure: Optional[Callable] = None):
        if probe_closure is not None:
            raise ValueError("SecantAdamPrototype takes no probe closure: it measures on the "
                             "training batch, looking back")
        if closure is None:
            raise RuntimeError("SecantAdamPrototype.step needs a closure (it evaluates the "
                               "training batch a second time on measuring steps)")
        if not self.training:
            raise RuntimeError("step() in eval() mode: call train() first")
        params = self._params()
        rng = RngState({p.device for p in params})
        with torch.enable_grad():
            loss = closure()
        self.t += 1
        t = self.t
        live = [p for p in params if p.grad is not None]
        grads = [p.grad.detach().clone() for p in live]
        gnorm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        measured = self.measures(t) and all("d_prev" in self.state[p] for p in live)
        a = b = float("nan")
        updated = False
        eta_prev = self.eta
        if measured:
            d_prev = [self.state[p]["d_prev"] for p in live]
            b = sum(float((g.double() * d.double()).sum()) for g, d in zip(grads, d_prev))
            saved = [p.detach().clone() for p in live]
            try:
                for p, d in zip(live, d_prev):
                    p.add_(d, alpha=eta_prev)
                rng.restore()
                with torch.enable_grad():
                    closure()
                g_plus = [p.grad.detach().clone() if p.grad is not None
                          else torch.zeros_like(p) for p in live]
            finally:
                for p, x, g in zip(live, saved, grads):
                    p.copy_(x)
                    p.grad = g
            dg = sum(float((d.double() * gp.double()).sum()) for d, gp in zip(d_prev, g_plus))
            a = (dg - b) / eta_prev
            # "previous": the descent along d_(t-1) at the previous point x_t + eta d_(t-1),
            # so B / A estimates the whole greedy step from there, not the step still left
            b_rule = dg if self.anchor == "previous" else b
            self.A = self.ema * self.A + (1.0 - self.ema) * a
            self.B = self.ema * self.B + (1.0 - self.ema) * b_rule
            if self.A > 0.0 and self.B > 0.0:
                self.eta = min(self.B / self.A, self.growth * eta_prev)
                updated = True
        eta = self.eta
        c = max(1.0 / t, self.avg_floor)
        for group in self.param_groups:
            b1, b2 = group["betas"]
            eps, wd = group["eps"], group["weight_decay"]
            bc1 = 1.0 - b1 ** t if self.bias_correction else 1.0
            bc2 = 1.0 - b2 ** t if self.bias_correction else 1.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if "m" not in st:
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                m, v = st["m"], st["v"]
                m.mul_(b1).add_(g, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                d = (m / bc1) / ((v / bc2).sqrt_().add_(eps))
                if wd:
                    p.mul_(1.0 - eta * wd)
                p.add_(d, alpha=-eta)
                st["d_prev"] = d
                if self.average:
                    if "avg" not in st:
                        st["avg"] = p.detach().clone()
                    else:
                        st["avg"].add_(p - st["avg"], alpha=c)
        nan = float("nan")
        self.last_stats = SecantAdamStats(
            _t(eta), _t(eta), _t(a if measured else nan), _t(b if measured else nan),
            _t(self.A), _t(self.B), _t(float(measured)), _t(float(updated)), _t(gnorm),
            _t(0), _t(0))
        return loss

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self):
        sd = super().state_dict()
        sd["secant_adam"] = dict(eta=self.eta, A=self.A, B=self.B, t=self.t)
        return sd

    def load_state_dict(self, state_dict):
        extra = dict(state_dict).pop("secant_adam", None)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "secant_adam"})
        if extra:
            self.eta, self.A, self.B, self.t = (extra["eta"], extra["A"], extra["B"],
                                                extra["t"])
