"""The optimizers under PyTorch Lightning's automatic optimization (the recipe of
docs/INTEGRATIONS.md, 'PyTorch Lightning'): Lightning passes its closure to ``step()``,
which calls it twice; a Lightning run is the hand-written loop with the same data,
bit for bit, with ``accumulate_grad_batches``, an lr scheduler and ``gradient_clip_val``
too (which warns that it pins alpha); logging skips the lookahead evaluation. ``lightning`` is a test dependency
(requirements-dev.txt)."""
from __future__ import annotations

import warnings

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

import secant_ext

# Lightning 2.6 with torch 2.13 warns about a deprecated torch pytree API on every fit.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:DeprecationWarning",
                                        "ignore:.*LeafSpec.*:FutureWarning")

STEPS = 6
BATCH = 16


def _data():
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(64, 8, generator=gen)
    w = torch.randn(8, 1, generator=gen)
    Y = 0.3 * (X @ w) + 0.1 * torch.randn(64, 1, generator=gen)
    return torch.utils.data.TensorDataset(X, Y)


def _loader(batch_size=BATCH):
    return torch.utils.data.DataLoader(_data(), batch_size=batch_size, shuffle=False)


def _batches(n, batch_size=BATCH):
    """The first ``n`` batches of the loader, over as many epochs as it takes."""
    out = []
    while len(out) < n:
        out.extend(_loader(batch_size))
    return out[:n]


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1))


def _loss(net, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(net(x), y)


class Regression(L.LightningModule):
    """A small MLP; records what Lightning calls and what the optimizer reports."""

    def __init__(self, optimizer_kwargs=None, scheduler=False, log_lookahead=False,
                 optimizer_cls=secant_ext.SecantSGD):
        super().__init__()
        self.net = _net()
        self.optimizer_cls = optimizer_cls
        self.optimizer_kwargs = optimizer_kwargs or {}
        self.scheduler = scheduler
        self.log_lookahead = log_lookahead
        self.in_lookahead = []     # per training_step call
        self.step_losses = []      # the loss at x_t, per optimizer step
        self.all_losses = []       # every training_step call's loss
        self.outputs = []          # on_train_batch_end's `outputs["loss"]`
        self.stats = []            # last_stats after each batch
        self.group_lr = []         # param_groups[0]["lr"] after each batch
        self.before_step_hooks = 0

    def training_step(self, batch, batch_idx):
        opt = self.optimizers().optimizer   # the SecantSGD inside Lightning's wrapper
        loss = _loss(self.net, batch)
        self.in_lookahead.append(opt.in_lookahead)
        self.all_losses.append(loss.detach().clone())
        if self.log_lookahead or not opt.in_lookahead:
            self.log("train_loss", loss, on_step=True, on_epoch=True)
        if not opt.in_lookahead:
            self.step_losses.append(loss.detach().clone())
        return loss

    def on_before_optimizer_step(self, optimizer):
        self.before_step_hooks += 1

    def on_train_batch_end(self, outputs, batch, batch_idx):
        opt = self.optimizers().optimizer
        self.outputs.append(outputs["loss"].clone())
        self.stats.append(opt.last_stats)
        self.group_lr.append(opt.param_groups[0]["lr"])

    def configure_optimizers(self):
        opt = self.optimizer_cls(self.parameters(), **self.optimizer_kwargs)
        if not self.scheduler:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _fit(module, steps=STEPS, batch_size=BATCH, **trainer_kwargs):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **trainer_kwargs)
    trainer.fit(module, _loader(batch_size))
    return trainer


def _plain_loop(batches, accumulate=1, clip=None, scheduler=False,
                optimizer_cls=secant_ext.SecantSGD, **optimizer_kwargs):
    """The hand-written loop: ``accumulate`` micro-batches per step, each loss divided by
    ``accumulate``; backward() on all but the last, whose closure does not zero."""
    net = _net()
    opt = optimizer_cls(net.parameters(), **optimizer_kwargs)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5) if scheduler \
        else None
    for start in range(0, len(batches), accumulate):
        group = batches[start:start + accumulate]
        opt.zero_grad()
        for batch in group[:-1]:
            (_loss(net, batch) / accumulate).backward()

        def closure():
            if accumulate == 1:
                opt.zero_grad()
            loss = _loss(net, group[-1]) / accumulate
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            return loss
        opt.step(closure)
        if sched is not None:
            sched.step()
    return net, opt


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


def _assert_same_params(module, net):
    for a, b in zip(module.net.parameters(), net.parameters()):
        assert torch.equal(a.detach(), b.detach())


# --- (a) the closure Lightning passes runs twice per step ---------------------------------
def test_lightning_calls_the_closure_twice_per_step():
    module = Regression()
    X, Y = _data().tensors
    first = _loss(module.net, (X, Y)).item()
    trainer = _fit(module)
    opt = module.optimizers().optimizer
    assert trainer.global_step == STEPS
    # training_step at x_t, then again at the lookahead point x_t + s
    assert len(module.in_lookahead) == 2 * STEPS
    assert module.in_lookahead == [False, True] * STEPS
    assert opt.last_stats.step.item() == STEPS
    alphas = [s.alpha.item() for s in module.stats]
    assert min(alphas) < 1.0          # curvature was measured, not clipped at every step
    # the loss on the whole data set went down, and the loss at x_t of every step too
    assert _loss(module.net, (X, Y)).item() < 0.5 * first
    assert module.step_losses[-1] < module.step_losses[0]


# --- (b) a Lightning run is the plain loop, bit for bit -----------------------------------
def test_lightning_equals_the_plain_loop():
    """Same init, same batches in the same order: Lightning's closure (training_step,
    zero_grad, backward) does the plain closure's arithmetic (zero_grad, forward,
    backward) and divides the loss by accumulate_grad_batches = 1, which is exact."""
    module = Regression()
    _fit(module)
    net, opt = _plain_loop(_batches(STEPS))
    _assert_same_params(module, net)
    assert torch.equal(module.optimizers().optimizer.last_stats.alpha, opt.last_stats.alpha)


# --- (c) accumulate_grad_batches ----------------------------------------------------------
def test_accumulate_grad_batches_adds_the_earlier_micro_batches():
    """accumulate_grad_batches=2: Lightning runs micro-batch 1 (training_step, zero_grad,
    backward on loss / 2) outside the step, then step(closure) on micro-batch 2 whose
    closure does not zero. The training gradient is the mean over both micro-batches; the
    curvature is measured with micro-batch 2's own gradient (of its loss / 2). That is the
    plain accumulation loop, bit for bit, and not the loop that drops micro-batch 1."""
    k = 2
    module = Regression()
    trainer = _fit(module, accumulate_grad_batches=k)
    opt = module.optimizers().optimizer
    assert trainer.global_step == STEPS
    assert opt.last_stats.step.item() == STEPS
    # per step: micro-batch 1 once, micro-batch 2 at x_t and at the lookahead point
    assert module.in_lookahead == [False, False, True] * STEPS
    net, _ = _plain_loop(_batches(k * STEPS), accumulate=k)
    _assert_same_params(module, net)
    dropped, _ = _plain_loop(_batches(k * STEPS)[1::2])
    assert not all(torch.equal(a.detach(), b.detach())
                   for a, b in zip(module.net.parameters(), dropped.parameters()))


@pytest.mark.parametrize("k", [1, 2], ids=["no-accumulation", "accumulate-2"])
def test_secant_adam_under_lightning_equals_the_plain_loop(k):
    """SecantAdam through Lightning: the closure runs twice on its measuring steps (the
    first step never measures) and once otherwise, and the run is the plain loop's, bit
    for bit, with and without accumulated micro-batches."""
    kwargs = dict(curvature_warmup=4, curvature_every=3, lr=30.0)
    module = Regression(optimizer_cls=secant_ext.SecantAdam, optimizer_kwargs=kwargs)
    _fit(module, accumulate_grad_batches=k)
    measured = [t >= 1 and (t < 4 or (t + 1) % 3 == 0) for t in range(STEPS)]
    earlier = [False] * (k - 1)
    assert module.in_lookahead == [flag for m in measured
                                   for flag in earlier + ([False, True] if m else [False])]
    net, opt = _plain_loop(_batches(k * STEPS), accumulate=k,
                           optimizer_cls=secant_ext.SecantAdam, **kwargs)
    _assert_same_params(module, net)
    assert torch.equal(module.optimizers().optimizer.last_stats.alpha, opt.last_stats.alpha)


# --- (d) an lr scheduler from configure_optimizers ----------------------------------------
def test_lr_scheduler_multiplies_the_measured_alpha():
    module = Regression(scheduler=True)
    _fit(module)
    used = [s.lr.item() for s in module.stats]
    assert used == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]          # StepLR(step_size=2, 0.5)
    # on_train_batch_end runs after Lightning has stepped a per-step scheduler: the
    # group's lr is the next step's
    assert module.group_lr == used[1:] + [0.125]
    assert module.optimizers().optimizer.param_groups[0]["lr"] == 0.125
    for s in module.stats:
        torch.testing.assert_close(s.step_size, s.lr * s.alpha, rtol=1e-15, atol=0)
    net, _ = _plain_loop(_batches(STEPS), scheduler=True)
    _assert_same_params(module, net)


# --- (e) logging only outside the lookahead -----------------------------------------------
def test_logging_skips_the_lookahead():
    """self.log guarded by ``in_lookahead``: the logged step value is the loss at x_t and
    the epoch value their mean. Unguarded, every step logs the lookahead loss too.
    Lightning's own ``outputs["loss"]`` (on_train_batch_end, the progress bar) is the
    *last* closure call's loss: the one at the lookahead point."""
    per_epoch = len(_loader())
    module = Regression()
    trainer = _fit(module, steps=per_epoch)   # one epoch
    x_t = torch.stack(module.step_losses)
    metrics = trainer.callback_metrics
    assert torch.equal(metrics["train_loss_step"], x_t[-1])
    torch.testing.assert_close(metrics["train_loss_epoch"], x_t.mean())
    lookahead = torch.stack(module.all_losses)[1::2]
    assert torch.equal(torch.stack(module.outputs), lookahead)
    assert not torch.equal(lookahead, x_t)

    unguarded = Regression(log_lookahead=True)
    trainer = _fit(unguarded, steps=per_epoch)
    assert torch.equal(trainer.callback_metrics["train_loss_step"],
                       unguarded.all_losses[-1])      # the lookahead loss
    torch.testing.assert_close(trainer.callback_metrics["train_loss_epoch"],
                               torch.stack(unguarded.all_losses).mean())


# --- (f) gradient_clip_val vs max_grad_norm -----------------------------------------------
def test_gradient_clip_val_clips_inside_the_closure_and_pins_alpha():
    """Lightning clips after every closure call (its precision plugin wraps the closure:
    closure, on_before_optimizer_step, clip), so the training and the lookahead gradients
    are both clipped to the same norm: ``<s, y> = |s|^2 (cos - 1) <= 0``, the curvature is
    clipped and alpha is 1 at every step. That is the plain loop that clips inside its
    closure, bit for bit."""
    clip = 0.05
    module = Regression()
    with pytest.warns(RuntimeWarning, match="gradient_clip_val.*max_grad_norm"):
        _fit(module, gradient_clip_val=clip)           # nothing silent: it warns, once
    assert module.before_step_hooks == 2 * STEPS     # the hooks run per closure call
    assert all(s.alpha.item() == 1.0 and s.clipped.item() for s in module.stats)
    net, _ = _plain_loop(_batches(STEPS), clip=clip)
    _assert_same_params(module, net)


def test_max_grad_norm_clips_the_step_and_keeps_alpha():
    """max_grad_norm (the optimizer's option) clips the step by the training gradient's
    norm while alpha is measured on the unclipped gradients: the first alpha is the one of
    the unclipped run, bit for bit, and every step moves at most lr * alpha * max_grad_norm."""
    clip = 0.05
    plain = Regression()
    _fit(plain, steps=1)
    module = Regression(optimizer_kwargs={"max_grad_norm": clip})
    before = torch.cat([p.detach().reshape(-1).clone() for p in module.net.parameters()])
    _fit(module, steps=1)
    after = torch.cat([p.detach().reshape(-1) for p in module.net.parameters()])
    stats = module.stats[0]
    assert torch.equal(stats.alpha, plain.stats[0].alpha)
    assert stats.alpha.item() < 1.0 and stats.grad_norm.item() > clip   # clipping bit
    assert (after - before).norm().item() <= stats.alpha.item() * clip * (1 + 1e-5)

    module = Regression(optimizer_kwargs={"max_grad_norm": clip})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(module)
    assert not [w for w in caught if "gradient_clip_val" in str(w.message)]
    assert min(s.alpha.item() for s in module.stats) < 1.0
    net, _ = _plain_loop(_batches(STEPS), max_grad_norm=clip)
    _assert_same_params(module, net)


# --- precision --------------------------------------------------------------------------
def test_bf16_mixed_runs():
    module = Regression()
    _fit(module, steps=2, precision="bf16-mixed")
    assert module.optimizers().optimizer.last_stats.step.item() == 2
    assert all(0 < s.alpha.item() <= 1 for s in module.stats)


def test_fp16_with_a_grad_scaler_is_refused():
    """precision="16-mixed" (on CUDA; Lightning turns it into bf16-mixed on CPU) runs the
    closure itself and then ``GradScaler.step(optimizer)`` without a closure: the step
    raises instead of training on one gradient."""
    module = Regression()
    scaler = torch.amp.GradScaler("cpu")
    before = _params(module.net)
    with pytest.raises((TypeError, RuntimeError), match="closure"):
        _fit(module, steps=1, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert all(torch.equal(a, b) for a, b in zip(before, _params(module.net)))
