"""The specification in code: the three phases of a step in eager PyTorch.

Each function takes the same lists as the C++ and Triton ops of the same name and is the
answer they are tested against. Arithmetic happens in the tensors' own dtype (so run on
float64 copies this is the exact answer, and run on bf16 it shows the error a naive
low-precision implementation makes); sums accumulate in float32, or float64 for float64
tensors. No host synchronization: branches on device values are ``torch.where``.

Notation (docs/ALGORITHM.md): ``x`` parameters, ``s`` the probe gradient at x, ``g_plus`` the
probe gradient at ``x + s``, ``y = g_plus - s``, ``g`` the training gradient, ``m`` the
momentum buffers, ``state`` the group state of ``_layout``.
"""
from __future__ import annotations

from typing import List, Sequence

import torch

from . import _layout

Tensors = Sequence[torch.Tensor]


def lookahead(x: Tensors, s: Tensors, out: Tensors) -> None:
    """``out = x + s``: the lookahead point. ``x`` is left untouched, so restoring it is exact."""
    for xi, si, oi in zip(x, s, out):
        torch.add(xi, si, out=oi)


def lookahead_inplace(x: Tensors, s: Tensors, backup: Tensors) -> None:
    """``backup = x`` (its bits), then ``x = x + s`` in place: the lookahead point in the
    parameters' own storage, for code that reads it there (FSDP2, captured graphs)."""
    for xi, si, bi in zip(x, s, backup):
        bi.copy_(xi)
        xi.add_(si)


def restore(x: Tensors, backup: Tensors) -> None:
    """``x = backup``: exact, where subtracting ``s`` again would not be."""
    for xi, bi in zip(x, backup):
        xi.copy_(bi)


def average(avg: Tensors, x: Tensors, state: torch.Tensor) -> None:
    """``avg <- avg + w (x - avg)`` with ``w = state[AVG_WEIGHT]``, after an applied update
    (nothing on a skipped step): the averaged iterate of ``average=True``."""
    skip = state[_layout.LAST_SKIPPED] != 0
    for ai, xi in zip(avg, x):
        w = state[_layout.AVG_WEIGHT].to(ai.dtype)
        ai.copy_(torch.where(skip, ai, ai + w * (xi - ai)))


def _direction(g, x, m, mom_ready, momentum, nesterov, weight_decay):
    """The update direction of one tensor and its new momentum buffer (None without momentum)."""
    if weight_decay != 0:
        g = g + weight_decay * x
    if m is None:
        return g, None
    m_new = torch.where(mom_ready, momentum * m + (1 - momentum) * g, g)
    d = momentum * m_new + (1 - momentum) * g if nesterov else m_new
    return d, m_new


_SIGN_MODES = (_layout.SIGN_NONE, _layout.SIGN_SCALED, _layout.SIGN_UNSCALED)


def check_sign_mode(sign_mode: int) -> None:
    """ValueError unless ``sign_mode`` is one of the sign modes of ``_layout`` (the Triton
    launchers call this too)."""
    if sign_mode not in _SIGN_MODES:
        raise ValueError(f"unknown sign_mode {sign_mode!r}; expected SIGN_NONE "
                         f"({_layout.SIGN_NONE}), SIGN_SCALED ({_layout.SIGN_SCALED}) or "
                         f"SIGN_UNSCALED ({_layout.SIGN_UNSCALED}) of secant_ext._layout")


def secant_stats(s: Tensors, g_plus: Tensors, g: Tensors, x: Tensors, m: Tensors,
                 state: torch.Tensor, *, momentum: float, nesterov: bool,
                 weight_decay: float, sign_mode: int) -> torch.Tensor:
    """The ``[1, K]`` table of sums: ``<s,y>, |s|^2, |y|^2, |g|^2`` and, for the scaled
    sign step (``sign_mode == SIGN_SCALED``), ``sum |v_i|`` of each tensor's direction.
    ``g`` empty means ``g = s``; ``m`` empty means no momentum."""
    check_sign_mode(sign_mode)
    sign = sign_mode == _layout.SIGN_SCALED
    dtype = s[0].dtype if len(s) else torch.float32
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    dev = s[0].device if len(s) else state.device
    g = g if len(g) else s
    dot = torch.zeros((), dtype=acc, device=dev)
    s_sq, y_sq, g_sq = dot.clone(), dot.clone(), dot.clone()
    abs_sums: List[torch.Tensor] = []
    mom_ready = state[_layout.TAKEN] >= 1
    for i, (si, gpi, gi) in enumerate(zip(s, g_plus, g)):
        yi = gpi - si
        dot += (si * yi).sum(dtype=acc)
        s_sq += (si * si).sum(dtype=acc)
        y_sq += (yi * yi).sum(dtype=acc)
        g_sq += (gi * gi).sum(dtype=acc)
        if sign:
            mi = m[i] if len(m) else None
            v, _ = _direction(gi, x[i], mi, mom_ready, momentum, nesterov, weight_decay)
            abs_sums.append(v.abs().sum(dtype=acc))
    return torch.stack([dot, s_sq, y_sq, g_sq, *abs_sums]).unsqueeze(0)


def _count_step(new: torch.Tensor, finite: torch.Tensor, g_sq: torch.Tensor) -> None:
    """What every step-size phase counts: the step, taken or skipped (a non-finite sum),
    and the training gradient's ``|g|^2``."""
    new[_layout.STEP] += 1
    new[_layout.TAKEN] += finite.to(torch.float64)
    new[_layout.SKIPPED] += (~finite).to(torch.float64)
    new[_layout.LAST_SKIPPED] = (~finite).to(torch.float64)
    new[_layout.G_SQ] = g_sq


def _finish_step_size(new: torch.Tensor, state: torch.Tensor, g_sq: torch.Tensor,
                      eta: torch.Tensor) -> torch.Tensor:
    """The end every step-size phase shares, after ``_count_step``: the applied step
    ``eta * lr * clip`` into ``STEP_SIZE`` (returned), and the averaged iterate's weight.

    ``clip`` is torch's ``clip_grad_norm_`` coefficient over the whole model (the other
    param groups' ``|g|^2`` added; 0 with one group); ``eta`` is measured on the unclipped
    gradients. The weight is ``1 / steps taken``, floored at ``AVG_FLOOR``."""
    clip_g_sq = g_sq + state[_layout.CLIP_G_SQ_OTHERS]
    clip = state[_layout.MAX_GRAD_NORM] / (clip_g_sq.sqrt() + 1e-6)
    clip = torch.where(clip < 1, clip, torch.ones_like(clip))  # NaN and inf / inf give 1
    step = eta * state[_layout.LR] * clip
    new[_layout.STEP_SIZE] = step
    taken = new[_layout.TAKEN]
    weight = torch.where(taken > 0, 1 / taken, torch.ones_like(taken))
    new[_layout.AVG_WEIGHT] = torch.where(weight > state[_layout.AVG_FLOOR], weight,
                                          state[_layout.AVG_FLOOR])
    return step


def secant_alpha(stats: torch.Tensor, state: torch.Tensor, *, rule: int,
                 safeguard: bool, measure: bool = True) -> None:
    """Sum the stats table (float64, row order), apply the rule, update ``state`` in place.

    secant:     alpha = b / (a + b)     (safeguard: a clipped at 0, so alpha in (0, 1])
    steffensen: alpha = b / a           (safeguard: a <= 0 keeps the previous alpha)
    bb2:        alpha = a / (c + b)     (safeguard: a <= 0 keeps the previous alpha)
    b == 0 keeps the previous alpha; a non-finite sum skips the step. ``b > 0`` with
    ``c == 0`` exactly counts a stalled lookahead (the evaluation never saw ``x + s``).

    ``measure=False`` (a step without a lookahead, ``curvature_every`` > 1): the rule is not
    applied; the step uses the bias-corrected EMA of the measured alphas,
    ``ALPHA_EMA / (1 - BETA_POWER)`` (alpha itself before any measurement). A measuring
    step that is not skipped moves that EMA: ``ALPHA_EMA <- beta ALPHA_EMA + (1 - beta) alpha``.
    """
    sums = stats.to(torch.float64).sum(dim=0)
    a, b, c = sums[_layout.COL_DOT], sums[_layout.COL_S_SQ], sums[_layout.COL_Y_SQ]
    prev = state[_layout.ALPHA]
    finite = torch.isfinite(sums[: _layout.NUM_STATS]).all()
    clipped = torch.zeros((), dtype=torch.bool, device=state.device)
    if rule == _layout.RULES["secant"]:
        if safeguard:
            clipped = a < 0
            a = a.clamp(min=0)
        alpha = b / (a + b)
    elif rule == _layout.RULES["steffensen"]:
        if safeguard:
            clipped = a <= 0
        alpha = b / a
    elif rule == _layout.RULES["bb2"]:
        if safeguard:
            clipped = a <= 0
        alpha = a / (c + b)
    else:
        raise ValueError(f"unknown rule code {rule}")
    keep = (b == 0) | (clipped & (rule != _layout.RULES["secant"]))
    alpha = torch.where(keep, prev, alpha)
    clipped = clipped & finite & (b != 0) & measure

    new = state.clone()
    _count_step(new, finite, sums[_layout.COL_G_SQ])
    new[_layout.MOMENTUM_READY] = (state[_layout.TAKEN] >= 1).to(torch.float64)
    new[_layout.LAST_CLIPPED] = clipped.to(torch.float64)
    new[_layout.LAST_MEASURED] = float(measure)
    if measure:
        new[_layout.ALPHA] = torch.where(finite, alpha, prev)
        new[_layout.CLIPPED] += clipped.to(torch.float64)
        new[_layout.DOT], new[_layout.S_SQ] = sums[_layout.COL_DOT], sums[_layout.COL_S_SQ]
        new[_layout.Y_SQ] = sums[_layout.COL_Y_SQ]
        new[_layout.STALLED] += ((b > 0) & (c == 0)).to(torch.float64)
        beta = state[_layout.CARRY_BETA]  # the carry for the steps that do not measure
        ema = beta * state[_layout.ALPHA_EMA] + (1 - beta) * new[_layout.ALPHA]
        new[_layout.ALPHA_EMA] = torch.where(finite, ema, state[_layout.ALPHA_EMA])
        new[_layout.BETA_POWER] = torch.where(finite, state[_layout.BETA_POWER] * beta,
                                              state[_layout.BETA_POWER])
        new[_layout.MEASURED] += finite.to(torch.float64)
        step = new[_layout.ALPHA]
    else:
        carry = state[_layout.ALPHA_EMA] / (1 - state[_layout.BETA_POWER])
        step = torch.where(state[_layout.MEASURED] > 0, carry, state[_layout.ALPHA])
    _finish_step_size(new, state, sums[_layout.COL_G_SQ], step)
    state.copy_(new)


def update(x: Tensors, g: Tensors, m: Tensors, stats: torch.Tensor, state: torch.Tensor, *,
           momentum: float, nesterov: bool, weight_decay: float, sign_mode: int) -> None:
    """``x <- x - alpha * d`` (or the sign step), momentum written back; nothing changes when
    the group state says the step was skipped. ``stats`` is this bucket's table (its sign
    columns give ``mean |v|``)."""
    check_sign_mode(sign_mode)
    skip = state[_layout.LAST_SKIPPED] != 0
    mom_ready = state[_layout.MOMENTUM_READY] != 0
    abs_sums = stats.to(torch.float64).sum(dim=0)[_layout.NUM_STATS:]
    for i, (xi, gi) in enumerate(zip(x, g)):
        alpha = state[_layout.STEP_SIZE].to(xi.dtype)  # alpha * lr * clip
        mi = m[i] if len(m) else None
        d, m_new = _direction(gi, xi, mi, mom_ready, momentum, nesterov, weight_decay)
        if sign_mode == _layout.SIGN_SCALED:
            scale = (abs_sums[i] / max(xi.numel(), 1)).to(xi.dtype)
            step = alpha * scale * torch.sign(d)
        elif sign_mode == _layout.SIGN_UNSCALED:
            step = alpha * torch.sign(d)
        else:
            step = alpha * d
        xi.copy_(torch.where(skip, xi, xi - step))
        if mi is not None:
            mi.copy_(torch.where(skip, mi, m_new))


# --- SecantAdam (docs/ALGORITHM.md, 'SecantAdam') ----------------------------------------
# u: the previous step x_(t-1) - x_t (kept only before a measuring step), s: the closure's
# gradient at x_t, g_plus: the same closure's gradient at x_t + u, g: the training gradient
# (s plus earlier micro-batches), m and v: Adam's moments.

def adam_stats(u: Tensors, g_plus: Tensors, s: Tensors, g: Tensors,
               state: torch.Tensor) -> torch.Tensor:
    """The ``[1, NUM_STATS]`` table of sums ``<u, y>, <u, s>, |y|^2, |g|^2`` with
    ``y = g_plus - s``. ``g`` empty means ``g = s``; ``u`` empty (a step that does not
    measure) means only ``|g|^2``, the other columns 0."""
    dtype = s[0].dtype if len(s) else torch.float32
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    dev = s[0].device if len(s) else state.device
    g = g if len(g) else s
    uy = torch.zeros((), dtype=acc, device=dev)
    us, y_sq, g_sq = uy.clone(), uy.clone(), uy.clone()
    for ui, gpi, si in zip(u, g_plus, s):
        yi = gpi - si
        uy += (ui * yi).sum(dtype=acc)
        us += (ui * si).sum(dtype=acc)
        y_sq += (yi * yi).sum(dtype=acc)
    for gi in g:
        g_sq += (gi * gi).sum(dtype=acc)
    return torch.stack([uy, us, y_sq, g_sq]).unsqueeze(0)


def adam_alpha(stats: torch.Tensor, state: torch.Tensor, *, beta1: float, beta2: float,
               ema: float, growth: float, measure: bool, record: bool) -> None:
    """Sum the stats table (float64, row order), apply SecantAdam's rule, update ``state``.

    A measurement (``measure``, a kept previous step, finite sums) gives, per unit step
    along Adam's direction ``d``, the curvature ``a = <u, y> / scale^2`` and the slope at
    the previous iterate ``c = <u, g_plus> / scale = (<u, y> + <u, s>) / scale``
    (``scale = PREV_STEP_SCALE``, the step size ``u`` was taken with), so ``c / a`` is the
    step along ``d`` from ``x_(t-1)`` to the minimum of the measured quadratic. Both are
    divided by ``n = |c| + scale |a|`` (each measurement weighs the same, however large the
    gradients were when it was taken) and averaged: ``A <- ema A + (1 - ema) a / n``, ``C``
    likewise. Then ``eta <- min(2 C / A, growth * eta)`` while both are positive,
    ``growth * eta`` when only ``C`` is (negative curvature: descent with no minimum in
    sight), and ``eta / growth`` when ``C`` is not (the step went uphill); the last two
    are counted in ``GUARDED``. The step applies ``eta * lr * clip``. ``record``: the update
    keeps this step as the next measurement's ``u``. A non-finite sum skips the step."""
    sums = stats.to(torch.float64).sum(dim=0)
    uy, us, y_sq, g_sq = (sums[k] for k in (_layout.COL_UY, _layout.COL_US,
                                             _layout.COL_Y_SQ, _layout.COL_G_SQ))
    finite = torch.isfinite(sums[: _layout.NUM_STATS]).all()
    scale = state[_layout.PREV_STEP_SCALE]
    valid = finite & (scale > 0) & measure
    a = uy / (scale * scale)
    b = us / scale
    c = (uy + us) / scale
    n = (torch.abs(uy + us) + torch.abs(uy)) / scale
    some = n > 0
    a_n = torch.where(some, a / n, torch.zeros_like(a))
    c_n = torch.where(some, c / n, torch.zeros_like(c))
    big_a = ema * state[_layout.ADAM_A] + (1 - ema) * a_n
    big_c = ema * state[_layout.ADAM_C] + (1 - ema) * c_n
    positive = (big_a > 0) & (big_c > 0)
    prev = state[_layout.ALPHA]
    grown = growth * prev
    ratio = _layout.ADAM_REACH * big_c / big_a
    eta = torch.where(big_c > 0,
                      torch.where(big_a > 0, torch.minimum(ratio, grown), grown),
                      prev / growth)

    new = state.clone()
    _count_step(new, finite, g_sq)
    new[_layout.LAST_MEASURED] = valid.to(torch.float64)
    new[_layout.LAST_GUARDED] = (valid & ~positive).to(torch.float64)
    new[_layout.GUARDED] += (valid & ~positive).to(torch.float64)
    new[_layout.MEASURED] += valid.to(torch.float64)
    new[_layout.ADAM_LAST_A] = torch.where(valid, a, state[_layout.ADAM_LAST_A])
    new[_layout.ADAM_LAST_B] = torch.where(valid, b, state[_layout.ADAM_LAST_B])
    new[_layout.Y_SQ] = torch.where(valid, y_sq, state[_layout.Y_SQ])
    new[_layout.STALLED] += (valid & (y_sq == 0)).to(torch.float64)
    new[_layout.ADAM_A] = torch.where(valid, big_a, state[_layout.ADAM_A])
    new[_layout.ADAM_C] = torch.where(valid, big_c, state[_layout.ADAM_C])
    new[_layout.ALPHA] = torch.where(valid, eta, prev)
    new[_layout.BETA1_POWER] = torch.where(finite, state[_layout.BETA1_POWER] * beta1,
                                           state[_layout.BETA1_POWER])
    new[_layout.BETA2_POWER] = torch.where(finite, state[_layout.BETA2_POWER] * beta2,
                                           state[_layout.BETA2_POWER])
    step = _finish_step_size(new, state, g_sq, new[_layout.ALPHA])
    # the kept previous step: this one when recorded; none after an applied step that is
    # not (x moved away from it); a skipped step leaves x, and so u, as they were
    kept = step if record else torch.zeros_like(step)
    new[_layout.PREV_STEP_SCALE] = torch.where(finite, kept, state[_layout.PREV_STEP_SCALE])
    state.copy_(new)


def _sqrt_rn(t: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root, as the kernels' (IEEE) one: torch's CPU ``sqrt``
    is not (it missed the nearest float32 on 15% of random inputs, measured), but the
    float64 root of a float32, bf16 or fp16 value rounds to the correctly rounded one. For
    float64 tensors this is torch's own ``sqrt`` (within an ulp; the tests budget that)."""
    if t.dtype == torch.float64:
        return t.sqrt()
    return t.to(torch.float64).sqrt().to(t.dtype)


def _adam_direction(m: torch.Tensor, v: torch.Tensor, x: torch.Tensor, state: torch.Tensor,
                    eps: float, weight_decay: float) -> torch.Tensor:
    """``d = (m c1) / (sqrt(v c2) + eps) + weight_decay x`` in ``x``'s dtype, the bias
    corrections' reciprocals formed in float64: ``adam_update``'s direction and
    ``adam_previous_step``'s, in their one order of operations."""
    dt = x.dtype
    c1 = (1 / (1 - state[_layout.BETA1_POWER])).to(dt)
    c2 = (1 / (1 - state[_layout.BETA2_POWER])).to(dt)
    d = (m * c1) / (_sqrt_rn(v * c2) + eps)
    if weight_decay != 0:
        d = d + weight_decay * x
    return d


def adam_previous_step(x: Tensors, m: Tensors, v: Tensors, u: Tensors, state: torch.Tensor, *,
                       eps: float, weight_decay: float) -> None:
    """``u``: the step the last applied ``adam_update`` took, recomputed from what it left
    (so no buffer keeps it between steps). That update moved ``x' -> x = x' - u`` with
    ``u = eta' (d + weight_decay x')``, ``d`` from the moments it wrote (``m``, ``v``, held
    since), the bias corrections of the state and ``eta' = PREV_STEP_SCALE``; with
    ``x' = x + u``::

        u = eta' (d + weight_decay x) / (1 - eta' weight_decay)

    The reciprocal is formed in float64. Without weight decay these are the update's own
    operations on the same values: the same bits as the ``u`` it computed (float32 and
    float64 moments; low-precision moments were rounded when stored). A state with
    ``PREV_STEP_SCALE == 0`` (no step to look back along) gives ``u = 0``."""
    scale = state[_layout.PREV_STEP_SCALE]
    for xi, mi, vi, ui in zip(x, m, v, u):
        step = scale.to(xi.dtype) * _adam_direction(mi, vi, xi, state, eps, weight_decay)
        if weight_decay != 0:
            step = step * (1 / (1 - scale * weight_decay)).to(xi.dtype)
        ui.copy_(step)


def adam_update(x: Tensors, g: Tensors, m: Tensors, v: Tensors, u: Tensors, avg: Tensors,
                state: torch.Tensor, *, beta1: float, beta2: float, eps: float,
                weight_decay: float) -> None:
    """Adam's moments and the step along its direction, with decoupled weight decay::

        m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g g
        d  = (m c1) / (sqrt(v c2) + eps),   c_i = 1 / (1 - beta_i ** (applied steps))
        x <- x - eta (d + weight_decay x)   (eta = STEP_SIZE)

    The bias corrections multiply by their reciprocals (formed in float64), so the one
    division left is the one by the denominator: divisions bound the kernels' speed.

    When ``u`` is given, ``u <- eta (d + weight_decay x)``: the step written out (the tests
    hold ``adam_previous_step`` to it; SecantAdam recomputes it rather than keep it). When
    ``avg`` is given, ``average(avg, x, state)`` on the new ``x`` (in the same pass in the
    kernels). Nothing changes when the group state says the step was
    skipped."""
    skip = state[_layout.LAST_SKIPPED] != 0
    for i, (xi, gi, mi, vi) in enumerate(zip(x, g, m, v)):
        step = state[_layout.STEP_SIZE].to(xi.dtype)
        m_new = beta1 * mi + (1 - beta1) * gi
        v_new = beta2 * vi + (1 - beta2) * (gi * gi)
        ui = step * _adam_direction(m_new, v_new, xi, state, eps, weight_decay)
        if len(u):
            u[i].copy_(torch.where(skip, u[i], ui))
        xi.copy_(torch.where(skip, xi, xi - ui))
        mi.copy_(torch.where(skip, mi, m_new))
        vi.copy_(torch.where(skip, vi, v_new))
    if len(avg):
        average(avg, x, state)
