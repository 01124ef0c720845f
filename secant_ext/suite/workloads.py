"""The workloads, each declared once: what it is, its data, its budget in gradient
evaluations, the metric its target is set on, and how to build it for a seed.

Every metric is "lower is better": test error in percent for classifiers, validation bits
per byte for language models, held-out mean squared error for the autoencoder, the full
regularized training objective for the convex problem. A workload marked ``held_out`` is a
variant (width, depth, batch size, activation, data set) of a main workload that no
default of the package was chosen on: it is reported beside the main ones, never tuned on.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..experiments import datasets
from ..experiments.models import cross_entropy
from ..experiments.textlm import ByteTransformer, lm_loss, load_corpus
from . import tasks
from .tasks import Task


@dataclass(frozen=True)
class Context:
    """What a workload is built for: the seed, MNIST's folder (None: the stand-in), quick
    mode (smaller evaluations) and a folder for cached pretrained weights."""
    seed: int
    data_dir: Optional[str] = None
    quick: bool = False
    cache_dir: Optional[str] = None


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str                       # the kind of training it stands for
    summary: str                    # the model, in a few words
    data: str                       # the data, in a few words
    metric: str                     # what "metric" is, lower is better
    budget: int                     # gradient evaluations per run
    quick_budget: int               # ... under --quick
    build: Callable[[Context], Task] = field(repr=False)
    lr_grid: Tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # the ceiling's first grid
    transformer: bool = False       # Muon is raced on it
    held_out: bool = False          # a variant no default was chosen on
    base: Optional[str] = None      # the main workload it varies
    requires: Tuple[str, ...] = ()  # optional packages it needs (skipped, named, without)
    max_seeds: Optional[int] = None  # fewer seeds than --seeds, where 3 do not fit the day

    def budget_for(self, quick: bool) -> int:
        return self.quick_budget if quick else self.budget


# -- builders ------------------------------------------------------------------------------
def _byte_lm(d: int, layers: int, heads: int = 4, context: int = 64, batch: int = 32):
    def build(ctx: Context) -> Task:
        corpus = load_corpus(max_bytes=2_000_000 if ctx.quick else None)
        return Task(lambda: ByteTransformer(d, layers, heads, context),
                    tasks.window_batches(corpus.train, context, batch), lm_loss,
                    tasks.bpb_eval(corpus.val, context, 128 if ctx.quick else 512),
                    corpus.describe(), muon_split=tasks.hidden_matrices)
    return build


def _lstm_lm(hidden: int, layers: int, context: int = 64, batch: int = 32):
    def build(ctx: Context) -> Task:
        corpus = load_corpus(max_bytes=2_000_000 if ctx.quick else None)
        return Task(lambda: tasks.ByteLSTM(64, hidden, layers),
                    tasks.window_batches(corpus.train, context, batch), lm_loss,
                    tasks.bpb_eval(corpus.val, context, 128 if ctx.quick else 512),
                    corpus.describe())
    return build


def _images(ctx: Context) -> datasets.Dataset:
    """MNIST ([N, 1, 28, 28]) from ``--data-dir``, else scikit-learn's 8x8 digits."""
    return datasets.mnist_or_digits(ctx.data_dir, ctx.seed, flatten=False)


def _mlp(hidden: int, activation=nn.ReLU, batch: int = 64):
    def build(ctx: Context) -> Task:
        data = _images(ctx)
        d_in = math.prod(data.input_shape)
        return tasks.classification_task(
            data, lambda: tasks.mlp([d_in, hidden, 10], activation), batch)
    return build


def _resnet(width: int, batch: int = 64):
    def build(ctx: Context) -> Task:
        data = _images(ctx)
        return tasks.classification_task(data, lambda: tasks.resnet(1, 10, width, 1), batch)
    return build


def _vit(batch: int = 64):
    def build(ctx: Context) -> Task:
        data = _images(ctx)
        side = data.input_shape[-1]
        patch = 4 if side % 4 == 0 and side > 8 else 2
        task = tasks.classification_task(
            data, lambda: tasks.TinyViT(side, 1, 10, patch), batch)
        task.muon_split = tasks.hidden_matrices
        return task
    return build


L2 = 1e-3  # the convex problems' ridge term: a unique minimum, and a known smoothness


def _logreg(load: Callable[[int], datasets.Dataset], batch: int = 32):
    """Multinomial (binary: logistic) regression with an L2 term ``L2/2 |W|^2``; the metric
    is the full training objective, whose minimum the listing states."""
    def build(ctx: Context) -> Task:
        data = load(ctx.seed)
        d_in = data.input_shape[0]
        outputs = 1 if data.num_classes == 2 else data.num_classes

        def penalty(model):
            return 0.5 * L2 * model[1].weight.pow(2).sum()

        @torch.no_grad()
        def objective(model):
            out = model(data.x_train)
            return float(cross_entropy(out, data.y_train) + penalty(model))

        def evaluate(model):
            test = tasks.classification_eval(data.x_test, data.y_test)(model)
            return {"metric": objective(model), "loss": test["loss"],
                    "test_error": test["metric"]}
        task = Task(lambda: nn.Sequential(nn.Flatten(), nn.Linear(d_in, outputs)),
                    tasks.epoch_batches(data.x_train, data.y_train, batch), cross_entropy,
                    evaluate, data.describe(), penalty=penalty)
        best = optimum(task.model_fn, cross_entropy, penalty, data.x_train, data.y_train)
        task.data = f"{data.describe()}; the objective's minimum {best:.6f}"
        return task
    return build


def optimum(model_fn, loss_fn, penalty, x: torch.Tensor, y: torch.Tensor) -> float:
    """A regularized convex objective's minimum over ``(x, y)``, by full-batch L-BFGS in
    float64."""
    model = model_fn().double()
    x = x.double()
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y) + penalty(model)
        loss.backward()
        return loss
    for _ in range(5):
        opt.step(closure)
    with torch.no_grad():
        return float(loss_fn(model(x), y) + penalty(model))


def _autoencoder(batch: int = 32):
    """An MLP autoencoder of scikit-learn's digits (64 -> 32 -> 8 -> 32 -> 64), mean squared
    error on the standardized pixels."""
    def build(ctx: Context) -> Task:
        data = datasets.load_digits(ctx.seed)
        model_fn = lambda: tasks.mlp([64, 32, 8, 32, 64], nn.ReLU)  # noqa: E731
        return Task(model_fn, tasks.epoch_batches(data.x_train, data.x_train, batch),
                    F.mse_loss, tasks.mse_eval(data.x_test, lambda x: x),
                    "scikit-learn's digits (64 standardized pixels), 80/20 split")
    return build


def _small_data(load: Callable[[int], datasets.Dataset], hidden: int = 64, batch: int = 32):
    def build(ctx: Context) -> Task:
        data = load(ctx.seed)
        return tasks.classification_task(
            data, lambda: tasks.mlp([data.input_shape[0], hidden, data.num_classes]),
            batch)
    return build


# -- fine-tuning: a byte transformer pretrained on the standard library, then C headers ----
PRETRAIN_STEPS, PRETRAIN_STEPS_QUICK, PRETRAIN_LR = 400, 40, 3e-3


def pretrained_lm(ctx: Context) -> Dict[str, torch.Tensor]:
    """The ``lm`` model (2 blocks, d 128, context 64) after ``PRETRAIN_STEPS`` AdamW steps
    (lr 3e-3, 5% warm-up, cosine to 0, batch 32) on the standard library, from the seed's
    weights and batches; cached in ``ctx.cache_dir`` by seed and mode."""
    steps = PRETRAIN_STEPS_QUICK if ctx.quick else PRETRAIN_STEPS
    path = (os.path.join(ctx.cache_dir, f"pretrained-lm-s{ctx.seed}-{steps}.pt")
            if ctx.cache_dir else None)
    if path and os.path.exists(path):
        return torch.load(path, weights_only=True)
    from .methods import warmup_cosine
    corpus = load_corpus(max_bytes=2_000_000 if ctx.quick else None)
    torch.manual_seed(ctx.seed + 1000)
    model = ByteTransformer(128, 2, 4, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR)
    factor = warmup_cosine(steps, 0.05)
    batches = tasks.window_batches(corpus.train, 64, 32)(ctx.seed + 1000)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = PRETRAIN_LR * factor(step)
        x, y = next(batches)
        opt.zero_grad()
        lm_loss(model(x), y).backward()
        opt.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if path:
        os.makedirs(ctx.cache_dir, exist_ok=True)
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
    return state


def _finetune(lora_targets: Optional[Tuple[str, ...]] = None, rank: int = 8,
              batch: int = 32):
    def build(ctx: Context) -> Task:
        state = pretrained_lm(ctx)
        train, val, what = tasks.c_headers_corpus(300_000 if ctx.quick else None)

        def model_fn():
            model = ByteTransformer(128, 2, 4, 64)
            model.load_state_dict(state)
            if lora_targets is None:
                return model
            from peft import LoraConfig, get_peft_model
            return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank,
                                                    lora_dropout=0.0,
                                                    target_modules=list(lora_targets)))
        return Task(model_fn, tasks.window_batches(train, 64, batch), lm_loss,
                    tasks.bpb_eval(val, 64, 128 if ctx.quick else 512),
                    f"pretrained on the standard library "
                    f"({PRETRAIN_STEPS_QUICK if ctx.quick else PRETRAIN_STEPS} AdamW steps), "
                    f"then {what}",
                    muon_split=None if lora_targets else tasks.hidden_matrices)
    return build


def _wine(seed: int) -> datasets.Dataset:
    import numpy as np
    from sklearn.datasets import load_wine
    bunch = load_wine()
    x_tr, x_te, y_tr, y_te = datasets._split(bunch.data.astype(np.float32), bunch.target, seed)
    x_tr, x_te = datasets._standardize(x_tr, x_te)
    return datasets._as_dataset("wine", x_tr, x_te, y_tr, y_te, 3,
                                "scikit-learn's bundled wine set, 80/20 split")


# the many-epoch workload is the demo's own problem (``python -m secant_ext demo`` reads
# these): scikit-learn's digits, one hidden layer of 64, batch 32, 20 epochs of 44 batches
DIGITS_HIDDEN, DIGITS_BATCH, DIGITS_EPOCHS = 64, 32, 20
DIGITS_TRAIN = 1437  # 80% of the 1,797 digits

# the byte transformer of ``reproduce lm`` (its defaults read these) and of the lm workload
LM_D_MODEL, LM_LAYERS, LM_HEADS, LM_CONTEXT, LM_BATCH, LM_BUDGET = 128, 2, 4, 64, 32, 1500

_IMAGES = "MNIST with --data-dir, else scikit-learn's 8x8 digits"
_STDLIB = "the running Python's standard library (*.py)"
_FINETUNE = "stdlib-pretrained, then the Python C headers"
_LM_GRID = (1e-3, 3e-3, 1e-2, 2e-2, 3e-2)

WORKLOADS: Tuple[Workload, ...] = (
    Workload("lm", "byte transformer LM",
             f"{LM_LAYERS} blocks, d {LM_D_MODEL}, context {LM_CONTEXT}, batch {LM_BATCH}",
             _STDLIB, "val bits/byte", LM_BUDGET, 60,
             _byte_lm(LM_D_MODEL, LM_LAYERS, LM_HEADS, LM_CONTEXT, LM_BATCH), _LM_GRID,
             transformer=True),
    Workload("lm-large", "byte transformer LM", "4 blocks, d 192, context 64, batch 32",
             _STDLIB, "val bits/byte", 800, 40, _byte_lm(192, 4, heads=4), _LM_GRID,
             transformer=True, max_seeds=1),
    Workload("lstm-lm", "byte LSTM LM", "1 LSTM layer of 256, embedding 64, batch 32",
             _STDLIB, "val bits/byte", 1500, 60, _lstm_lm(256, 1), _LM_GRID),
    Workload("mlp", "MLP classifier", "one hidden layer of 128, ReLU, batch 64", _IMAGES,
             "test error %", 1000, 100, _mlp(128)),
    Workload("resnet-bn", "residual CNN with BatchNorm",
             "stem + 2 residual blocks (16, 32 channels), BatchNorm, batch 64", _IMAGES,
             "test error %", 1000, 60, _resnet(16)),
    Workload("vit", "tiny vision transformer", "2 pre-LN blocks, d 64, 4 heads, batch 64",
             _IMAGES, "test error %", 1000, 60, _vit(), transformer=True),
    Workload("logreg", "convex: logistic regression", f"linear, L2 {L2:g}, batch 32",
             "scikit-learn's breast cancer set", "train objective", 600, 100,
             _logreg(datasets.load_breast_cancer), (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
    Workload("autoencoder", "regression: autoencoder (MSE)",
             "MLP 64-32-8-32-64, ReLU, batch 32", "scikit-learn's digits", "test MSE", 1500,
             100, _autoencoder()),
    Workload("digits-epochs", "small data, many epochs",
             f"MLP 64-{DIGITS_HIDDEN}-10, ReLU, batch {DIGITS_BATCH}, {DIGITS_EPOCHS} epochs "
             "(the demo's)", "scikit-learn's digits", "test error %",
             DIGITS_EPOCHS * (DIGITS_TRAIN // DIGITS_BATCH),
             5 * (DIGITS_TRAIN // DIGITS_BATCH), _small_data(datasets.load_digits, DIGITS_HIDDEN,
                                                              DIGITS_BATCH)),
    Workload("finetune", "fine-tuning, full", "the lm model, every weight, batch 32",
             _FINETUNE, "val bits/byte", 600, 40, _finetune(), _LM_GRID, transformer=True),
    Workload("lora", "fine-tuning, LoRA (peft)", "the lm model, LoRA r 8 on qkv and proj",
             _FINETUNE, "val bits/byte", 600, 40, _finetune(("qkv", "proj")),
             (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), requires=("peft",)),
    # held-out variants: never used to choose a default
    Workload("lm-deep-narrow", "byte transformer LM", "4 blocks, d 96, context 64, batch 32",
             _STDLIB, "val bits/byte", 1000, 40, _byte_lm(96, 4), _LM_GRID,
             transformer=True, held_out=True, base="lm"),
    Workload("lstm-lm-2layer", "byte LSTM LM", "2 LSTM layers of 192, embedding 64, batch 32",
             _STDLIB, "val bits/byte", 1500, 40, _lstm_lm(192, 2), _LM_GRID, held_out=True,
             base="lstm-lm"),
    Workload("mlp-tanh", "MLP classifier", "one hidden layer of 256, tanh, batch 64",
             _IMAGES, "test error %", 1000, 100, _mlp(256, nn.Tanh), held_out=True,
             base="mlp"),
    Workload("resnet-bn-b16", "residual CNN with BatchNorm", "the resnet-bn model, batch 16",
             _IMAGES, "test error %", 1000, 60, _resnet(16, batch=16), held_out=True,
             base="resnet-bn"),
    Workload("logreg-wine", "convex: logistic regression", f"linear, 3 classes, L2 {L2:g}",
             "scikit-learn's wine set", "train objective", 600, 100, _logreg(_wine),
             (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1), held_out=True, base="logreg"),
    Workload("autoencoder-b128", "regression: autoencoder (MSE)",
             "the autoencoder, batch 128", "scikit-learn's digits", "test MSE", 1500, 100,
             _autoencoder(batch=128), held_out=True, base="autoencoder"),
    Workload("cancer-epochs", "small data, many epochs",
             "MLP 30-64-2, ReLU, batch 32, 40 epochs", "scikit-learn's breast cancer set",
             "test error %", 560, 140, _small_data(datasets.load_breast_cancer), held_out=True,
             base="digits-epochs"),
    Workload("lora-r16-mlp", "fine-tuning, LoRA (peft)",
             "the lm model, LoRA r 16 on every linear layer of the blocks", _FINETUNE,
             "val bits/byte", 600, 40, _finetune(("qkv", "proj", "fc", "out"), rank=16),
             (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), requires=("peft",), held_out=True,
             base="lora"),
)

BY_NAME: Dict[str, Workload] = {w.name: w for w in WORKLOADS}


def get(name: str) -> Workload:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; the workloads are "
                         f"{', '.join(BY_NAME)}") from None
