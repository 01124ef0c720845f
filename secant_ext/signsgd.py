"""A-SIGNSGD: ``x <- x - alpha_t mean(|v|) sign(v)`` per tensor (Signum when momentum > 0)."""
from __future__ import annotations

from . import _layout
from ._sgd_family import SecantSGDFamily


class SecantSignSGD(SecantSGDFamily):
    r"""A-SIGNSGD: the scaled sign step with a self-set learning rate.

    ``x <- x - alpha_t * mean(|v|) * sign(v)`` for each tensor, ``v = g``, or the averaged
    momentum ``m`` when ``momentum > 0`` (Signum). The scale makes a step as large as a
    gradient step; ``sign_scale="none"`` gives the unscaled ``x <- x - alpha_t sign(v)``,
    which moves every weight by alpha and was unstable on MNIST (kept for studies).

    Args: as ``SecantSGD``, plus ``momentum`` in ``[0, 1)`` (default 0) and ``sign_scale``
    (``"mean"`` or ``"none"``).
    """

    _sign_mode = _layout.SIGN_SCALED

    def __init__(self, params, *, lr=1.0, momentum=0.0, sign_scale="mean", max_grad_norm=None,
                 curvature_every=1, curvature_warmup=100, average=False, rule="secant",
                 safeguard=True, nonfinite="skip", weight_decay=0.0, backend="auto", lookahead="auto",
                 process_group=None):
        super().__init__(params, lr=lr, max_grad_norm=max_grad_norm,
                         curvature_every=curvature_every, curvature_warmup=curvature_warmup,
                         average=average, nonfinite=nonfinite, weight_decay=weight_decay,
                         backend=backend, lookahead=lookahead, process_group=process_group,
                         rule=rule, safeguard=safeguard, momentum=momentum, sign_scale=sign_scale)
