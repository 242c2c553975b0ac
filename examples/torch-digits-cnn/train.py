"""Train a small CNN on scikit-learn's digits with CPU PyTorch and export it to ONNX.

The FPGA variants need a real convolutional network to quantize; this one is
two 3x3 convolutions and a linear layer over the 8x8 digits (values 0-16, no
upsampling), about 5k parameters. Deterministic (fixed seeds, one thread), about
ten seconds on a laptop. Needs ``pip install torch==2.13.0`` (CPU build).

    python train.py                                   # writes outputs/digits-cnn.onnx
    python train.py --output ../../tests/fpga/data/   # refreshes the copy the tests use
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
MODEL_FILE = "digits-cnn.onnx"


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """float32 images [N, 1, 8, 8] in 0..16 and int labels, split as the sklearn example splits."""
    images, labels = load_digits(return_X_y=True)
    images = images.astype(np.float32).reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=SEED, stratify=labels
    )
    return x_train, x_test, y_train, y_test


class DigitsCNN(nn.Module):
    """conv3x3(8) → ReLU → conv3x3(16) → ReLU → maxpool2 → linear(10): logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def train(x: np.ndarray, y: np.ndarray, epochs: int = 30) -> DigitsCNN:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    model = DigitsCNN()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=gen).split(64):
            optim.zero_grad()
            loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            loss.backward()
            optim.step()
    return model.eval()


def export(model: DigitsCNN, path: Path) -> None:
    """ONNX with input ``input`` float32 [N, 1, 8, 8] and output ``logits`` float32 [N, 10]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but dependency-free (no onnxscript)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            opset_version=17,
            dynamo=False,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "outputs", help="folder for digits-cnn.onnx")
    args = parser.parse_args(argv)
    x_train, x_test, y_train, y_test = load_split()
    model = train(x_train, y_train)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    out = args.output / MODEL_FILE
    export(model, out)
    print(json.dumps({"model": str(out), "test_accuracy": round(accuracy, 4), "bytes": out.stat().st_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
