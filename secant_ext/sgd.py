"""A-SGD: ``x <- x - alpha_t g`` with alpha_t from the regularized secant equation."""
from __future__ import annotations

from ._sgd_family import SecantSGDFamily


class SecantSGD(SecantSGDFamily):
    r"""A-SGD: stochastic gradient descent whose learning rate sets itself.

    Each step measures curvature along the probe gradient ``s`` with one extra gradient
    evaluation at ``x + s`` and sets, per param group,

    .. math:: \alpha_t = \frac{\|s\|^2}{\langle s, y\rangle + \|s\|^2}, \quad y = \nabla F(x+s) - s

    then ``x <- x - lr * alpha_t (g + weight_decay * x)``.

    Args:
        params: parameters or param groups, as for ``torch.optim.SGD``.
        lr: a multiplier of the measured step (default 1.0: the paper's rule), a number or
            a 0-dim tensor; the applied step is ``lr * alpha_t``. Learning-rate schedulers
            act on it, as a schedule on top of the self-set step (warm-up, cosine).
        max_grad_norm: clip the step by the training gradient's norm, as
            ``clip_grad_norm_`` would (``min(1, max_grad_norm / (|g| + 1e-6))``), from the
            norm the statistics already compute; alpha is measured on the unclipped
            gradients. ``None`` (default): no clipping.
        curvature_every: measure the curvature on every k-th step only (two evaluations);
            the other steps evaluate the closure once and take the bias-corrected EMA
            (weight 0.9) of the measured alphas. 1 (default): every step, the paper's rule.
        curvature_warmup: with ``curvature_every`` > 1, measure every one of the first
            this many steps before carrying (default 100): early alphas swing widely, and a
            carry of them collapsed a CNN.
        average: keep an averaged iterate (``avg <- avg + w (x - avg)``, ``w`` =
            max(1 / steps, 0.01)) for evaluation: ``opt.eval()`` puts it into the
            parameters, ``opt.train()`` puts the training iterate back. Default False.
        rule: ``"secant"`` (the formula above, default), ``"steffensen"`` (``b/a``) or
            ``"bb2"`` (``a/(c+b)``), with ``a=<s,y>, b=|s|^2, c=|y|^2``.
        safeguard: clip negative curvature (``a`` at 0) and keep alpha when ``b == 0``.
        nonfinite: ``"skip"`` a step with a non-finite gradient (state unchanged, counted)
            or ``"raise"`` ``FloatingPointError`` naming the parameter (syncs the host).
        weight_decay: coupled L2 penalty, as in ``torch.optim.SGD``.
        backend: ``"auto"``, ``"triton"``, ``"cpp"`` or ``"reference"``.
        lookahead: how the closure is evaluated at ``x + s``: ``"swap"`` points ``p.data``
            at a buffer (cheapest), ``"inplace"`` adds ``s`` in the parameters' own storage
            and copies ``x`` back from a backup afterwards (for FSDP2, captured CUDA graphs,
            code that holds the weights' storage), ``"auto"`` (default) picks ``"inplace"``
            when any parameter is a DTensor and ``"swap"`` otherwise.
        process_group: sum the statistics over this group's ranks (sharded parameters);
            DTensor parameters default to their device mesh's group.
    """

    def __init__(self, params, *, lr=1.0, max_grad_norm=None, curvature_every=1,
                 curvature_warmup=100, average=False, rule="secant", safeguard=True,
                 nonfinite="skip", weight_decay=0.0, backend="auto", lookahead="auto",
                 process_group=None):
        super().__init__(params, lr=lr, max_grad_norm=max_grad_norm,
                         curvature_every=curvature_every, curvature_warmup=curvature_warmup,
                         average=average, nonfinite=nonfinite, weight_decay=weight_decay,
                         backend=backend, lookahead=lookahead, process_group=process_group,
                         rule=rule, safeguard=safeguard)
