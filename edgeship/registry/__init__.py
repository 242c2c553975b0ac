"""Model registry with Azure ML v1 ``Model`` semantics over a content-addressed blob store."""

from __future__ import annotations

from edgeship.registry.model import Model
from edgeship.registry.refs import ModelRef, parse_model_ref, validate_model_name

__all__ = ["Model", "ModelRef", "parse_model_ref", "validate_model_name"]
