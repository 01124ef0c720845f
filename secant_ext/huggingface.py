"""Hugging Face ``transformers.Trainer`` for the Secant optimizers: ``SecantTrainer``.

``Trainer`` computes each gradient itself and then calls ``optimizer.step()`` without a
closure; a secant step must evaluate the gradient again at a lookahead point. So on the
last micro-batch of each optimizer step, ``SecantTrainer.training_step`` runs the Secant
step with Trainer's own ``training_step`` as the closure (the earlier micro-batches'
gradients are accumulated, as in a plain loop), and Trainer's own ``optimizer.step()``
that follows does nothing. A run equals the plain loop of docs/INTEGRATIONS.md on the
same batches, bit for bit. What else it changes (each for a reason given where it is
done):

- ``TrainingArguments.max_grad_norm`` becomes the optimizer's ``max_grad_norm``: the step
  is clipped by the norm over the whole model, alpha is measured unclipped (Trainer's own
  clipping would run after the step and change nothing);
- the learning rate and the schedule left at ``TrainingArguments``' defaults become the
  multiplier 1.0 (the rule's own step) and ``"constant"``; any value set is used, as the
  multiplier of the measured step;
- the logs carry ``alpha``, ``step_size`` and ``curvature`` at Trainer's logging steps (the
  one host sync is there);
- with ``average=True``, evaluation, every checkpoint's model and the model after
  ``train()`` are the averaged weights, and the checkpoint's optimizer state holds the
  training iterate, so a resumed run continues it bit for bit.

Install with ``pip install secant_ext[huggingface]``; ``import secant_ext`` does not import
transformers.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional

import torch

try:
    import transformers
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_utils import SchedulerType
except ImportError as err:  # an optional extra
    raise ImportError("secant_ext.huggingface needs transformers: "
                      "pip install 'secant_ext[huggingface]'") from err

from . import _layout as layout
from ._base import SecantOptimizer
from .adam import SecantAdam

__all__ = ["SecantTrainer", "secant_optimizer_of", "log_values"]

logger = logging.getLogger(__name__)


def _default(name: str):
    return next(f.default for f in dataclasses.fields(TrainingArguments) if f.name == name)


def secant_optimizer_of(optimizer) -> Optional[SecantOptimizer]:
    """The Secant optimizer inside ``optimizer`` (accelerate's ``AcceleratedOptimizer`` and
    other wrappers keep it as ``.optimizer``), or None if there is none."""
    for _ in range(4):
        if isinstance(optimizer, SecantOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "optimizer", None)
    return None


def log_values(optimizer: SecantOptimizer) -> Dict[str, float]:
    """``alpha``, ``step_size`` and ``curvature`` of the latest step, read in one sync; with
    several param groups, one key per group (``alpha/0``, ``alpha/1``, ...)."""
    stats = optimizer.last_stats
    fields = (("alpha", stats.alpha), ("step_size", stats.step_size),
              ("curvature", stats.curvature))
    values = torch.stack([v.reshape(-1).to(torch.float64) for _, v in fields]).tolist()
    out = {}
    for (name, _), per_group in zip(fields, values):
        if len(per_group) == 1:
            out[name] = per_group[0]
        else:
            out.update({f"{name}/{i}": v for i, v in enumerate(per_group)})
    return out


class SecantTrainer(Trainer):
    """A ``transformers.Trainer`` that drives the Secant optimizers (a drop-in: the same
    arguments). Pass the optimizer as usual, ``optimizers=(SecantAdam(model.parameters()),
    None)``, or let it build one: ``optimizer_cls_and_kwargs=(SecantSGDM, {"momentum":
    0.9})``, ``SecantAdam()`` by default, one param group, or Trainer's decay and no-decay
    groups when ``weight_decay`` is set (then each group measures its own alpha)."""

    # -- the optimizer and the schedule ----------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = self._build_secant_optimizer(self.model if model is None else model)
        optimizer = secant_optimizer_of(self.optimizer)
        if optimizer is None:
            raise TypeError(f"SecantTrainer drives the secant_ext optimizers; got "
                            f"{type(self.optimizer).__name__}: use transformers.Trainer for it")
        if getattr(self.accelerator, "scaler", None) is not None:
            # The scaler would scale every closure's loss and unscale nothing: the step runs
            # outside its GradScaler.step.
            raise ValueError("SecantTrainer: fp16 with a loss scaler (fp16=True) is not "
                             "supported: a step evaluates three gradients inside closures "
                             "and a scaler unscales one. Use bf16=True.")
        self._clip_with_the_optimizer(optimizer)
        return self.optimizer

    def _build_secant_optimizer(self, model) -> SecantOptimizer:
        cls, kwargs = self.optimizer_cls_and_kwargs or (SecantAdam, {})
        if not (isinstance(cls, type) and issubclass(cls, SecantOptimizer)):
            raise TypeError(f"SecantTrainer's optimizer_cls_and_kwargs must name a secant_ext "
                            f"optimizer class, got {cls!r}")
        kwargs = dict(kwargs)
        kwargs.setdefault("lr", self._lr_multiplier())
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if self.args.weight_decay:
            decay = set(self.get_decay_parameter_names(model))
            groups = [{"params": [p for n, p in params if n in decay],
                       "weight_decay": self.args.weight_decay},
                      {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0}]
            groups = [g for g in groups if g["params"]]
        else:
            groups = [{"params": [p for _, p in params]}]
        return cls(groups, **kwargs)

    def _lr_multiplier(self) -> float:
        """``learning_rate`` is the multiplier of the measured step. Trainer's default (5e-5,
        an AdamW rate) would shrink the rule's step 20000-fold: left at the default, it is
        1.0, the rule's own step."""
        if self.args.learning_rate == _default("learning_rate"):
            logger.info("SecantTrainer: learning_rate left at Trainer's default; the "
                        "multiplier of the measured step is 1.0")
            return 1.0
        return self.args.learning_rate

    def _clip_with_the_optimizer(self, optimizer: SecantOptimizer) -> None:
        """``max_grad_norm`` of the arguments (Trainer's default 1.0) as the optimizer's
        own: it clips the step by the gradient norm over the whole model and measures alpha
        on the unclipped gradients. Trainer's ``clip_grad_norm_`` would run after the step
        and change nothing. ``max_grad_norm=0`` (or None) keeps the optimizer's setting."""
        limit = self.args.max_grad_norm
        if not limit or limit <= 0:
            return
        for i, group in enumerate(optimizer.param_groups):
            if group["max_grad_norm"] not in (None, limit):
                logger.warning(f"SecantTrainer: TrainingArguments.max_grad_norm={limit} "
                               f"replaces param_groups[{i}]['max_grad_norm']="
                               f"{group['max_grad_norm']}; pass max_grad_norm=0 in the "
                               "arguments to keep the optimizer's own")
            group["max_grad_norm"] = float(limit)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """``lr_scheduler_type`` left at Trainer's default (``"linear"``, decay to 0 over the
        run) becomes ``"constant"``: the rule measures the step size at every step, and a
        decay of its multiplier would take it to nothing however the curvature is. Any type
        set explicitly (warm-up, cosine, ...) acts on the multiplier as asked."""
        if self.lr_scheduler is None and \
                SchedulerType(self.args.lr_scheduler_type) == SchedulerType(
                    _default("lr_scheduler_type")):
            optimizer = self.optimizer if optimizer is None else optimizer
            self.lr_scheduler = transformers.get_scheduler(
                "constant", optimizer=optimizer, num_training_steps=num_training_steps)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    # -- the step ------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        """Earlier micro-batches: Trainer's own step (forward, backward, gradients
        accumulate). The last one: the Secant step, whose closure is Trainer's
        ``training_step`` (called at ``x_t`` and at the lookahead point); then Trainer's own
        ``optimizer.step()`` is told the gradients are not synced, so it does nothing."""
        if not self.accelerator.sync_gradients:
            return super().training_step(model, inputs, num_items_in_batch)
        optimizer = secant_optimizer_of(self.optimizer)
        optimizer.train()  # after an evaluation or a checkpoint in eval mode

        def closure():
            return super(SecantTrainer, self).training_step(model, inputs, num_items_in_batch)
        loss = optimizer.step(closure)
        self.accelerator.gradient_state._set_sync_gradients(False)
        return loss

    def _clip_grad_norm(self, model):
        """The unclipped gradient norm over the whole model, as Trainer's clipping returns
        it, from the step's own statistics (a device tensor: no sync, no extra pass). The
        clipping itself happened in the step (``max_grad_norm``)."""
        optimizer = secant_optimizer_of(self.optimizer)
        states = [optimizer._group_state(g) for g in optimizer.param_groups if g["params"]]
        return torch.stack([st[layout.G_SQ] for st in states]).sum().sqrt()

    def _get_grad_norm(self, model, grad_norm=None):
        return self._clip_grad_norm(model) if grad_norm is None else grad_norm

    # -- logs, evaluation and checkpoints ------------------------------------------------
    def log(self, logs, *args, **kwargs):
        """Training logs (the ones with ``loss``) also carry ``alpha``, ``step_size`` (what
        the step applied: ``lr * alpha * clip``) and ``curvature``; ``learning_rate`` is the
        multiplier."""
        optimizer = secant_optimizer_of(self.optimizer)
        if "loss" in logs and optimizer is not None and optimizer.state:
            logs = {**logs, **log_values(optimizer)}
        return super().log(logs, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        """Save in eval mode (a no-op without ``average=True``): the checkpoint's model is
        the averaged weights, what evaluation uses and what inference wants, and its
        optimizer state holds the training iterate, which the next training step puts back
        (also after a resume)."""
        optimizer = secant_optimizer_of(self.optimizer)
        if optimizer is not None:
            optimizer.eval()
        return super()._save_checkpoint(model, trial)

    def train(self, *args, **kwargs):
        """Trainer's ``train``; afterwards the model holds the averaged weights when the
        optimizer keeps them (``average=True``), whatever the last step was, as evaluation
        and the checkpoints have them. ``optimizer.train()`` puts the training iterate back
        (the next ``train()`` does it itself)."""
        output = super().train(*args, **kwargs)
        optimizer = secant_optimizer_of(self.optimizer)
        if optimizer is not None:
            optimizer.eval()
        return output
