"""Undecorated run(): gets the body as text; also exercises Azure's response encoding."""

import json

import numpy as np

state = {}


def init():
    state["calls"] = 0


def run(data, request_headers=None):
    state["calls"] += 1
    if data == "boom":
        raise ValueError("boom requested")
    if data == "numpy":
        return {"array": np.arange(3, dtype=np.int64), "scalar": np.float32(1.5)}
    if data == "text":
        return "plain text"
    if data == "none":
        return None
    return {
        "type": type(data).__name__,
        "data": data,
        "parsed": json.loads(data) if data.startswith(("{", "[")) else None,
        "header": (request_headers or {}).get("X-Test"),
        "calls": state["calls"],
    }
