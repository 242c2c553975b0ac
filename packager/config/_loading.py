"""Reading Azure ML v1 config files and turning pydantic failures into ConfigErrors.

Why a module of its own: both config files share the same rules. They are read
as az ml reads them (YAML first, which also accepts JSON), every problem is
reported as a :class:`~edgeship.errors.ConfigError` that names the file and the
key path (``containerResourceRequirements.cpuu``), and an unknown key comes with
the closest key Azure defines at that place, because a typo is the usual cause.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgeship.errors import ConfigError

__all__ = ["KEY_HINTS", "AzureModel", "key_path", "known_keys", "read_mapping", "validate_model"]

# Spellings seen in the wild that Azure's file format does not define: the SDK's
# Python parameter names and doc typos. Each points at the file key az ml reads.
KEY_HINTS = {
    "cpu_cores": "containerResourceRequirements.cpu",
    "memory_gb": "containerResourceRequirements.memoryInGB",
    "cpuCores": "containerResourceRequirements.cpu",
    "memoryGb": "containerResourceRequirements.memoryInGB",
    "replicaMaxConcurrentRequests": "maxConcurrentRequestsPerContainer",
    "maxRequestWaitTime": "maxQueueWaitMs",
    "autoscaleEnabled": "autoScaler.autoscaleEnabled",
    "minReplicas": "autoScaler.minReplicas",
    "maxReplicas": "autoScaler.maxReplicas",
    "targetUtilization": "autoScaler.targetUtilization",
    "enableAppInsights": "appInsightsEnabled",
    "entry_script": "entryScript",
    "conda_file": "condaFile",
    "source_directory": "sourceDirectory",
}

M = TypeVar("M", bound=BaseModel)


class AzureModel(BaseModel):
    """Base for the file models: camelCase keys as Azure writes them, nothing else accepted.

    ``extra="forbid"`` is the point: az ml silently ignores a misspelt key, which
    deploys something other than what the user wrote. ``populate_by_name`` is off
    so only the spelling in the file counts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False, str_strip_whitespace=True)


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """Load ``path`` as a YAML/JSON mapping; ``what`` ("inference config") goes into messages."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} file {path} does not exist; pass the path of an existing file") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    try:
        # Tabs are legal in JSON but not in YAML indentation; az ml falls back to JSON the same way.
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{what} file {path} is neither valid YAML nor valid JSON "
                f"(JSON error at line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from exc
    if data is None:
        raise ConfigError(f"{what} file {path} is empty; it must hold a mapping of keys such as computeType")
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {path} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("keys", "primaryKey")`` -> ``keys.primaryKey``; list indexes as ``[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The nested model class that owns the keys found at ``loc`` (None if not a model)."""
    current: type[BaseModel] = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = next(
            (f for name, f in current.model_fields.items() if (f.alias or name) == part),
            None,
        )
        if field is None:
            return None
        nested = _first_model(field.annotation)
        if nested is None:
            return None
        current = nested
    return current


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _first_model(arg)
            if found is not None:
                return found
    return None


def known_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _unknown_key_message(model: type[BaseModel], loc: tuple[int | str, ...], path: Path) -> str:
    owner = _model_at(model, loc[:-1])
    key = str(loc[-1])
    where = key_path(loc)
    message = f"{path}: unknown key '{where}'"
    if owner is not None:
        keys = known_keys(owner)
        close = (
            [KEY_HINTS[key]] if key in KEY_HINTS else difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        )
        if not close:
            lowered = {k.lower(): k for k in keys}
            close = [lowered[key.lower()]] if key.lower() in lowered else []
        if close:
            message += f"; did you mean '{close[0]}'?"
        else:
            message += f"; keys Azure ML defines here: {', '.join(sorted(keys))}"
    return message + " (Azure ML would silently ignore it; edgeship refuses to guess)"


def validate_model(model: type[M], data: dict[str, Any], path: Path) -> M:
    """Validate ``data`` with ``model``; the first problem becomes a ConfigError naming key and file."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # Unknown keys first: they usually explain the other errors (a typo leaves a value missing).
        errors.sort(key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc = tuple(first["loc"])
        if first["type"] == "extra_forbidden":
            raise ConfigError(_unknown_key_message(model, loc, path)) from None
        where = key_path(loc) or "(top level)"
        shown = repr(first.get("input"))
        if len(shown) > 60:
            shown = shown[:57] + "..."
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{path}: key '{where}': {first['msg']}, got {shown}{more}") from None
