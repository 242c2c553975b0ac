"""The request bodies a profile sends: a JSON-lines file, one request body per line.

Each line is any JSON value. A JSON string is the request body itself (the form
of Azure's profiling datasets, whose rows were strings); any other value (an
object, an array, a number) is sent as its JSON text. Blank lines are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeship.errors import InputError

__all__ = ["MAX_SAMPLES", "MAX_SAMPLE_BYTES", "read_samples"]

MAX_SAMPLES = 10_000
MAX_SAMPLE_BYTES = 16 * 1024 * 1024  # one request body
MAX_FILE_BYTES = 256 * 1024 * 1024


def read_samples(path: Path) -> list[bytes]:
    """The request bodies of ``path``; a line that is not JSON is an InputError naming it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"--input-data {path} cannot be read ({exc.strerror}); give a JSON-lines file.") from exc
    if size > MAX_FILE_BYTES:
        raise InputError(f"--input-data {path} is larger than {MAX_FILE_BYTES // 2**20} MiB; give fewer samples.")
    bodies: list[bytes] = []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise InputError(
                    f"Line {number} of {path} is not JSON ({exc}); write one request body per line as JSON."
                ) from exc
            body = value.encode("utf-8") if isinstance(value, str) else line
            if len(body) > MAX_SAMPLE_BYTES:
                raise InputError(f"Line {number} of {path} is larger than {MAX_SAMPLE_BYTES // 2**20} MiB.")
            bodies.append(body)
            if len(bodies) > MAX_SAMPLES:
                raise InputError(f"{path} has more than {MAX_SAMPLES} samples; a profile needs a few hundred at most.")
    if not bodies:
        raise InputError(f"{path} holds no samples; write one JSON request body per line.")
    return bodies
