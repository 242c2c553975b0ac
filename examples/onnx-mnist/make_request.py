"""Turn Azure ML's ONNX MNIST sample input into an Open Inference Protocol v2 request.

``mnist-predict-input.json`` is an ONNX ``TensorProto`` written as JSON: one
input ``Input3`` with ``dims`` (strings), ``dataType`` 1 (FLOAT) and ``rawData``,
the base64 of 784 little-endian float32 pixel values in 0-255. The v2 request
carries the same tensor as a flat row-major ``data`` list.

    python make_request.py                    # writes v2-request.json
    python make_request.py -i other.json -o -  # prints to stdout
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
# ONNX TensorProto.DataType codes this script understands, with their v2 names and NumPy dtypes.
ONNX_TYPES = {1: ("FP32", "<f4"), 6: ("INT32", "<i4"), 7: ("INT64", "<i8"), 11: ("FP64", "<f8")}


def tensor_to_v2(name: str, tensor: dict[str, Any]) -> dict[str, Any]:
    if tensor.get("dataType") not in ONNX_TYPES:
        raise ValueError(
            f"input {name!r} has ONNX dataType {tensor.get('dataType')!r}; readable: {sorted(ONNX_TYPES)}"
        )
    datatype, dtype = ONNX_TYPES[tensor["dataType"]]
    shape = [int(d) for d in tensor["dims"]]
    values = np.frombuffer(base64.b64decode(tensor["rawData"]), dtype=dtype)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"input {name!r}: {values.size} values do not fill shape {shape}")
    return {"name": name, "shape": shape, "datatype": datatype, "data": values.tolist()}


def to_v2_request(onnx_json: dict[str, Any]) -> dict[str, Any]:
    """All inputs; ``outputFilter`` is dropped because a v2 server returns every output by default."""
    return {"inputs": [tensor_to_v2(name, tensor) for name, tensor in onnx_json["inputs"].items()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input", type=Path, default=HERE / "mnist-predict-input.json")
    parser.add_argument("-o", "--output", default=str(HERE / "v2-request.json"), help="file, or - for stdout")
    args = parser.parse_args(argv)

    request = to_v2_request(json.loads(args.input.read_text()))
    text = json.dumps(request) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
