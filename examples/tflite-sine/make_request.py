"""Open Inference Protocol v2 requests for the tflite-micro sine models, and decoding of the replies.

Tensor names, dtypes and quantization come from the model itself, so the same
script serves the float model and the int8 one (whose input is quantized here
and whose output is dequantized by ``--decode``).

    python make_request.py 1.57                                  # one request on stdout
    python make_request.py 0 1.57 3.14 4.71                      # one request per line
    python make_request.py --model hello_world_int8.tflite 1.57 -o req.json
    curl ... | python make_request.py --model hello_world_int8.tflite --decode
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
V2_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int8): "INT8", np.dtype(np.uint8): "UINT8"}


def load_interpreter(model: Path) -> Any:
    """A TFLite interpreter from ai-edge-litert, or tflite-runtime on older devices."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            sys.exit("No TFLite interpreter: pip install ai-edge-litert (or tflite-runtime).")
    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    return interpreter


def quantize(x: float, dtype: np.dtype, scale: float, zero_point: int) -> int | float:
    """Real value to storage value: ``q = round(x / scale) + zero_point``, clipped to the dtype's range."""
    if dtype.kind == "f":
        return float(x)
    info = np.iinfo(dtype)
    return int(np.clip(round(x / scale) + zero_point, info.min, info.max))


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Storage value to real value: ``x = (q - zero_point) * scale``; float tensors (scale 0) pass through."""
    if scale == 0:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


def make_request(x: float, detail: dict[str, Any]) -> dict[str, Any]:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    return {
        "inputs": [
            {
                "name": detail["name"],
                "shape": [int(d) for d in detail["shape"]],
                "datatype": V2_DATATYPES[dtype],
                "data": [quantize(x, dtype, scale, zero_point)],
            }
        ]
    }


def decode_response(response: dict[str, Any], detail: dict[str, Any]) -> list[float]:
    output = next(o for o in response["outputs"] if o["name"] == detail["name"])
    scale, zero_point = detail["quantization"]
    return dequantize(np.asarray(output["data"]), scale, zero_point).ravel().tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("x", nargs="*", type=float, help="input values (radians, 0 to 2*pi)")
    parser.add_argument("--model", type=Path, default=HERE / "hello_world_float.tflite")
    parser.add_argument("-o", "--output", type=Path, help="write the request here (one x only)")
    parser.add_argument("--decode", action="store_true", help="read a v2 response on stdin, print y")
    args = parser.parse_args(argv)

    interpreter = load_interpreter(args.model)
    if args.decode:
        for y in decode_response(json.load(sys.stdin), interpreter.get_output_details()[0]):
            print(f"{y:.4f}")
        return 0
    if not args.x:
        parser.error("give at least one x value")
    requests = [make_request(x, interpreter.get_input_details()[0]) for x in args.x]
    if args.output:
        if len(requests) != 1:
            parser.error("-o takes one x value")
        args.output.write_text(json.dumps(requests[0]) + "\n")
    else:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
