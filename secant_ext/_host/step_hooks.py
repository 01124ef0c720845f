"""``torch.optim``'s wrapper around ``step``, with the profiler label entered only while a
profiler runs.

``torch.optim.Optimizer`` wraps every subclass's ``step`` (``Optimizer.profile_hook_step``):
the global and per-optimizer step pre- and post-hooks, ``_optimizer_step_code`` (the
profiler's entry point), and a ``record_function`` label ``Optimizer.step#<class>.step``
around it all. The label costs two op calls every step, profiler or not, a measurable
share of a small model's step (docs/PERFORMANCE.md, 'The step's fixed cost'). Outside a
profiler the label records nothing, so this wrapper enters it only inside one; the hooks run
exactly as torch.optim runs them. A step marked ``hooked`` is left as it is by
``Optimizer._patch_step_function``.
"""
from __future__ import annotations

import functools
from itertools import chain
from typing import Callable

import torch
from torch.optim import optimizer as _torch_optimizer


def hooked_step(step: Callable) -> Callable:
    """``step`` with the step hooks, and the profiler label while a profiler runs."""
    @functools.wraps(step)
    def wrapper(*args, **kwargs):
        self = args[0]
        if torch.autograd._profiler_enabled():
            with torch.autograd.profiler.record_function(
                    f"Optimizer.step#{type(self).__name__}.step"):
                return _with_hooks(step, self, args, kwargs)
        return _with_hooks(step, self, args, kwargs)

    wrapper.hooked = True
    return wrapper


def _with_hooks(step: Callable, self, args, kwargs):
    """What ``Optimizer.profile_hook_step`` runs inside its label, in its order."""
    # (most steps have no hooks: the chains are built only when there are)
    global_pre = _torch_optimizer._global_optimizer_pre_hooks
    if global_pre or self._optimizer_step_pre_hooks:
        for pre_hook in chain(global_pre.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(f"{step} must return None or a tuple of (new_args, "
                                       f"new_kwargs), but got {result}.")
    out = step(*args, **kwargs)
    self._optimizer_step_code()
    global_post = _torch_optimizer._global_optimizer_post_hooks
    if self._optimizer_step_post_hooks or global_post:
        for post_hook in chain(self._optimizer_step_post_hooks.values(), global_post.values()):
            post_hook(self, args, kwargs)
    return out
