"""Train a small MLP on scikit-learn's digits, convert it to ONNX and optionally register it.

Deterministic: the split and the network use fixed seeds, so two runs write the
same model and print the same accuracy. Runs in about a second on a laptop.

    python train.py                      # writes outputs/digits.onnx and outputs/metrics.json
    python train.py --register           # ... and registers it as the next version of "digits"
    python train.py --register --workspace /tmp/ws --output-dir /tmp/out
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent
MODEL_NAME = "digits"
MODEL_FILE = "digits.onnx"
SEED = 0
# Capping the opsets keeps the model loadable by the older onnxruntime builds found on devices.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed train/test split: float32 pixel rows of 64 values in 0..16, and int labels."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=0.25, random_state=SEED, stratify=y
    )
    return x_train, x_test, y_train, y_test


def train(x_train: np.ndarray, y_train: np.ndarray) -> MLPClassifier:
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # an unconverged model is a bug here
        clf.fit(x_train, y_train)
    return clf


def convert(clf: MLPClassifier, path: Path) -> None:
    """ONNX with input ``input`` float32 [None, 64], outputs ``label`` int64 and ``probabilities`` float32."""
    onx = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(clf): {"zipmap": False}},  # probabilities as a plain [N, 10] tensor, not a list of maps
        target_opset=TARGET_OPSET,
    )
    # skl2onnx names the graph with a random uuid and orders opset imports by set iteration;
    # fixing both makes two trainings write the same bytes (and so the same registry digest).
    onx.graph.name = "digits_mlp"
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    onx.doc_string = "MLPClassifier on scikit-learn digits (8x8 pixels, values 0-16), converted by skl2onnx."
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())


def onnx_accuracy(path: Path, x_test: np.ndarray, y_test: np.ndarray) -> float:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, _ = session.run(None, {"input": x_test})
    return float(np.mean(labels == y_test))


def sample_request(x_test: np.ndarray, y_test: np.ndarray, rows: int = 5) -> tuple[dict, dict]:
    """The first ``rows`` test digits in Azure ML's request shape, and their true labels."""
    request = {"data": x_test[:rows].tolist()}
    expected = {"predictions": [int(label) for label in y_test[:rows]]}
    return request, expected


def register(model_path: Path, workspace_dir: str | None, accuracy: float) -> str:
    # Imported here so training works without edgeship installed.
    from edgeship.registry import Model
    from edgeship.workspace import Workspace

    workspace = Workspace.at(workspace_dir)
    workspace.create()  # idempotent: an existing workspace is kept as it is
    model = Model.register(
        workspace,
        model_path,
        MODEL_NAME,
        tags={"framework": "onnx", "dataset": "digits", "algorithm": "MLPClassifier"},
        properties={"accuracy": f"{accuracy:.4f}", "input": "float32[None,64]"},
        description="scikit-learn MLPClassifier on the digits dataset, converted with skl2onnx",
        model_framework="onnx",
    )
    return f"{model.name}:{model.version} {model.digest} in {workspace.root}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=HERE / "outputs", help="where digits.onnx goes")
    parser.add_argument("--register", action="store_true", help="register the model in the workspace")
    parser.add_argument("--workspace", default=None, help="workspace folder (default: $EDGESHIP_HOME)")
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load_split()
    clf = train(x_train, y_train)
    model_path = args.output_dir / MODEL_FILE
    convert(clf, model_path)
    sk_accuracy = float(clf.score(x_test, y_test))
    ort_accuracy = onnx_accuracy(model_path, x_test, y_test)

    request, expected = sample_request(x_test, y_test)
    metrics = {"accuracy": ort_accuracy, "sklearn_accuracy": sk_accuracy, "test_rows": len(y_test)}
    (args.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (args.output_dir / "sample-request.json").write_text(json.dumps(request) + "\n")
    (args.output_dir / "sample-expected.json").write_text(json.dumps(expected) + "\n")

    print(f"wrote {model_path}")
    print(f"test accuracy (scikit-learn): {sk_accuracy:.4f}")
    print(f"test accuracy (onnxruntime): {ort_accuracy:.4f}")
    if args.register:
        print(f"registered {register(model_path, args.workspace, ort_accuracy)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
