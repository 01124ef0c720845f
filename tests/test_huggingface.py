"""``secant_ext.huggingface.SecantTrainer`` on a real ``transformers`` model built from a
config (a two-layer GPT-2, nothing downloaded), on the CPU (docs/INTEGRATIONS.md, 'Hugging
Face Trainer'):

- a run equals docs/USAGE.md's loop on the same batches, bit for bit, with and without
  gradient accumulation (the loop computes each micro-batch's loss as Trainer does: the
  token sum over the whole accumulated batch);
- ``TrainingArguments.max_grad_norm`` is the optimizer's, over the whole model across
  param groups; the learning rate and schedule left at Trainer's defaults are the
  multiplier 1 and ``"constant"``, any other acts on the multiplier;
- the logs carry alpha, the step size and the curvature at the logging steps, read there
  only;
- evaluation works with and without ``average=True``; with it, checkpoints hold the
  averages as the model and the training iterate in the optimizer state, and a resumed run
  (``curvature_every=4`` too) continues bit for bit;
- the stock ``Trainer`` fails at its first step with an error that names ``SecantTrainer``.

``transformers`` is a test dependency (requirements-dev.txt)."""
from __future__ import annotations

import math
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")  # requirements-dev.txt: never skips in CI
from accelerate.state import AcceleratorState, GradientState  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, TrainerCallback, TrainingArguments  # noqa: E402

import secant_ext  # noqa: E402
from secant_ext import huggingface  # noqa: E402
from secant_ext.huggingface import SecantTrainer  # noqa: E402

BATCH = 8
STEPS = 6


@pytest.fixture(autouse=True)
def quiet_and_fresh():
    """transformers' info logs off; accelerate's process-wide singletons reset, so that
    Trainer's accumulation setting does not leak into other tests."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    transformers.logging.set_verbosity(verbosity)


def _model():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def _data(n=64):
    gen = torch.Generator().manual_seed(1)
    return [{"input_ids": t, "labels": t} for t in torch.randint(0, 64, (n, 16), generator=gen)]


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH,
                max_steps=STEPS, logging_steps=2, report_to=[], use_cpu=True,
                save_strategy="no", disable_tqdm=True, seed=0)
    return TrainingArguments(**{**base, **kw})


class Recorder(TrainerCallback):
    """What each optimizer step saw and did: the stats after the step, read in the test."""

    def __init__(self):
        self.stats = []

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        st = huggingface.secant_optimizer_of(optimizer).last_stats
        self.stats.append({k: getattr(st, k).clone() for k in
                           ("alpha", "step_size", "curvature", "grad_norm", "lr")})


def _batches_seen(trainer_cls, optimizer):
    """A trainer class that records the micro-batches at x_t (input ids and Trainer's
    token count) in the order it trains on them."""
    seen = []

    class Recording(trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not optimizer.in_lookahead:
                seen.append((inputs["input_ids"].clone(), num_items_in_batch))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
    return Recording, seen


def _readme_loop(seen, k, steps=STEPS, **options):
    """docs/USAGE.md's loop (accumulation when k > 1) on the batches Trainer used."""
    model = _model()
    opt = secant_ext.SecantSGD(model.parameters(), **options)
    losses = []   # per step: the losses of all its micro-batches at x_t, summed
    for step in range(steps):
        micro = seen[step * k:(step + 1) * k]
        opt.zero_grad()
        total = 0.0
        for ids, n in micro[:-1]:
            loss = model(input_ids=ids, labels=ids, num_items_in_batch=n).loss
            loss.backward()
            total += loss.item()
        ids, n = micro[-1]

        def closure():
            loss = model(input_ids=ids, labels=ids, num_items_in_batch=n).loss
            loss.backward()
            return loss
        losses.append(total + opt.step(closure).item())
    return model, opt, losses


def _assert_same_parameters(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("k", [1, 2], ids=["no-accumulation", "accumulate-2"])
def test_a_run_equals_the_readme_loop_bit_for_bit(tmp_path, k):
    model = _model()
    opt = secant_ext.SecantSGD(model.parameters())
    cls, seen = _batches_seen(SecantTrainer, opt)
    trainer = cls(model=model, args=_args(tmp_path, gradient_accumulation_steps=k),
                  train_dataset=_data(), optimizers=(opt, None))
    trainer.train()
    assert len(seen) == STEPS * k
    # Trainer's max_grad_norm (default 1.0) is the optimizer's own
    want, want_opt, losses = _readme_loop(seen, k, max_grad_norm=1.0)
    _assert_same_parameters(model, want)
    assert opt.param_groups[0]["max_grad_norm"] == 1.0
    assert torch.equal(opt.last_stats.alpha, want_opt.last_stats.alpha)
    # the training loss Trainer reports is the loss at x_t, not at the lookahead point
    # (logged every 2 steps: their mean, summed over the micro-batches of each step)
    logged = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    per_step = [(losses[i] + losses[i + 1]) / 2 for i in range(0, STEPS, 2)]
    assert logged == pytest.approx(per_step, rel=1e-6)


def test_max_grad_norm_clips_by_the_whole_models_norm_across_groups(tmp_path):
    """Trainer's decay / no-decay split (weight_decay > 0) gives two param groups; the clip
    uses the norm over both, as clip_grad_norm_(model.parameters()) does: each group's
    step is lr * alpha * min(1, max_grad_norm / (|g| + 1e-6)) with |g| over the model."""
    rec = Recorder()
    trainer = SecantTrainer(model=_model(), args=_args(tmp_path, weight_decay=0.01,
                                                       max_grad_norm=0.05),
                            train_dataset=_data(), callbacks=[rec])
    trainer.train()
    opt = huggingface.secant_optimizer_of(trainer.optimizer)
    assert len(opt.param_groups) == 2
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert [g["max_grad_norm"] for g in opt.param_groups] == [0.05, 0.05]
    bound = 0
    for st in rec.stats:
        norm = math.sqrt(sum(float(n) ** 2 for n in st["grad_norm"].double()))
        clip = min(1.0, 0.05 / (norm + 1e-6))
        bound += clip < 1
        for alpha, step_size in zip(st["alpha"].double().tolist(),
                                    st["step_size"].double().tolist()):
            assert step_size == pytest.approx(alpha * clip, rel=1e-12)
    assert bound == STEPS  # the clip bound at every step: the test means something
    # Trainer's grad_norm log is that same unclipped norm over the whole model
    logged = [e["grad_norm"] for e in trainer.state.log_history if "grad_norm" in e]
    norms = [math.sqrt(sum(float(n) ** 2 for n in st["grad_norm"].double()))
             for st in rec.stats]
    assert logged == pytest.approx([norms[1], norms[3], norms[5]], rel=1e-12)


def test_defaults_take_the_rules_own_step_and_a_constant_schedule(tmp_path):
    rec = Recorder()
    trainer = SecantTrainer(model=_model(), args=_args(tmp_path), train_dataset=_data(),
                            callbacks=[rec])
    trainer.train()
    opt = huggingface.secant_optimizer_of(trainer.optimizer)
    assert isinstance(opt, secant_ext.SecantAdam) and len(opt.param_groups) == 1
    assert [float(st["lr"]) for st in rec.stats] == [1.0] * STEPS
    assert [e["learning_rate"] for e in trainer.state.log_history if "loss" in e] == [1.0] * 3


def test_a_schedule_set_explicitly_acts_on_the_multiplier(tmp_path):
    rec = Recorder()
    trainer = SecantTrainer(
        model=_model(), args=_args(tmp_path, learning_rate=0.5, lr_scheduler_type="cosine"),
        train_dataset=_data(), callbacks=[rec],
        optimizer_cls_and_kwargs=(secant_ext.SecantSGDM, {"momentum": 0.9}))
    trainer.train()
    assert isinstance(huggingface.secant_optimizer_of(trainer.optimizer), secant_ext.SecantSGDM)
    want = [0.5 * 0.5 * (1 + math.cos(math.pi * t / STEPS)) for t in range(STEPS)]
    got = [float(st["lr"]) for st in rec.stats]
    assert got == pytest.approx(want, rel=1e-12)
    for st in rec.stats:   # the applied step: lr * alpha * clip (Trainer's max_grad_norm 1.0)
        clip = min(1.0, 1.0 / (float(st["grad_norm"]) + 1e-6))
        assert float(st["step_size"]) == pytest.approx(float(st["lr"] * st["alpha"]) * clip,
                                                       rel=1e-12)


def test_logs_carry_the_step_at_logging_steps_only(tmp_path, monkeypatch):
    reads = []
    real = huggingface.log_values
    monkeypatch.setattr(huggingface, "log_values", lambda opt: reads.append(1) or real(opt))
    rec = Recorder()
    trainer = SecantTrainer(model=_model(), args=_args(tmp_path, logging_steps=3),
                            train_dataset=_data(), callbacks=[rec])
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in logs] == [3, 6]
    assert len(reads) == 2   # the one host read of the stats is at the logging steps
    for entry in logs:
        st = rec.stats[entry["step"] - 1]
        assert entry["alpha"] == float(st["alpha"])
        assert entry["step_size"] == float(st["step_size"])
        assert entry["curvature"] == float(st["curvature"])


def test_the_stock_trainer_names_secant_trainer(tmp_path):
    model = _model()
    trainer = transformers.Trainer(model=model, args=_args(tmp_path), train_dataset=_data(),
                                   optimizers=(secant_ext.SecantSGD(model.parameters()), None))
    with pytest.raises(TypeError, match=r"secant_ext\.huggingface\.SecantTrainer"):
        trainer.train()


def test_a_trainer_that_is_given_another_optimizer_says_so(tmp_path):
    model = _model()
    trainer = SecantTrainer(model=model, args=_args(tmp_path), train_dataset=_data(),
                            optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None))
    with pytest.raises(TypeError, match="SGD: use transformers.Trainer"):
        trainer.train()


def test_evaluation_without_averaging_changes_nothing(tmp_path):
    """Trainer calls optimizer.eval() before evaluating and train() before the next step:
    without averaged weights both do nothing, and the run equals one without evaluation."""
    def run(**kw):
        model = _model()
        opt = secant_ext.SecantSGD(model.parameters())
        trainer = SecantTrainer(model=model, args=_args(tmp_path, **kw), train_dataset=_data(),
                                eval_dataset=_data(16), optimizers=(opt, None))
        trainer.train()
        return model, trainer
    evaluated, trainer = run(eval_strategy="steps", eval_steps=2)
    assert len([e for e in trainer.state.log_history if "eval_loss" in e]) == 3
    plain, _ = run()
    _assert_same_parameters(evaluated, plain)


def _averaging_run(tmp_path, name, steps, resume=None, cls=secant_ext.SecantSGD, **options):
    model = _model()
    opt = cls(model.parameters(), average=True, **options)
    args = _args(tmp_path, output_dir=str(tmp_path / name), max_steps=steps,
                 eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2)
    trainer = SecantTrainer(model=model, args=args, train_dataset=_data(),
                            eval_dataset=_data(16), optimizers=(opt, None))
    trainer.train(resume_from_checkpoint=resume)
    return model, opt, trainer


@pytest.mark.parametrize("options", [{}, {"curvature_every": 4, "curvature_warmup": 1},
                                     {"cls": secant_ext.SecantAdam, "curvature_every": 2,
                                      "curvature_warmup": 3}],
                         ids=["k1", "k4", "adam"])
def test_averages_are_evaluated_and_saved_and_a_resume_continues_bit_for_bit(tmp_path,
                                                                             options):
    from safetensors.torch import load_file

    model, opt, trainer = _averaging_run(tmp_path, "whole", STEPS, **options)
    # after train() the model holds the averaged weights, which evaluation used
    for p in model.parameters():
        assert torch.equal(p, opt.state[p]["average_buffer"])
    evaluated = trainer.evaluate()["eval_loss"]
    assert evaluated == [e["eval_loss"] for e in trainer.state.log_history
                         if "eval_loss" in e][-1]
    # a checkpoint's model is the averages; its optimizer state holds the training iterate
    ckpt = tmp_path / "whole" / "checkpoint-4"
    saved_model = load_file(os.path.join(ckpt, "model.safetensors"))
    saved_opt = torch.load(os.path.join(ckpt, "optimizer.pt"), weights_only=True)
    names = [n for n, _ in model.named_parameters()]
    for i, name in enumerate(names):
        state = saved_opt["state"][i]
        key = name if name in saved_model else "lm_head.weight"
        assert torch.equal(saved_model[key], state["average_buffer"]), name
        assert not torch.equal(state["training_iterate"], state["average_buffer"]), name
    assert saved_opt["secant_curvature_clock"] == 4
    # resumed from step 4, the run ends with the bits of the uninterrupted one
    resumed_model, resumed_opt, _ = _averaging_run(tmp_path, "whole", STEPS,
                                                   resume=str(ckpt), **options)
    _assert_same_parameters(resumed_model, model)
    resumed_opt.train()
    opt.train()
    _assert_same_parameters(resumed_model, model)   # the training iterates too
    for p, q in zip(resumed_model.parameters(), model.parameters()):
        assert torch.equal(resumed_opt.state[p]["average_buffer"],
                           opt.state[q]["average_buffer"])
    assert torch.equal(resumed_opt.last_stats.measured, opt.last_stats.measured)


def test_a_loss_scaler_is_refused(tmp_path):
    """fp16 training (fp16=True, on CUDA) gives accelerate a GradScaler: it would scale every
    closure's loss and unscale none of them, so the trainer refuses it, naming bf16."""
    model = _model()
    trainer = SecantTrainer(model=model, args=_args(tmp_path), train_dataset=_data(),
                            optimizers=(secant_ext.SecantSGD(model.parameters()), None))
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu")
    with pytest.raises(ValueError, match="bf16=True"):
        trainer.train()
