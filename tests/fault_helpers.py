"""Shared by the fault tests: a small optimizer over two parameters, closures of a
quadratic that can be poisoned with non-finite values, and snapshots of everything a
step could touch."""
from __future__ import annotations

import torch

import secant_ext

BACKENDS = ["reference", "cpp"]


def snapshot(opt, params):
    """Parameters, gradients-free optimizer state and group state, cloned, and the run state
    a checkpoint carries besides them (the step clock of curvature_every)."""
    full = opt.state_dict()
    state = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
             for k, s in full["state"].items()}
    state["run"] = {k: torch.tensor(v) for k, v in full.items()
                    if k not in ("state", "param_groups")}
    return [p.detach().clone() for p in params], state


def assert_same(a, b):
    (pa, sa), (pb, sb) = a, b
    for x, y in zip(pa, pb):
        assert torch.equal(x, y)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].keys() == sb[k].keys()
        for n in sa[k]:
            assert torch.equal(sa[k][n], sb[k][n]), (k, n)


def quadratic(opt, params, poison=None):
    """closure and probe closure of sum_i |p_i|^2 with optional poisoning:
    poison = (which call: 'train'|'probe'|'lookahead', value)."""
    calls = {"train": 0, "probe": 0}

    def loss_of():
        return sum(((p - 0.5) ** 2).sum() for p in params)

    def train():
        opt.zero_grad()
        calls["train"] += 1
        loss = loss_of()
        loss.backward()
        if poison and poison[0] == "train" and calls["train"] == 1:
            params[0].grad[0] = poison[1]
        if poison and poison[0] == "lookahead" and calls["train"] == 2:
            params[-1].grad.view(-1)[-1] = poison[1]
        return loss

    def probe():
        opt.zero_grad()
        calls["probe"] += 1
        loss = 0.5 * loss_of()
        loss.backward()
        if poison and poison[0] == "probe" and calls["probe"] == 1:
            params[0].grad[1] = poison[1]
        return loss
    return train, probe


def fresh(cls=secant_ext.SecantSGDM, backend="reference", **kw):
    params = [torch.randn(5, generator=torch.Generator().manual_seed(0)).requires_grad_(),
              torch.randn(2, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()]
    return params, cls(params, backend=backend, **kw)
