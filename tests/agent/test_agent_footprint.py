"""The agent process stays light: no ML libraries, and a small idle resident set."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_world import AgentProcess, AgentWorld, BlobServer, Observer

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]

RSS_LIMIT = 56 * 2**20  # bytes; measured 45 MiB in a dev install (docs/agent.md has the breakdown)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AgentWorld]:
    blobs = BlobServer(tmp_path / "served")
    yield AgentWorld(tmp_path, tmp_path / "no-wheelhouse", blobs)
    blobs.close()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_an_idle_agent_reports_and_holds_no_ml_libraries(
    world: AgentWorld, mosquitto: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: str
) -> None:
    agent = AgentProcess(
        world, "dev-idle", mosquitto.url, tmp_path / "dev-idle", protocol=protocol, telemetry_interval=1
    )
    observer = Observer(mosquitto.port)
    try:
        agent.start()
        report = observer.report("dev-idle", lambda r: r["status"]["code"] == 200, timeout=30)
        assert report["modules"] == {} and report["lastAppliedSequence"] is None
        assert observer.wait_for(lambda t, p: t.endswith("dev-idle/online") and p == b"1", timeout=10)
        time.sleep(3)  # a few telemetry samples and reconcile ticks
        assert agent.process is not None
        pid = agent.process.pid
        maps = Path(f"/proc/{pid}/maps").read_text()
        for heavy in ("numpy", "onnxruntime", "starlette", "uvloop"):
            assert heavy not in maps
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"edgeship.agent" in cmdline  # 'edgeship agent run' exec'd into the lean entry point
        rss = _rss(pid)
        with capsys.disabled():
            print(f"\nidle agent RSS (MQTT {protocol}): {rss / 2**20:.1f} MiB")
        assert rss < RSS_LIMIT
        assert agent.stop() == 0
    finally:
        observer.close()
        agent.cleanup()


