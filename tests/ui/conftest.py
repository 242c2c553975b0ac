"""Dashboard fixtures: the hub helpers of tests/hub (HubWorld, rollout_hub, serving) on the import path, and its
database fixtures (``hub_url``: SQLite and a real PostgreSQL)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HUB_TESTS = Path(__file__).resolve().parents[1] / "hub"
if str(HUB_TESTS) not in sys.path:
    sys.path.insert(0, str(HUB_TESTS))


def _hub_fixtures() -> ModuleType:
    """tests/hub/conftest.py under another module name, for its database fixtures (one PostgreSQL per session)."""
    spec = importlib.util.spec_from_file_location("hub_conftest_for_ui", HUB_TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_hub = _hub_fixtures()
postgres_server = _hub.postgres_server
hub_url = _hub.hub_url
