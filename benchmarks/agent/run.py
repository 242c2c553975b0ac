"""Agent benchmark: time from ``deployment create`` to a real agent serving a model-only update, and idle RSS.

Real parts only: a Mosquitto broker, an in-process ``HubServer`` (SQLite), one
``edgeship agent run`` process with the process runtime, and digits modules
packaged and signed by the packager (the demo's release side). After a first
install (which builds the environment), the benchmark alternates the device
between digits v1 and v2 (same environment lock: model-only updates) by creating
deployments of rising priority, and for each measures:

- ``applied``: from just before the ``create_deployment`` call
  to the hub recording the device's report of the new version running;
- ``serving``: from the same start to the new version answering ``/score`` on its port.

Idle RSS is the agent process's VmRSS (``/proc/PID/status``) after it has been idle
for ``--idle`` seconds with one module running (the module's own processes are not
counted: they are the workload, not the agent).

    python benchmarks/agent/run.py                  # 7 updates, results printed as JSON
    python benchmarks/agent/run.py --updates 11 --json-out benchmarks/agent/results/run.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' Mosquitto launcher

from mosquitto import Mosquitto  # noqa: E402
from rich.console import Console  # noqa: E402

from edgeship.demo.model import sample_request  # noqa: E402
from edgeship.demo.release import ReleaseSide  # noqa: E402
from edgeship.demo.run import free_port_block  # noqa: E402
from edgeship.hub.server import HubConfig, HubServer  # noqa: E402
from edgeship.hub.services import ModuleRefSpec  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def reported(hub: HubServer, device_id: str) -> dict[str, Any]:
    view = hub.services.fleet.get_device(device_id)
    state = view.reported.state if view.reported else {}
    module = (state.get("modules") or {}).get("digits")
    return module if isinstance(module, dict) else {}


def answers(port: int, body: bytes) -> bool:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ (.*)$")
_TOOK = re.compile(r"^(\w+) (\S+) took (\d+) ms$")


def phases(log_text: str) -> list[dict[str, float]]:
    """Per accepted document, from the agent's ``--verbose`` log: ms per command kind, and accept-to-report.

    ``accepted_to_report_ms`` runs from the "accepted document" line to the first "reported 200"
    line after it; the command times are summed per kind (download of bundle and image together).
    """
    applies: list[dict[str, float]] = []
    accepted_at: datetime | None = None
    for line in log_text.splitlines():
        match = _STAMP.match(line)
        if not match:
            continue
        when, message = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f"), match[2]
        if message.startswith("accepted document"):
            accepted_at = when
            applies.append({})
        elif applies and (took := _TOOK.match(message)):
            applies[-1][took[1]] = applies[-1].get(took[1], 0.0) + float(took[3])
        elif applies and accepted_at is not None and message.startswith("reported 200"):
            applies[-1].setdefault("accepted_to_report_ms", (when - accepted_at).total_seconds() * 1000)
    return applies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=7, help="model-only updates to time")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading RSS")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--keep-log", type=Path, default=None, help="copy the agent's --verbose log here")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="edgeship-agent-bench-"))
    broker = Mosquitto(root / "mosquitto").start()
    side = ReleaseSide(root / "release", Console(quiet=True))
    releases = {v: side.release(v) for v in (1, 2)}
    hub = HubServer(HubConfig(workspace=side.workspace.root, trust_root=side.trust_root_file,
                              broker_url=broker.url, port=0)).start()
    for version in releases:
        hub.services.catalog.upload_from_workspace(side.workspace.root, "digits", version)
    hub.services.fleet.create_device("bench-1", {"site": "bench"})
    ports = free_port_block(20)
    folder = root / "agent"
    folder.mkdir()
    config = folder / "agent.toml"
    config.write_text(
        f'device_id = "bench-1"\nhub_url = "{hub.api_url}"\ntrust_root = {json.dumps(str(side.trust_root_file))}\n'
        f'data_dir = {json.dumps(str(folder / "data"))}\nruntime = "process"\nreconcile_interval = 1\n'
        f'telemetry_interval = 30\nport_range = [{ports}, {ports + 19}]\n\n[broker]\nurl = "{broker.url}"\n'
    )
    log = (folder / "agent.log").open("wb")
    agent = subprocess.Popen([sys.executable, "-m", "edgeship", "agent", "run", "--config", str(config),
                              "--stop-modules-on-exit", "--verbose"], stdout=log, stderr=subprocess.STDOUT)
    body = json.dumps(sample_request()[0]).encode()
    results: dict[str, Any] = {"updates": []}
    try:
        def deploy(version: int, priority: int) -> tuple[float, float]:
            start = time.perf_counter()
            hub.services.deployments.create_deployment(f"d{priority}", "tags.site = 'bench'",
                                                       [ModuleRefSpec("digits", version)], priority)
            applied = None
            while True:
                if agent.poll() is not None:
                    raise RuntimeError(f"agent exited; see {folder / 'agent.log'}")
                module = reported(hub, "bench-1")
                if applied is None and module.get("version") == version and module.get("status") == "running":
                    applied = time.perf_counter() - start
                if applied is not None and answers(int(module["port"]), body):
                    return applied, time.perf_counter() - start
                if time.perf_counter() - start > 300:
                    raise RuntimeError("no update within 300 s")
                time.sleep(0.02)

        first_applied, first_serving = deploy(1, 1)
        results["first_install"] = {"applied_s": first_applied, "serving_s": first_serving}
        print(f"first install (builds the environment): applied {first_applied:.2f} s, serving {first_serving:.2f} s")
        time.sleep(args.idle)
        results["agent_idle_rss_mib"] = rss_kib(agent.pid) / 1024
        print(f"agent idle RSS: {results['agent_idle_rss_mib']:.1f} MiB")
        for i in range(args.updates):
            version = 2 if i % 2 == 0 else 1
            applied, serving = deploy(version, i + 2)
            results["updates"].append({"to": version, "applied_s": applied, "serving_s": serving})
            print(f"model-only update to v{version}: applied {applied:.2f} s, serving {serving:.2f} s")
            time.sleep(1.0)
        results["agent_rss_after_updates_mib"] = rss_kib(agent.pid) / 1024
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        hub.stop()
        broker.stop()
        log.close()
        log_text = (folder / "agent.log").read_text(errors="replace")
        if args.keep_log:
            args.keep_log.write_text(log_text)
        shutil.rmtree(root, ignore_errors=True)
    per_apply = phases(log_text)
    for update, measured in zip(results["updates"], per_apply[1:], strict=False):
        update["phases_ms"] = measured
    if per_apply:
        results["first_install"]["phases_ms"] = per_apply[0]
    applied_all = [u["applied_s"] for u in results["updates"]]
    serving_all = [u["serving_s"] for u in results["updates"]]
    results["summary"] = {
        "updates": len(applied_all),
        "applied_median_s": statistics.median(applied_all),
        "applied_range_s": [min(applied_all), max(applied_all)],
        "serving_median_s": statistics.median(serving_all),
        "serving_range_s": [min(serving_all), max(serving_all)],
        "phases_median_ms": {
            kind: statistics.median(u.get("phases_ms", {}).get(kind, 0.0) for u in results["updates"])
            for kind in sorted({k for u in results["updates"] for k in u.get("phases_ms", {})})
        },
    }
    results["machine"] = {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                          "load": Path("/proc/loadavg").read_text().split()[:3]}
    print(json.dumps(results["summary"], indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
