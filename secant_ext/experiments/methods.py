"""The optimizers the experiments compare, each as a named recipe.

A ``Method`` builds its optimizer from the model's parameters. SGD's decaying schedule is
``lr_t = c / (1 + t)^gamma`` with ``t`` the number of epochs elapsed (fractional), so the
same ``(c, gamma)`` means the same schedule whatever the batch size.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch

import secant_ext
from secant_ext import _layout


@dataclass
class Method:
    name: str              # unique label in tables and plots
    family: str            # what is compared: "A-SGD", "SGD const", "SGD decay", ...
    make: Callable         # params -> optimizer
    secant: bool = False   # a secant_ext optimizer (records alpha, takes a probe closure)
    schedule: Optional[Callable[[float], float]] = None  # epochs elapsed -> lr
    probe_batch: Optional[int] = None  # b_H: size of the separate probe batch S_H
    hyper: Dict[str, object] = field(default_factory=dict)


def a_sgd(name="A-SGD", backend="auto", **kw) -> Method:
    return Method(name, "A-SGD", lambda p: secant_ext.SecantSGD(p, backend=backend, **kw),
                  secant=True, hyper=dict(kw))


def a_sgdm(name="A-SGDM", backend="auto", probe_batch=None, **kw) -> Method:
    hyper = dict(kw, **({"b_H": probe_batch} if probe_batch else {}))
    return Method(name, "A-SGDM", lambda p: secant_ext.SecantSGDM(p, backend=backend, **kw),
                  secant=True, probe_batch=probe_batch, hyper=hyper)


def secant_adam_method(name="SecantAdam", backend="auto", **kw) -> Method:
    """The package's ``SecantAdam`` (defaults unless ``kw``): 2 gradient evaluations on a
    measuring step, 1 on the others; evaluated through ``eval()``/``train()``."""
    return Method(name, "A-Adam", lambda p: secant_ext.SecantAdam(p, backend=backend, **kw),
                  secant=True, hyper=dict(kw))


def a_signsgd(name="A-SIGNSGD", backend="auto", **kw) -> Method:
    return Method(name, "A-SIGNSGD",
                  lambda p: secant_ext.SecantSignSGD(p, backend=backend, **kw),
                  secant=True, hyper=dict(kw))


# the Secant optimizers at their defaults (momentum 0.9 where they take one), by the key
# the experiments' --methods use
SECANT_DEFAULTS: Dict[str, Callable[[str], Method]] = {
    "secant-sgd": lambda backend: a_sgd(backend=backend),
    "secant-sgdm": lambda backend: a_sgdm(backend=backend, momentum=0.9),
    "secant-signsgd": lambda backend: a_signsgd(backend=backend),
    "secant-signsgdm": lambda backend: a_signsgd("A-SIGNSGD m=0.9", backend=backend,
                                                 momentum=0.9),
    "secant-adam": lambda backend: secant_adam_method(backend=backend),
}


# the Adam-class prototype (experiments.secant_adam, pure PyTorch, research): its defaults
# (warm-up 100, where SecantAdam's is 50) and the levers measured on it, by key; every
# setting takes no learning rate
SECANT_ADAM: Dict[str, Tuple[str, Dict[str, object]]] = {
    "secant-adam-proto": ("Secant-Adam proto", {}),
    "secant-adam-proto-noavg": ("Secant-Adam proto no avg", dict(average=False)),
    "secant-adam-proto-ema95": ("Secant-Adam proto ema 0.95", dict(ema=0.95)),
    "secant-adam-proto-ema99": ("Secant-Adam proto ema 0.99", dict(ema=0.99)),
    "secant-adam-proto-g105": ("Secant-Adam proto growth 1.05", dict(growth=1.05)),
    "secant-adam-proto-g12": ("Secant-Adam proto growth 1.2", dict(growth=1.2)),
    "secant-adam-proto-k4": ("Secant-Adam proto k=4", dict(every=4)),
    "secant-adam-proto-k16": ("Secant-Adam proto k=16", dict(every=16)),
    "secant-adam-proto-w50": ("Secant-Adam proto warm-up 50", dict(warmup=50)),
    "secant-adam-proto-w200": ("Secant-Adam proto warm-up 200", dict(warmup=200)),
    "secant-adam-proto-wd": ("Secant-Adam proto wd 0.01", dict(weight_decay=0.01)),
    "secant-adam-proto-prev": ("Secant-Adam proto anchor previous", dict(anchor="previous")),
    "secant-adam-proto-e4": ("Secant-Adam proto eta0 1e-4", dict(eta0=1e-4)),
    # controls: Adam (no weight decay) at a constant rate with the prototype's averaging,
    # no measurement; these take a learning rate
    "adam-avg-1e-3": ("Adam lr=1e-3 + avg", dict(measure=False, eta0=1e-3)),
    "adam-avg-3e-3": ("Adam lr=3e-3 + avg", dict(measure=False, eta0=3e-3)),
    "adam-avg-1e-2": ("Adam lr=1e-2 + avg", dict(measure=False, eta0=1e-2)),
}


# SecantAdam (the package's) with one option changed, by key: levers measured on it
SECANT_ADAM_LEVERS: Dict[str, Tuple[str, Dict[str, object]]] = {
    "secant-adam-k16": ("SecantAdam k=16", dict(curvature_every=16)),
    # half the measured step: the measured eta sits ~3x above AdamW's best constant rate
    "secant-adam-x05": ("SecantAdam lr=0.5", dict(lr=0.5)),
}


def secant_adam_lever(key: str, backend: str = "auto") -> Method:
    label, kw = SECANT_ADAM_LEVERS[key]
    return secant_adam_method(label, backend=backend, **kw)


def secant_adam(key: str = "secant-adam-proto") -> Method:
    """The ``Method`` of ``SECANT_ADAM[key]``: 2 gradient evaluations on a measuring step,
    1 on the others; evaluated through ``eval()``/``train()``."""
    from .secant_adam import SecantAdamPrototype
    label, kw = SECANT_ADAM[key]
    family = "A-Adam" if kw.get("measure", True) else "Adam avg"  # "A-": a secant method
    return Method(label, family, lambda p: SecantAdamPrototype(p, **kw), secant=True,
                  hyper=dict(kw, prototype="SecantAdamPrototype"))


@dataclass(frozen=True)
class Lever:
    """A Secant setting the races measure: untuned (``lr`` multiplier 1), selectable by key."""
    label: str                          # ``{b}`` stands for the probe batch size
    momentum: bool                      # SecantSGDM with momentum 0.9 (else SecantSGD)
    options: Tuple[Tuple[str, object], ...]
    probe: bool = False                 # a probe closure on the measuring steps
    per_tensor: bool = False            # one param group per tensor: one alpha per tensor


def _lever(label, options=(), momentum=False, **kw) -> Lever:
    return Lever(label, momentum, tuple(dict(options).items()), **kw)


_K8_AVG = dict(curvature_every=8, curvature_warmup=0, average=True)
# key -> setting. Keys without ``-warm`` that set ``curvature_every`` carry from the first
# step (``curvature_warmup=0``, as first measured); ``-warm`` keys keep the default warm-up
# (every one of the first 100 steps measures).
LEVERS: Dict[str, Lever] = {
    "asgd-k4": _lever("A-SGD k=4", dict(curvature_every=4, curvature_warmup=0)),
    "asgd-k8": _lever("A-SGD k=8", dict(curvature_every=8, curvature_warmup=0)),
    "asgd-avg": _lever("A-SGD avg", dict(average=True)),
    "asgd-k4-avg": _lever("A-SGD k=4 avg", dict(_K8_AVG, curvature_every=4)),
    "asgd-k8-avg": _lever("A-SGD k=8 avg", _K8_AVG),
    "asgdm-k8-avg": _lever("A-SGDM k=8 avg", _K8_AVG, momentum=True),
    "asgd-k8-avg-probe": _lever("A-SGD k=8 avg b_H={b}", _K8_AVG, probe=True),
    "asgd-k4-avg-warm": _lever("A-SGD k=4 avg warm-up", dict(curvature_every=4, average=True)),
    "asgd-k8-avg-warm": _lever("A-SGD k=8 avg warm-up", dict(curvature_every=8, average=True)),
    "asgdm-k8-avg-warm": _lever("A-SGDM k=8 avg warm-up", dict(curvature_every=8,
                                                               average=True), momentum=True),
    "asgd-clip": _lever("A-SGD clip 1", dict(max_grad_norm=1.0)),
    "asgdm-clip": _lever("A-SGDM clip 1", dict(max_grad_norm=1.0), momentum=True),
    "asgdm-k8-avg-clip": _lever("A-SGDM k=8 avg warm-up clip 1",
                                dict(curvature_every=8, average=True, max_grad_norm=1.0),
                                momentum=True),
    "asgd-steffensen-clip": _lever("A-SGD steffensen clip 1", dict(rule="steffensen",
                                                                    max_grad_norm=1.0)),
    # the rule's step doubled: gradient descent along a direction of curvature kappa is
    # stable up to 2 / kappa, twice the secant (Newton) step the rule approximates
    "asgd-k8-avg-clip": _lever("A-SGD k=8 avg warm-up clip 1",
                               dict(curvature_every=8, average=True, max_grad_norm=1.0)),
    "asgd-x2-clip": _lever("A-SGD lr=2 clip 1", dict(lr=2.0, max_grad_norm=1.0)),
    "asgd-x2-k8-avg-warm": _lever("A-SGD lr=2 k=8 avg warm-up",
                                  dict(lr=2.0, curvature_every=8, average=True)),
    "asgd-x2-k8-avg-clip": _lever("A-SGD lr=2 k=8 avg warm-up clip 1",
                                  dict(lr=2.0, curvature_every=8, average=True,
                                       max_grad_norm=1.0)),
    "asgd-x2-k16-avg-clip": _lever("A-SGD lr=2 k=16 avg warm-up clip 1",
                                   dict(lr=2.0, curvature_every=16, average=True,
                                        max_grad_norm=1.0)),
    "asgd-x2-k8-clip": _lever("A-SGD lr=2 k=8 warm-up clip 1",
                              dict(lr=2.0, curvature_every=8, max_grad_norm=1.0)),
    "asgdm-x2-k8-avg-clip": _lever("A-SGDM lr=2 k=8 avg warm-up clip 1",
                                   dict(lr=2.0, curvature_every=8, average=True,
                                        max_grad_norm=1.0), momentum=True),
    "asgd-tensor": _lever("A-SGD per-tensor alpha", per_tensor=True),
    "asgdm-tensor": _lever("A-SGDM per-tensor alpha", momentum=True, per_tensor=True),
}


def lever(key: str, backend: str = "auto", probe_batch: int = 16) -> Method:
    """The ``Method`` of ``LEVERS[key]``; the probe batch size goes into the label and
    ``probe_batch`` only when the setting uses a probe."""
    s = LEVERS[key]
    options = dict(s.options)
    cls = secant_ext.SecantSGDM if s.momentum else secant_ext.SecantSGD
    kw = dict(options, momentum=0.9) if s.momentum else options

    def make(params):
        if s.per_tensor:
            params = [{"params": [p]} for p in params]
        return cls(params, backend=backend, **kw)
    hyper = dict(kw, **({"param_groups": "one per tensor"} if s.per_tensor else {}),
                 **({"b_H": probe_batch} if s.probe else {}))
    return Method(s.label.format(b=probe_batch), "A-SGDM" if s.momentum else "A-SGD", make,
                  secant=True, probe_batch=probe_batch if s.probe else None, hyper=hyper)


def sgd_const(lr: float) -> Method:
    return Method(f"SGD lr={lr:g}", "SGD const", lambda p: torch.optim.SGD(p, lr=lr),
                  hyper={"lr": lr})


def closure_loss(closure):
    """``closure()`` with gradients enabled, as ``torch.optim``'s steps call it (None
    without a closure)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class ClippedSGD(torch.optim.SGD):
    """torch's SGD after ``torch.nn.utils.clip_grad_norm_(params, max_norm)`` on all its
    parameters: the clipping a training loop would add, for comparisons with optimizers
    that clip inside their step (``max_grad_norm``)."""

    def __init__(self, params, lr: float, max_norm: float = 1.0):
        super().__init__(params, lr=lr)
        self.max_norm = max_norm

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        grads = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(grads, self.max_norm)
        super().step()
        return loss


def sgd_clipped(lr: float, max_norm: float = 1.0) -> Method:
    return Method(f"SGD lr={lr:g} clip {max_norm:g}", "SGD clip",
                  lambda p: ClippedSGD(p, lr=lr, max_norm=max_norm),
                  hyper={"lr": lr, "max_grad_norm": max_norm})


def sgd_decay(c: float, gamma: float) -> Method:
    def schedule(t: float) -> float:
        return c / (1.0 + t) ** gamma
    return Method(f"SGD {c:g}/(1+t)^{gamma:g}", "SGD decay",
                  lambda p: torch.optim.SGD(p, lr=c), schedule=schedule,
                  hyper={"c": c, "gamma": gamma})


def adam(lr: float = 1e-3) -> Method:
    return Method(f"Adam lr={lr:g}", "Adam", lambda p: torch.optim.Adam(p, lr=lr),
                  hyper={"lr": lr})


class HeavyBallSecantSGD(secant_ext.SecantSGD):
    """A-SGD with the undamped heavy-ball sum ``m <- mu m + g``, ``x <- x - alpha m``.

    For comparison only (docs/ALGORITHM.md, 'Update directions': why A-SGDM averages). The parent
    step applies ``-alpha g``; the heavy-ball term ``-alpha mu m_prev`` is added after it,
    on the device, and nothing moves on a step the parent skipped."""

    def __init__(self, params, momentum: float = 0.9, **kw):
        super().__init__(params, **kw)
        self.heavy_ball_momentum = momentum

    @torch.no_grad()
    def step(self, closure=None, probe_closure=None):
        loss = super().step(closure, probe_closure)
        mu = self.heavy_ball_momentum
        for group in self.param_groups:
            state = self._group_state(group)
            alpha = state[_layout.ALPHA]
            applied = state[_layout.LAST_SKIPPED] == 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].get("heavy_ball_buffer")
                if buf is None:
                    buf = torch.zeros_like(p)
                    self.state[p]["heavy_ball_buffer"] = buf
                extra = alpha.to(p.dtype) * mu * buf
                p.sub_(torch.where(applied, extra, torch.zeros_like(extra)))
                buf.copy_(torch.where(applied, mu * buf + p.grad, buf))
        return loss


def a_sgd_heavy_ball(momentum=0.9, backend="auto") -> Method:
    return Method("A-SGD heavy-ball", "A-SGD heavy-ball",
                  lambda p: HeavyBallSecantSGD(p, momentum=momentum, backend=backend),
                  secant=True, hyper={"momentum": momentum})


def lr_free_extras() -> Dict[str, Optional[Method]]:
    """D-Adaptation and Prodigy when installed (``None`` otherwise); neither is required."""
    out: Dict[str, Optional[Method]] = {}
    for label, module, cls in (("D-Adapt SGD", "dadaptation", "DAdaptSGD"),
                               ("Prodigy", "prodigyopt", "Prodigy")):
        try:
            opt_cls = getattr(importlib.import_module(module), cls)
        except ImportError:
            out[label] = None
            continue
        out[label] = Method(label, label, lambda p, c=opt_cls: c(p, lr=1.0),
                            hyper={"lr": 1.0, "package": module})
    return out
