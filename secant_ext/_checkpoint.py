"""Checkpoints: the float64 group state kept exact through ``load_state_dict``, and
optimizers pickled or saved by older versions brought up to date."""
from __future__ import annotations

from typing import Callable

import torch

from . import _layout as layout

# Options a param group gained after the first release, with the value that reproduces
# the old behaviour: a checkpoint saved before an option existed loads with it.
GROUP_DEFAULTS = dict(rule="secant", safeguard=True, nonfinite="skip", weight_decay=0.0,
                      momentum=0.0, nesterov=False, sign_scale="mean", backend="auto",
                      lookahead="auto")


def fill_group_defaults(param_groups) -> None:
    for group in param_groups:
        for key, value in GROUP_DEFAULTS.items():
            group.setdefault(key, value)


# Group states of older versions are shorter: the fields since added start at 0.
_OLDER_STATE_SIZES = (12,)  # before STALLED


def _upgraded(st: torch.Tensor, key) -> torch.Tensor:
    st = st.to(torch.float64)
    if st.dim() == 1 and st.numel() in _OLDER_STATE_SIZES:
        st = torch.cat([st, st.new_zeros(layout.STATE_SIZE - st.numel())])
    if st.shape != (layout.STATE_SIZE,):
        raise ValueError(f"secant_state of saved parameter {key} has shape "
                         f"{tuple(st.shape)}, expected ({layout.STATE_SIZE},)")
    return st


def load_state_dict(optimizer, state_dict, base_load: Callable) -> None:
    """``torch.optim.Optimizer.load_state_dict`` (``base_load``) with the group state kept
    aside: the base class casts floating state to each parameter's dtype, and the group
    state is float64 on purpose (exact counters, full-precision alpha)."""
    state_dict = dict(state_dict)
    per_param = {k: dict(v) for k, v in state_dict["state"].items()}
    kept = {k: v.pop("secant_state") for k, v in per_param.items() if "secant_state" in v}
    state_dict["state"] = per_param
    base_load(state_dict)
    ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    by_id = dict(zip(ids, params))
    for k, st in kept.items():
        p = by_id[k]
        optimizer.state[p]["secant_state"] = _upgraded(st, k).to(device=p.device)
    for p in params:
        buf = optimizer.state[p].get("momentum_buffer") if p in optimizer.state else None
        if buf is not None and buf.shape != p.shape:
            raise ValueError(f"the state dict does not fit this model: a momentum buffer "
                             f"of shape {tuple(buf.shape)} was loaded for a parameter of "
                             f"shape {tuple(p.shape)}")
