"""An independent float64 implementation of docs/ALGORITHM.md, in NumPy, for tests.

It shares no code with ``secant_ext``: it is the algorithm as docs/ALGORITHM.md writes it, applied
to a least-squares problem whose gradients are computed in closed form. Tests run the
optimizers on the same problem with autograd and compare trajectories.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np


@dataclass
class LeastSquares:
    """``loss(W, c) = mean((X W + c - Y)^2)`` over a batch; two parameters, W and c."""
    X: np.ndarray
    Y: np.ndarray
    batch: int
    probe_batch: int

    @staticmethod
    def make(seed: int = 0, n: int = 96, d: int = 7, k: int = 3, batch: int = 16,
             probe_batch: int = 8) -> "LeastSquares":
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, d))
        W = rng.standard_normal((d, k))
        Y = X @ W + 0.5 + 0.1 * rng.standard_normal((n, k))
        return LeastSquares(X, Y, batch, probe_batch)

    def train_rows(self, t: int) -> np.ndarray:
        start = (t * self.batch) % len(self.X)
        return (np.arange(self.batch) + start) % len(self.X)

    def probe_rows(self, t: int) -> np.ndarray:
        start = (t * 7 * self.probe_batch + 3) % len(self.X)
        return (np.arange(self.probe_batch) + start) % len(self.X)

    def grad(self, params: List[np.ndarray], rows: np.ndarray) -> List[np.ndarray]:
        W, c = params
        X, Y = self.X[rows], self.Y[rows]
        r = X @ W + c - Y
        scale = 2.0 / r.size
        return [scale * X.T @ r, scale * r.sum(axis=0)]

    def loss(self, params: List[np.ndarray], rows: Optional[np.ndarray] = None) -> float:
        W, c = params
        rows = np.arange(len(self.X)) if rows is None else rows
        return float(np.mean((self.X[rows] @ W + c - self.Y[rows]) ** 2))


@dataclass
class SpecOptimizer:
    """A-SGD / A-SGDM / A-SIGNSGD of docs/ALGORITHM.md, float64, one param group."""
    variant: str                 # "sgd" | "sgdm" | "sign"
    rule: str = "secant"
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    sign_scale: str = "mean"
    lr: float = 1.0                       # multiplies alpha
    max_grad_norm: Optional[float] = None  # clips the step by |g|, as clip_grad_norm_
    curvature_every: int = 1               # measure on every k-th step, carry in between
    curvature_warmup: int = 100            # ... after measuring each of the first steps
    average: bool = False                  # keep the averaged iterate in ``avg``
    avg: Optional[List[np.ndarray]] = None
    taken: int = 0
    carry_beta: float = 0.9
    alpha: float = 1.0
    ema: float = 0.0
    measured: int = 0
    m: Optional[List[np.ndarray]] = None
    alphas: List[float] = field(default_factory=list)

    def rate(self, a: float, b: float, c: float) -> float:
        if b == 0:
            return self.alpha
        if self.rule == "secant":
            return b / (max(a, 0.0) + b)
        if a <= 0:  # steffensen and bb2: negative curvature keeps the previous alpha
            return self.alpha
        return b / a if self.rule == "steffensen" else a / (c + b)

    def step(self, problem: LeastSquares, x: List[np.ndarray], t: int, probe: bool) -> None:
        train = problem.train_rows(t)
        g = problem.grad(x, train)
        if t < self.curvature_warmup or t % self.curvature_every == 0:  # measure
            pairs = problem.probe_rows(t) if probe else train
            s = problem.grad(x, pairs) if probe else g
            g_plus = problem.grad([xi + si for xi, si in zip(x, s)], pairs)
            y = [gp - si for gp, si in zip(g_plus, s)]
            a = sum(float(np.sum(si * yi)) for si, yi in zip(s, y))
            b = sum(float(np.sum(si * si)) for si in s)
            c = sum(float(np.sum(yi * yi)) for yi in y)
            self.alpha = self.rate(a, b, c)
            self.ema = self.carry_beta * self.ema + (1 - self.carry_beta) * self.alpha
            self.measured += 1
            applied = self.alpha
        else:  # the bias-corrected mean of the measured alphas
            applied = self.ema / (1 - self.carry_beta ** self.measured)
        self.alphas.append(self.alpha)
        clip = 1.0
        if self.max_grad_norm is not None:
            norm = float(np.sqrt(sum(float(np.sum(gi * gi)) for gi in g)))
            clip = min(1.0, self.max_grad_norm / (norm + 1e-6))
        step = applied * self.lr * clip
        g = [gi + self.weight_decay * xi for gi, xi in zip(g, x)]
        d = g
        if self.momentum > 0:
            self.m = [gi.copy() for gi in g] if self.m is None else \
                [self.momentum * mi + (1 - self.momentum) * gi for mi, gi in zip(self.m, g)]
            d = [self.momentum * mi + (1 - self.momentum) * gi for mi, gi in zip(self.m, g)] \
                if self.nesterov else self.m
        for xi, di in zip(x, d):
            if self.variant == "sign":
                scale = np.mean(np.abs(di)) if self.sign_scale == "mean" else 1.0
                xi -= step * scale * np.sign(di)
            else:
                xi -= step * di
        self.taken += 1
        if self.average:  # avg <- avg + w (x - avg), w = max(1 / steps taken, 0.01)
            w = max(1.0 / self.taken, 0.01)
            self.avg = [xi.copy() for xi in x] if self.avg is None else \
                [ai + w * (xi - ai) for ai, xi in zip(self.avg, x)]


@dataclass
class SpecAdam:
    """SecantAdam of docs/ALGORITHM.md, float64, one param group: Adam's direction, the step
    size measured along the previous step on the training batch (looking back)."""
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr: float = 1.0
    max_grad_norm: Optional[float] = None
    curvature_every: int = 8
    curvature_warmup: int = 50
    ema: float = 0.9
    growth: float = 1.1
    reach: float = 2.0
    eta: float = 1e-5
    A: float = 0.0
    C: float = 0.0
    average: bool = True
    avg_floor: float = 0.03  # the average's weight: max(1 / steps taken, avg_floor)
    avg: Optional[List[np.ndarray]] = None
    m: Optional[List[np.ndarray]] = None
    v: Optional[List[np.ndarray]] = None
    u: Optional[List[np.ndarray]] = None   # the previous step x_(t-1) - x_t
    u_scale: float = 0.0                   # its step size
    taken: int = 0
    alphas: List[float] = field(default_factory=list)

    def measures(self, t: int) -> bool:
        return t >= 1 and (t < self.curvature_warmup or (t + 1) % self.curvature_every == 0)

    def step(self, problem: LeastSquares, x: List[np.ndarray], t: int, probe: bool,
             earlier: Optional[List[np.ndarray]] = None) -> None:
        """One step; ``earlier``: gradients accumulated before it (micro-batches), added
        to the training gradient but not to the measurement's."""
        train = problem.train_rows(t)
        g = problem.grad(x, train)
        if self.measures(t) and self.u is not None and self.u_scale > 0:
            pairs = problem.probe_rows(t) if probe else train
            s = problem.grad(x, pairs) if probe else g
            g_back = problem.grad([xi + ui for xi, ui in zip(x, self.u)], pairs)
            # the curvature along d and the slope at the previous iterate, per unit step
            a = sum(float(np.sum(ui * (gb - si))) for ui, gb, si in zip(self.u, g_back, s)) \
                / self.u_scale ** 2
            c = sum(float(np.sum(ui * gb)) for ui, gb in zip(self.u, g_back)) / self.u_scale
            n = abs(c) + self.u_scale * abs(a)  # every measurement weighs the same
            if n > 0:
                a, c = a / n, c / n
            else:
                a = c = 0.0
            self.A = self.ema * self.A + (1 - self.ema) * a
            self.C = self.ema * self.C + (1 - self.ema) * c
            if self.C > 0 and self.A > 0:
                self.eta = min(self.reach * self.C / self.A, self.growth * self.eta)
            elif self.C > 0:
                self.eta = self.growth * self.eta
            else:
                self.eta = self.eta / self.growth
        if earlier is not None:
            g = [gi + ei for gi, ei in zip(g, earlier)]
        self.alphas.append(self.eta)
        clip = 1.0
        if self.max_grad_norm is not None:
            norm = float(np.sqrt(sum(float(np.sum(gi * gi)) for gi in g)))
            clip = min(1.0, self.max_grad_norm / (norm + 1e-6))
        step = self.eta * self.lr * clip
        b1, b2 = self.betas
        self.taken += 1
        if self.m is None:
            self.m = [np.zeros_like(xi) for xi in x]
            self.v = [np.zeros_like(xi) for xi in x]
        self.m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(self.m, g)]
        self.v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(self.v, g)]
        bc1, bc2 = 1 - b1 ** self.taken, 1 - b2 ** self.taken
        d = [(mi / bc1) / (np.sqrt(vi / bc2) + self.eps) + self.weight_decay * xi
             for mi, vi, xi in zip(self.m, self.v, x)]
        record = self.measures(t + 1)
        self.u = [step * di for di in d] if record else None
        self.u_scale = step if record else 0.0
        for xi, di in zip(x, d):
            xi -= step * di
        if self.average:  # avg <- avg + w (x - avg), w = max(1 / steps taken, avg_floor)
            w = max(1.0 / self.taken, self.avg_floor)
            self.avg = [xi.copy() for xi in x] if self.avg is None else \
                [ai + w * (xi - ai) for ai, xi in zip(self.avg, x)]
