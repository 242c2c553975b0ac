"""The agent process stays light: no ML libraries, and none of the heavy modules ADR 0030 took out of it.

Its resident set is measured by ``benchmarks/agent/lean.py`` (``benchmarks/agent/RESULTS.md``),
not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_world import AgentProcess, AgentWorld, BlobServer, Observer
from parts import free_port

from edgeship.agent.__main__ import parse_args

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]

# modules the idle agent must not hold (ADR 0026, 0030, 0043): each was measured at 0.8-10 MiB of its resident set
HEAVY_MODULES = ("pydantic", "cryptography", "sqlite3", "prometheus_client", "typer", "rich", "httpx", "numpy",
                 "argparse", "dataclasses", "inspect",
                 "http", "email")  # http.client with email: 0.75 MiB, until the first download (ADR 0046)


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
        for heavy in ("numpy", "onnxruntime", "starlette", "uvloop", "libsqlite3", "cryptography", "pydantic_core"):
            assert heavy not in maps
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"edgeship.agent" in cmdline  # 'edgeship agent run' exec'd into the lean entry point
        assert b"-OO" in cmdline and b"no_debug_ranges" in cmdline  # ... without docstrings and column tables
        threads = sorted(Path(f"/proc/{pid}/task/{t.name}/comm").read_text().strip()
                         for t in Path(f"/proc/{pid}/task").iterdir())  # fmt: skip
        assert len(threads) == 4, threads  # loop, paho's network thread, methods, telemetry
        assert (tmp_path / "dev-idle" / "data" / "telemetry" / "queue.json").exists()  # samples queued as files
        with capsys.disabled():
            print(f"\nidle agent RSS (MQTT {protocol}): {_rss(pid) / 2**20:.1f} MiB (measured, not asserted)")
        assert agent.stop() == 0
    finally:
        observer.close()
        agent.cleanup()




_PROBE = r"""
import json, socket, sys, threading
from edgeship.agent.__main__ import parse_args
parse_args(["--config", "agent.toml", "-v"])  # the entry point's own code, and everything the daemon imports
from edgeship.agent.lazy import LAZY_MODULES, import_lazily
for name in LAZY_MODULES:
    import_lazily(name)  # as the entry point does before paho-mqtt's import
from edgeship.agent.daemon import Agent  # noqa: F401
import edgeship.agent.runtimes.process  # noqa: F401  (imported when the agent runs a module)
from edgeship.agent.runtimes.base import probe_health
from edgeship.agent.telemetry.sampler import _get_metrics
from edgeship.agent.telemetry.scrape import parse_metrics
from edgeship.signing.ed25519 import PublicKey
assert PublicKey(bytes(32)).verify(bytes(64), b"data") is False  # Ed25519 through ssl's libcrypto
listener = socket.create_server(("127.0.0.1", int(sys.argv[2])))  # a module's server: two health GETs and a scrape
def serve():
    for body in (b"Healthy", b'{"ready":true}', b'edgeship_scoring_requests_total{endpoint="/score",status="200"} 1\n'):
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        conn.close()
threading.Thread(target=serve, daemon=True).start()
port = listener.getsockname()[1]
assert probe_health(port) and parse_metrics(_get_metrics(port) or "").requests
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[1]))))
"""


def test_the_agents_imports_and_a_scrape_load_none_of_the_heavy_modules() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(HEAVY_MODULES), str(free_port())],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert json.loads(out) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--config", "a.toml"], (Path("a.toml"), False, False)),
        (["-c", "a.toml", "-v", "--stop-modules-on-exit"], (Path("a.toml"), True, True)),
        (["--verbose", "--config=a b.toml"], (Path("a b.toml"), False, True)),
    ],
)
def test_the_entry_point_reads_its_options(argv: list[str], expected: tuple[Path, bool, bool]) -> None:
    assert parse_args(argv) == expected


@pytest.mark.parametrize(
    ("argv", "problem"),
    [([], "--config FILE is required"), (["-c"], "-c needs the config file"), (["-c", "a", "-x"], "unknown argument")],
)
def test_bad_usage_is_one_line_and_exit_2(argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse_args(argv)
    assert stopped.value.code == 2
    assert problem in capsys.readouterr().err


_LAZY = r"""
import json, sys
from edgeship.agent.lazy import LAZY_MODULES, import_lazily
for name in LAZY_MODULES:
    import_lazily(name)
from edgeship.agent.daemon import Agent  # noqa: F401  (paho-mqtt imports urllib.request)
import paho.mqtt.client  # noqa: F401
idle = sorted(m for m in ("urllib.error", "urllib.response") if m in sys.modules)
import urllib.request
url = urllib.request.Request("http://hub.invalid/blobs/x").full_url  # the first use imports the real module
import urllib
real = sys.modules["urllib.request"] is urllib.request and "HTTPHandler" in vars(urllib.request)
print(json.dumps({"idle": idle, "url": url, "real": real,
                  "loaded": "urllib.response" in sys.modules, "parent": urllib.request.__name__}))
"""


def test_urllib_request_is_imported_at_its_first_use_not_by_paho() -> None:
    out = subprocess.run([sys.executable, "-OO", "-c", _LAZY], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"idle": [], "url": "http://hub.invalid/blobs/x", "real": True, "loaded": True,
                               "parent": "urllib.request"}  # fmt: skip
