"""``azureml.monitoring.ModelDataCollector``: collects model inputs and predictions as JSON lines.

Azure ML ships collected rows to blob storage as CSV. On the edge they go to the
service's data folder (``EDGESHIP_DATA_DIR``, set by ``edgeship serve``):
``<data dir>/modeldata/<model>/<designation>/<yyyy>/<mm>/<dd>/data.jsonl``, one
JSON object per ``collect`` call. Each line is written with a single ``write`` on
a file opened for append, so several workers can share one file without
interleaving lines.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

__all__ = ["ModelDataCollector"]


def _plain(value: Any) -> Any:
    """Make numpy arrays, numpy scalars and pandas frames JSON-encodable."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):
        return value.to_dict(orient="records")
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


class ModelDataCollector:
    """Azure ML's data collector API, writing locally."""

    def __init__(
        self,
        model_name: str,
        designation: str = "default",
        feature_names: list[str] | None = None,
        workspace: str = "default/default/default",
        webservice_name: str = "default",
        model_version: str = "default",
        identifier: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.designation = designation
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.webservice_name = os.environ.get("SERVICE_NAME", webservice_name)
        self.model_version = str(model_version)
        self.identifier = identifier
        self._lock = threading.Lock()
        root = os.environ.get("EDGESHIP_DATA_DIR") or os.getcwd()
        self.root = Path(root) / "modeldata" / model_name / designation

    def _path(self, now: _dt.datetime) -> Path:
        return self.root / f"{now:%Y}" / f"{now:%m}" / f"{now:%d}" / "data.jsonl"

    def collect(self, input_data: Any, user_correlation_id: str = "") -> str:
        """Append one record; returns its correlation id (as Azure's collector does)."""
        now = _dt.datetime.now(_dt.timezone.utc)
        correlation_id = user_correlation_id or str(uuid.uuid4())
        record: dict[str, Any] = {
            "time": now.isoformat(),
            "correlationId": correlation_id,
            "model": self.model_name,
            "modelVersion": self.model_version,
            "designation": self.designation,
            "data": input_data,
        }
        if self.feature_names is not None:
            record["featureNames"] = self.feature_names
        line = (json.dumps(record, default=_plain) + "\n").encode("utf-8")
        path = self._path(now)
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        return correlation_id
