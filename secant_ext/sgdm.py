"""A-SGDM: the averaged momentum ``m <- mu m + (1 - mu) g``, ``x <- x - alpha_t m``."""
from __future__ import annotations

from ._sgd_family import SecantSGDFamily


class SecantSGDM(SecantSGDFamily):
    r"""A-SGDM: SGD with averaged momentum and a self-set learning rate.

    ``m <- mu m + (1 - mu) g`` (``m`` starts as the first gradient), ``x <- x - alpha_t m``;
    with ``nesterov=True`` the direction is ``mu m + (1 - mu) g``. The average, not the
    heavy-ball sum ``mu m + g``: alpha is the step for one gradient, and the sum would
    multiply it by up to ``1/(1 - mu)`` (that diverged on MNIST).

    Args: as ``SecantSGD``, plus ``momentum`` in ``(0, 1)`` (default 0.9) and ``nesterov``.
    """

    def __init__(self, params, *, lr=1.0, momentum=0.9, nesterov=False, max_grad_norm=None,
                 curvature_every=1, curvature_warmup=100, average=False, rule="secant",
                 safeguard=True, nonfinite="skip", weight_decay=0.0, backend="auto", lookahead="auto",
                 process_group=None):
        if not isinstance(momentum, (int, float)) or not 0 < momentum < 1:
            raise ValueError(f"SecantSGDM needs momentum in (0, 1), got {momentum!r}; "
                             "use SecantSGD for no momentum")
        super().__init__(params, lr=lr, max_grad_norm=max_grad_norm,
                         curvature_every=curvature_every, curvature_warmup=curvature_warmup,
                         average=average, nonfinite=nonfinite, weight_decay=weight_decay,
                         backend=backend, lookahead=lookahead, process_group=process_group,
                         rule=rule, safeguard=safeguard, momentum=momentum, nesterov=nesterov)
