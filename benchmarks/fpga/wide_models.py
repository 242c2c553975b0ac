"""Wider models for the benchmark, trained at run time with CPU PyTorch on scikit-learn's digits.

The digits MLP, CNN and CNTK net have 5-10k parameters: a batch-32 run takes
0.01-1 ms and is dominated by kernel dispatch and by convolutions too thin (1-16
channels) for int8 GEMM kernels, so int8 cannot pay off on a CPU there
(``op_profile.py`` shows it per operator). These two are the size of small
production classifiers, where the int8 matrix products dominate:

* a 784-1024-1024-10 MLP on digits upsampled to 28x28 (1.86M parameters, 7.5 MB);
* a CNN conv3x3(64) → conv3x3(128) → pool → conv3x3(256) → pool → linear(10) on
  the 8x8 digits (380k parameters, 1.5 MB).

Fixed seeds, one thread, a few seconds each; nothing is downloaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["wide_cnn", "wide_mlp"]

SEED = 0


def _train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int) -> nn.Module:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=gen).split(64):
            optim.zero_grad()
            nn.functional.cross_entropy(model(xs[idx]), ys[idx]).backward()
            optim.step()
    return model.eval()


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """ONNX with input ``input`` [N, ...] and output ``logits`` [N, 10]."""
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def wide_mlp(images: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """Train on ``images`` [N, 784] (0-1) for 5 epochs and export to ``path``."""
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    return _export(_train(model, images, labels, epochs=5), torch.zeros(1, 784), path)


def wide_cnn(images: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """Train on ``images`` [N, 1, 8, 8] (0-16) for 4 epochs and export to ``path``."""
    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256 * 2 * 2, 10),
    )
    return _export(_train(model, images, labels, epochs=4), torch.zeros(1, 1, 8, 8), path)
