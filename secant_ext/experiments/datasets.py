"""The data sets of the experiments, as in-memory tensors.

MNIST comes from IDX files in a directory (``--data-dir``); scikit-learn's bundled digits
and breast cancer sets need no download; any LIBSVM/svmlight file can be given by path.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from ._deps import require
from .idx import DataError, _read_bytes, read_idx

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# MNIST's published pixel mean and standard deviation (after scaling to [0, 1])
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass
class Dataset:
    """Train and test tensors. ``num_classes == 2`` means binary labels in {0, 1}."""
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    note: str = ""

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    def subset(self, max_train: Optional[int], max_test: Optional[int]) -> "Dataset":
        """The first ``max_train`` / ``max_test`` examples (for quick runs and tests)."""
        if not max_train and not max_test:
            return self
        tr = slice(0, max_train or None)
        te = slice(0, max_test or None)
        note = f"{self.note} (subset: {max_train or 'all'} train, {max_test or 'all'} test)"
        return Dataset(self.name, self.x_train[tr], self.y_train[tr], self.x_test[te],
                       self.y_test[te], self.num_classes, note.strip())

    def describe(self) -> str:
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test, "
                f"input {self.input_shape}, {self.num_classes} classes"
                + (f"; {self.note}" if self.note else ""))


def _find(data_dir: str, stem: str) -> str:
    """The path of ``stem`` in ``data_dir``, gzip or plain, also in the ``.idx3`` spelling."""
    variants = [stem, stem.replace("-idx", ".idx")]
    for v in variants:
        for candidate in (v + ".gz", v):
            path = os.path.join(data_dir, candidate)
            if os.path.isfile(path):
                return path
    raise DataError(f"MNIST file {stem}[.gz] not found in {data_dir} (a MNIST directory "
                    f"holds {', '.join(f + '.gz' for f in MNIST_FILES.values())}, gzip or "
                    "plain)")


def load_mnist(data_dir: str, flatten: bool = False) -> Dataset:
    """MNIST from the four IDX files in ``data_dir``: 60,000 train / 10,000 test images,
    scaled to [0, 1] and standardized; shape ``[N, 1, 28, 28]`` (``[N, 784]`` flattened)."""
    if not os.path.isdir(data_dir):
        what = "is not a directory" if os.path.exists(data_dir) else "does not exist"
        raise DataError(f"MNIST data directory {data_dir} {what}; pass --data-dir with the "
                        "directory holding the four MNIST IDX files")
    arrays = {key: read_idx(_find(data_dir, stem)) for key, stem in MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"MNIST {split} files in {data_dir} do not match: images of "
                            f"shape {images.shape}, labels of shape {labels.shape} (expected "
                            "[N, rows, cols] and [N])")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"MNIST {split} labels in {data_dir} outside 0..9 "
                            f"(min {labels.min()}, max {labels.max()})")

    def images(a):
        x = (torch.from_numpy(a.astype(np.float32)) / 255.0 - MNIST_MEAN) / MNIST_STD
        return x.reshape(len(a), -1) if flatten else x.unsqueeze(1)

    return Dataset("mnist", images(arrays["train_images"]),
                   torch.from_numpy(arrays["train_labels"].astype(np.int64)),
                   images(arrays["test_images"]),
                   torch.from_numpy(arrays["test_labels"].astype(np.int64)), 10,
                   note="IDX files of --data-dir")


def mnist_sha256(data_dir: str) -> Dict[str, str]:
    """SHA-256 of the MNIST IDX files in ``data_dir``, by file name: of the uncompressed
    bytes, so a gzip and a plain copy of a file give the same. A run records these in
    ``meta.json`` instead of the directory's path. Missing or unreadable files are left out
    (loading them reports the error)."""
    sums: Dict[str, str] = {}
    if not os.path.isdir(data_dir):
        return sums
    for stem in MNIST_FILES.values():
        try:
            path = _find(data_dir, stem)
            sums[os.path.basename(path)] = hashlib.sha256(_read_bytes(path)).hexdigest()
        except DataError:
            continue
    return sums


def _split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float = 0.2):
    """A stratified, seeded train/test split."""
    model_selection = require("sklearn.model_selection")
    return model_selection.train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                            stratify=y)


def _standardize(x_tr: np.ndarray, x_te: np.ndarray):
    """Scale features with the training set's mean and spread (constant features stay 0)."""
    mean, std = x_tr.mean(0), x_tr.std(0)
    std[std == 0] = 1.0
    return (x_tr - mean) / std, (x_te - mean) / std


def _as_dataset(name, x_tr, x_te, y_tr, y_te, num_classes, note="") -> Dataset:
    return Dataset(name, torch.as_tensor(x_tr, dtype=torch.float32),
                   torch.as_tensor(y_tr, dtype=torch.int64),
                   torch.as_tensor(x_te, dtype=torch.float32),
                   torch.as_tensor(y_te, dtype=torch.int64), num_classes, note)


def load_digits(seed: int = 0, image: bool = False) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), split 80/20, standardized."""
    sk = require("sklearn.datasets")
    bunch = sk.load_digits()
    x_tr, x_te, y_tr, y_te = _split(bunch.data.astype(np.float32), bunch.target, seed)
    x_tr, x_te = _standardize(x_tr, x_te)
    if image:
        x_tr, x_te = x_tr.reshape(-1, 1, 8, 8), x_te.reshape(-1, 1, 8, 8)
    return _as_dataset("digits", x_tr, x_te, y_tr, y_te, 10,
                       "scikit-learn's bundled digits, 80/20 split")


def load_breast_cancer(seed: int = 0) -> Dataset:
    """scikit-learn's bundled Wisconsin breast cancer set (569 x 30), binary, split 80/20."""
    sk = require("sklearn.datasets")
    bunch = sk.load_breast_cancer()
    x_tr, x_te, y_tr, y_te = _split(bunch.data.astype(np.float32), bunch.target, seed)
    x_tr, x_te = _standardize(x_tr, x_te)
    return _as_dataset("breast_cancer", x_tr, x_te, y_tr, y_te, 2,
                       "scikit-learn's bundled breast cancer set, 80/20 split")


def mnist_even_odd(data_dir: str) -> Dataset:
    """MNIST as a binary problem: label 1 for odd digits, 0 for even ones."""
    m = load_mnist(data_dir, flatten=True)
    return Dataset("mnist_even_odd", m.x_train, m.y_train % 2, m.x_test, m.y_test % 2, 2,
                   m.note)


def load_svmlight(path: str, seed: int = 0) -> Dataset:
    """A LIBSVM/svmlight file, split 80/20 (stratified), standardized. Two distinct labels
    become {0, 1}; more become class indices 0..K-1."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"svmlight file not found: {path}")
    sk = require("sklearn.datasets")
    try:
        x, y = sk.load_svmlight_file(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse svmlight file {path}: {exc}") from exc
    labels = np.unique(y)
    if len(labels) < 2:
        raise DataError(f"svmlight file {path} has a single label ({labels}); a "
                        "classification problem needs two or more")
    y = np.searchsorted(labels, y)  # sorted labels -> 0..K-1 (so -1/+1 -> 0/1)
    x = x.toarray().astype(np.float32)
    x_tr, x_te, y_tr, y_te = _split(x, y, seed)
    x_tr, x_te = _standardize(x_tr, x_te)
    return _as_dataset(os.path.basename(path), x_tr, x_te, y_tr, y_te, len(labels),
                       f"svmlight file {path}, 80/20 split")


def mnist_or_digits(data_dir: Optional[str], seed: int, flatten: bool):
    """MNIST from ``data_dir``; scikit-learn's digits when no directory is given."""
    if data_dir:
        return load_mnist(data_dir, flatten=flatten)
    ds = load_digits(seed, image=not flatten)
    ds.note = ("no --data-dir given: using scikit-learn's bundled 8x8 digits instead of "
               "MNIST")
    return ds
