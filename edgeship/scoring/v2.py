"""The Open Inference Protocol (KServe v2) REST codec: JSON <-> named numpy arrays.

Pure functions over data; the app routes, the services compute. Tensor data is
accepted flat or nested (row-major) and always answered flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeship.scoring.backends import TensorSpec
from edgeship.scoring.errors import RequestError

__all__ = [
    "DATATYPES",
    "check_inputs",
    "datatype_of",
    "decode_infer_request",
    "encode_infer_response",
    "model_metadata",
]

DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
_BY_DTYPE = {np.dtype(t): name for name, t in DATATYPES.items() if name != "BYTES"}


def datatype_of(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_DTYPE[dtype]
    except KeyError:
        raise RequestError(
            f"Tensors of numpy dtype {dtype} have no Open Inference Protocol datatype."
        ) from None


def _decode_tensor(item: Any, position: int) -> tuple[str, np.ndarray]:
    if not isinstance(item, dict):
        raise RequestError(f"inputs[{position}] must be an object with name, shape, datatype and data.")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in item]
    if missing:
        raise RequestError(f"inputs[{position}] lacks {', '.join(missing)}.")
    name, datatype, shape = item["name"], item["datatype"], item["shape"]
    if not isinstance(name, str):
        raise RequestError(f"inputs[{position}].name must be a string.")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise RequestError(
            f"Input {name!r} has unknown datatype {datatype!r}; use one of {', '.join(DATATYPES)}."
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise RequestError(f"Input {name!r} has shape {shape!r}; a shape is a list of non-negative integers.")
    try:
        array = np.asarray(item["data"], dtype=DATATYPES[datatype])
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(f"Input {name!r}: data is not {datatype} ({exc}).") from None
    expected = math.prod(shape)  # Python ints: a huge shape cannot wrap around as numpy's int64 would
    if array.size != expected:
        raise RequestError(f"Input {name!r} has {array.size} values but shape {shape} needs {expected}.")
    try:
        return name, array.reshape(shape)
    except (ValueError, OverflowError) as exc:  # e.g. a zero-size shape with a dimension numpy cannot index
        raise RequestError(f"Input {name!r} cannot have shape {shape} ({exc}).") from None


def decode_infer_request(body: Any) -> tuple[dict[str, np.ndarray], list[str] | None, Any]:
    """Return (inputs by name, requested output names or None, request id)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise RequestError('An inference request is a JSON object with a non-empty "inputs" list.')
    if not isinstance(body.get("id", ""), str):
        raise RequestError('"id" must be a string; the response echoes it.')
    if not isinstance(body.get("parameters", {}), dict):
        raise RequestError('"parameters" must be a JSON object.')
    inputs = dict(_decode_tensor(item, i) for i, item in enumerate(body["inputs"]))
    outputs = body.get("outputs")
    requested = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and "name" in o for o in outputs):
            raise RequestError('"outputs" must be a list of objects with a "name".')
        requested = [str(o["name"]) for o in outputs]
    return inputs, requested, body.get("id")


def check_inputs(inputs: dict[str, np.ndarray], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Match request tensors to a model's inputs: names, then dtype (same-kind casts only), then shape."""
    expected = {s.name for s in specs}
    unknown = sorted(set(inputs) - expected)
    missing = sorted(expected - set(inputs))
    if unknown or missing:
        raise RequestError(
            f"The model's inputs are {sorted(expected)}; "
            + "; ".join(
                filter(
                    None, [f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else ""]
                )
            )
            + "."
        )
    checked: dict[str, np.ndarray] = {}
    for spec in specs:
        array = inputs[spec.name]
        want = np.dtype(DATATYPES[spec.datatype])
        if array.dtype != want:
            if not np.can_cast(array.dtype, want, casting="same_kind"):
                raise RequestError(
                    f"Input {spec.name!r} is {datatype_of(array.dtype)} but the model takes {spec.datatype}."
                )
            array = array.astype(want)
        if len(array.shape) != len(spec.shape) or any(
            d != -1 and d != got for d, got in zip(spec.shape, array.shape, strict=True)
        ):
            raise RequestError(
                f"Input {spec.name!r} has shape {list(array.shape)} "
                f"but the model takes {list(spec.shape)} (-1: any)."
            )
        checked[spec.name] = array
    return checked


def _tensor_json(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = datatype_of(array.dtype)
    flat = array.reshape(-1)
    data: Any
    if datatype == "BYTES":
        data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat.tolist()]
    else:
        data = np.ascontiguousarray(flat)
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def encode_infer_response(
    model_name: str,
    model_version: str | None,
    outputs: dict[str, np.ndarray],
    requested: list[str] | None,
    request_id: Any,
) -> dict[str, Any]:
    if requested is not None:
        unknown = sorted(set(requested) - set(outputs))
        if unknown:
            raise RequestError(f"Unknown outputs {unknown}; the model's outputs are {sorted(outputs)}.")
        outputs = {name: outputs[name] for name in requested}
    doc: dict[str, Any] = {
        "model_name": model_name,
        "outputs": [_tensor_json(name, np.asarray(array)) for name, array in outputs.items()],
    }
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    return doc


def model_metadata(
    name: str,
    versions: list[str],
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    parameters: dict[str, Any],
) -> dict[str, Any]:
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": [s.to_json() for s in inputs],
        "outputs": [s.to_json() for s in outputs],
        "parameters": parameters,
    }
