"""Checkpoints: the float64 group state kept exact through ``load_state_dict``, the step
clock and the training iterate of eval mode saved beside torch's state, and optimizers
pickled or saved by older versions brought up to date."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch

from . import _layout as layout

# Options a param group gained after the first release, with the value that reproduces
# the old behaviour: a checkpoint saved before an option existed loads with it.
GROUP_DEFAULTS = dict(rule="secant", safeguard=True, nonfinite="skip", weight_decay=0.0,
                      momentum=0.0, nesterov=False, sign_scale="mean", backend="auto",
                      lookahead="auto", lr=1.0, max_grad_norm=None, curvature_every=1,
                      average=False, curvature_warmup=100)


def fill_group_defaults(param_groups, defaults) -> None:
    """Fill in the options this optimizer has (``defaults``' keys) that a group lacks."""
    for group in param_groups:
        for key, value in GROUP_DEFAULTS.items():
            if key in defaults:
                group.setdefault(key, value)


# Group states of older versions are shorter: the fields since added take their initial
# values (LR and MAX_GRAD_NORM are written again before every step anyway).
# 12: before STALLED; 13: before LR, MAX_GRAD_NORM, STEP_SIZE; 16: before the alpha carry;
# 21: before the averaged iterate; 23: before CLIP_G_SQ_OTHERS (written before every step);
# 24: before SecantAdam's fields (unused by the other optimizers)
_OLDER_STATE_SIZES = (12, 13, 16, 21, 23, 24)


def _upgraded(st: torch.Tensor, key) -> torch.Tensor:
    st = st.to(torch.float64)
    if st.dim() == 1 and st.numel() in _OLDER_STATE_SIZES:
        fresh = torch.tensor(layout.initial_state_values(), dtype=torch.float64)
        size = st.numel()
        st = torch.cat([st, fresh[size:]])
        if size < layout.STEP_SIZE + 1:
            st[layout.STEP_SIZE] = st[layout.ALPHA]
    if st.shape != (layout.STATE_SIZE,):
        raise ValueError(f"secant_state of saved parameter {key} has shape "
                         f"{tuple(st.shape)}, expected ({layout.STATE_SIZE},)")
    return st


# Top-level key of the state dict: steps so far, which decides the steps that measure under
# curvature_every > 1. Checkpoints without it start the clock afresh (warm-up included).
CLOCK_KEY = "secant_curvature_clock"
# Per-parameter key, present in a state dict saved between eval() and train(): the training
# iterate x, while the parameters hold the averaged weights.
TRAINING_ITERATE_KEY = "training_iterate"


def with_run_state(optimizer, state_dict):
    """``state_dict`` (torch's, whose per-parameter dicts are the optimizer's own) with the
    step clock and, in eval mode, each averaged parameter's training iterate added, in new
    dicts so that the optimizer's state is left alone."""
    state_dict[CLOCK_KEY] = optimizer._curvature_clock
    kept = optimizer._training_weights
    if kept:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        index = {id(p): i for i, p in enumerate(params)}
        state = dict(state_dict["state"])
        for key, (p, x) in kept.items():
            state[index[key]] = dict(state.get(index[key], {}), **{TRAINING_ITERATE_KEY: x})
        state_dict["state"] = state
    return state_dict


def load_state_dict(optimizer, state_dict, base_load: Callable) -> None:
    """``torch.optim.Optimizer.load_state_dict`` (``base_load``) with the group state kept
    aside: the base class casts floating state to each parameter's dtype, and the group
    state is float64 on purpose (exact counters, full-precision alpha).

    The load hooks run here, as torch documents them: the pre-hooks on the whole state
    dict (group state included) before anything is loaded, the post-hooks once the
    optimizer's own state is restored too; the base class would run them around its part
    only."""
    pre = optimizer._optimizer_load_state_dict_pre_hooks
    post = optimizer._optimizer_load_state_dict_post_hooks
    for hook in list(pre.values()):
        result = hook(optimizer, state_dict)
        if result is not None:
            state_dict = result
    optimizer._optimizer_load_state_dict_pre_hooks = OrderedDict()
    optimizer._optimizer_load_state_dict_post_hooks = OrderedDict()
    try:
        _load(optimizer, state_dict, base_load)
    finally:
        optimizer._optimizer_load_state_dict_pre_hooks = pre
        optimizer._optimizer_load_state_dict_post_hooks = post
    for hook in list(post.values()):
        hook(optimizer)


def _load(optimizer, state_dict, base_load: Callable) -> None:
    state_dict = dict(state_dict)
    per_param = {k: dict(v) for k, v in state_dict["state"].items()}
    kept = {k: v.pop("secant_state") for k, v in per_param.items() if "secant_state" in v}
    iterates = {k: v.pop(TRAINING_ITERATE_KEY) for k, v in per_param.items()
                if TRAINING_ITERATE_KEY in v}
    clock = state_dict.pop(CLOCK_KEY, 0)
    state_dict["state"] = per_param
    base_load(state_dict)
    ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    by_id = dict(zip(ids, params))
    for k, st in kept.items():
        p = by_id[k]
        optimizer.state[p]["secant_state"] = _upgraded(st, k).to(device=p.device)
    optimizer._curvature_clock = int(clock)
    # Saved in eval mode: the parameters hold the averages (as the model saved beside it
    # does); train() puts the saved training iterate back.
    optimizer._training_weights = {
        id(by_id[k]): (by_id[k], torch.empty_like(by_id[k], memory_format=torch.preserve_format)
                       .copy_(x)) for k, x in iterates.items()} or None
    for p in params:
        buf = optimizer.state[p].get("momentum_buffer") if p in optimizer.state else None
        if buf is not None and buf.shape != p.shape:
            raise ValueError(f"the state dict does not fit this model: a momentum buffer "
                             f"of shape {tuple(buf.shape)} was loaded for a parameter of "
                             f"shape {tuple(p.shape)}")
