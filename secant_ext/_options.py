"""Validation of the optimizers' options and param groups: each bad value raises a
``ValueError`` that names it."""
from __future__ import annotations

import math

import torch

from . import _backends, _layout as layout, distributed as _distributed

NONFINITE_MODES = ("skip", "raise")
SIGN_SCALES = ("mean", "none")


def check_nonnegative(name: str, value, allow_zero: bool = True) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


LOOKAHEAD_MODES = ("auto", "swap", "inplace")


def check_lr(lr) -> None:
    """``lr``: a finite number >= 0, or a 0-dim floating tensor (a scheduler may write
    either); it multiplies the measured alpha."""
    if isinstance(lr, torch.Tensor):
        if lr.dim() != 0 or not lr.is_floating_point():
            raise ValueError(f"lr must be a number or a 0-dim floating tensor, got a tensor "
                             f"of shape {tuple(lr.shape)} and dtype {lr.dtype}")
        return
    check_nonnegative("lr", lr)


def check_max_grad_norm(value) -> None:
    if value is not None:
        check_nonnegative("max_grad_norm", value, allow_zero=False)


def check_curvature_warmup(value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"curvature_warmup must be an integer >= 0, got {value!r}")


def check_curvature_every(value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"curvature_every must be an integer >= 1, got {value!r}")


# The options every rule has, checked by the driver.
COMMON = ("lr", "max_grad_norm", "curvature_every", "curvature_warmup", "average",
          "nonfinite", "weight_decay", "backend", "lookahead")


def check_common(*, lr, max_grad_norm, curvature_every, curvature_warmup, average,
                 nonfinite, weight_decay, backend, lookahead) -> None:
    """The options every optimizer has, before any param group exists."""
    check_curvature_warmup(curvature_warmup)
    if not isinstance(average, bool):
        raise ValueError(f"average must be True or False, got {average!r}")
    check_lr(lr)
    check_max_grad_norm(max_grad_norm)
    check_curvature_every(curvature_every)
    if nonfinite not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
    check_nonnegative("weight_decay", weight_decay)
    _backends.validate_backend(backend)
    if lookahead not in LOOKAHEAD_MODES:
        raise ValueError(f"lookahead must be one of {LOOKAHEAD_MODES}, got {lookahead!r}")


def check_sgd_family(*, rule, safeguard, momentum=0.0, nesterov=False,
                     sign_scale="mean") -> None:
    """The SGD family's own options."""
    if rule not in layout.RULES:
        raise ValueError(f"rule must be one of {tuple(layout.RULES)}, got {rule!r}")
    if not isinstance(safeguard, bool):
        raise ValueError(f"safeguard must be True or False, got {safeguard!r}")
    check_nonnegative("momentum", momentum)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True needs a momentum > 0, got momentum=0")
    if sign_scale not in SIGN_SCALES:
        raise ValueError(f"sign_scale must be 'mean' or 'none', got {sign_scale!r}")


def check_betas(betas) -> None:
    """Adam's ``betas``: two numbers in ``[0, 1)``."""
    ok = isinstance(betas, (tuple, list)) and len(betas) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    if not ok:
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")


def check_group(group) -> None:
    """A param group as the optimizer holds it (options filled in from the defaults)."""
    if group.get("rule", "secant") not in layout.RULES:
        raise ValueError(f"rule must be one of {tuple(layout.RULES)}, got {group['rule']!r}")
    if "betas" in group:
        check_betas(group["betas"])
        check_nonnegative("eps", group["eps"])
    check_lr(group["lr"])
    check_max_grad_norm(group["max_grad_norm"])
    check_curvature_every(group["curvature_every"])
    check_curvature_warmup(group["curvature_warmup"])
    check_nonnegative("weight_decay", group["weight_decay"])
    check_nonnegative("momentum", group.get("momentum", 0.0))
    _backends.validate_backend(group["backend"])
    if group["lookahead"] not in LOOKAHEAD_MODES:
        raise ValueError(f"lookahead must be one of {LOOKAHEAD_MODES}, got "
                         f"{group['lookahead']!r}")
    if len({id(p) for p in group["params"]}) != len(group["params"]):
        raise ValueError("a param group lists the same parameter twice; pass each "
                         "parameter once")
    devices = {p.device for p in group["params"]}
    if len(devices) == 1 and group["backend"] != "auto":
        _backends.resolve(group["backend"], next(iter(devices)))  # fails loudly now
    if len(devices) > 1:
        raise ValueError("all parameters of a param group must be on one device (alpha "
                         f"is shared by the group), got {sorted(map(str, devices))}; "
                         "put each device's parameters in a group of its own")
    for p in group["params"]:
        if _distributed.is_dtensor(p):
            if group["lookahead"] == "swap":
                raise ValueError(_distributed.DTENSOR_NEEDS_INPLACE)
            _distributed.check_dtensor(p)
        if not (p.is_floating_point() or p.is_complex()):
            raise ValueError(f"parameters must be floating point or complex, got {p.dtype}")
        if p.is_sparse:
            raise ValueError("sparse parameters are not supported")
