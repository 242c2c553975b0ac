"""The reported state's size limits and :func:`clip`, without pydantic.

:mod:`edgeship.reported` validates reports with these limits (the hub); the agent
clips its free text to them with :func:`clip` before it reports, and imports only
this module, so its process holds no pydantic (``docs/agent.md``: Footprint).
"""

from __future__ import annotations

__all__ = ["MAX_MESSAGE", "MAX_MODULES", "MAX_NAME", "MAX_REPORT_NUMBER", "MAX_TEXT", "clip"]

MAX_MODULES = 64  # modules in one report (as telemetry's per-sample limit)
MAX_TEXT = 1024  # characters of a module's or the trust root's lastError, and of status.description
MAX_MESSAGE = 4096  # characters of status.message (the agent joins its modules' errors into it)
MAX_NAME = 128  # characters of a module or service name
MAX_REPORT_NUMBER = 2**53  # the highest reportNumber (agent/state/report_number.py): exact in every JSON reader


def clip(text: str | None, limit: int = MAX_TEXT) -> str | None:
    """``text`` cut to ``limit`` characters, ending in an ellipsis when cut (None stays None)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"
