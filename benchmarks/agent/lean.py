"""Agent footprint benchmark: idle RSS with every feature on, and boot time after a simulated reboot.

Real parts only: a Mosquitto broker with a plain listener (the hub) and a TLS listener
(the agent, ``mqtts://`` pinned to a generated hub CA), an in-process ``HubServer``,
one agent process (``python -m edgeship.agent``, the process a device's service unit
runs) with the process runtime, the digits module running, telemetry every
``--telemetry`` seconds and a direct method (``logs``) answered before the idle wait.

Idle RSS is the agent process's VmRSS after ``--idle`` seconds; the module's own
processes (supervisor and scoring server) are reported beside it, not in it.

Boot: the agent is SIGKILLed and the module's process groups are killed too (a
reboot: nothing survives but the disk), then the agent is started again and the
benchmark takes, from just before ``Popen``:

- ``connected``: a hub-side subscriber sees the device's retained ``online`` turn "1";
- ``started``: the supervisor of every cached module has written its ``run.json``
  (the module's process is up; its scoring server is still importing and in ``init()``);
- ``serving``: the module answers ``/score`` (the scoring server's start-up and the
  module's own ``init()`` on top of ``started``).

Besides VmRSS it records ``/proc/PID/smaps_rollup`` (anonymous vs file-backed), the
largest mappings, the thread count, the load at start and end, and the agent idle
again after its last reboot. The agent is started as ``edgeship agent run`` starts it
(``PYTHON_FLAGS``; ``--python-flags ''`` for none); ``--device-venv`` runs it from a
plain venv without the editable install's finder; ``--tracemalloc`` runs it under
``traced_agent.py`` and records its Python heap by package (that run's RSS is inflated).

    python benchmarks/agent/lean.py --boots 5 --json-out benchmarks/agent/results/lean.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' Mosquitto launcher
sys.path.insert(1, str(Path(__file__).resolve().parent))  # after tests/: this parts.py is not tests/parts.py

import paho.mqtt.client as paho  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from parts import free_port  # noqa: E402
from rich.console import Console  # noqa: E402
from run import answers, reported, rss_kib  # noqa: E402

from edgeship.agent.__main__ import PYTHON_FLAGS  # noqa: E402
from edgeship.demo.model import sample_request  # noqa: E402
from edgeship.demo.release import ReleaseSide  # noqa: E402
from edgeship.demo.run import free_port_block  # noqa: E402
from edgeship.hub.broker import CertificateAuthority  # noqa: E402
from edgeship.hub.server import HubConfig, HubServer  # noqa: E402
from edgeship.hub.services import ModuleRefSpec  # noqa: E402

DEVICE = "lean-1"


def tls_broker(folder: Path) -> tuple[Mosquitto, int, Path]:
    """Mosquitto with its plain listener and a TLS one (server certificate from a fresh hub CA)."""
    folder.mkdir(parents=True)
    ca = CertificateAuthority.create()
    server = ca.issue_server(["127.0.0.1", "localhost"])
    files = {"ca": ca.cert_pem, "crt": server.cert_pem, "key": server.key_pem}
    for suffix, text in files.items():
        (folder / f"hub.{suffix}").write_text(text)
    tls_port = free_port()
    extra = (f"listener {tls_port} 127.0.0.1\ncafile {folder / 'hub.ca'}\ncertfile {folder / 'hub.crt'}\n"
             f"keyfile {folder / 'hub.key'}\n")  # fmt: skip
    return Mosquitto(folder / "mosquitto", extra_config=extra).start(), tls_port, folder / "hub.ca"


class OnlineWatch:
    """The hub's view of ``online``: the wall time the retained value last turned "1"."""

    def __init__(self, broker: Mosquitto) -> None:
        self.online_at: float | None = None
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="lean-watch")
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(f"edgeship/v1/devices/{DEVICE}/online", 1)
        self.client.loop_start()

    def _message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        self.online_at = time.time() if message.payload == b"1" else None

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def module_pids(runtime_dir: Path) -> list[int]:
    pids: list[int] = []
    for run in (runtime_dir / "run").glob("*/run.json"):
        record = json.loads(run.read_text())
        pids += [p for p in (record.get("supervisorPid"), record.get("pid")) if p]
    return pids


def tree_rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_kib(pid)
    return total


def device_python(folder: Path, tree: Path) -> str:
    """A plain venv's python that imports ``edgeship`` from ``tree`` as an installed package would be laid out.

    The dev venv is an editable install: its site runs a meta-path finder that imports
    pathlib, re, urllib.parse and more into every process (2.3 MiB at start). A device's
    ``pip install`` has no such finder. This venv reaches the dev venv's site-packages
    (paho-mqtt and the rest) through a plain path line in a ``.pth`` (no code runs), and
    ``edgeship`` through a tree of symlinks laid out as the wheel installs it (as
    ``scripts/typecheck`` does).
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
    shadow = folder / "shadow" / "edgeship"
    shadow.mkdir(parents=True)
    for entry in (tree / "edgeship").iterdir():
        (shadow / entry.name).symlink_to(entry)
    for name, source in (("agent", "agent"), ("packager", "packager"), ("hub", "cloud-stub"), ("fpga", "fpga")):
        (shadow / name).symlink_to(tree / source)
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "paho").exists())
    (folder / "venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
     / "edgeship-bench.pth").write_text(f"{shadow.parent}\n{site}\n")  # fmt: skip
    return str(folder / "venv" / "bin" / "python")


def smaps_split(pid: int) -> dict[str, float]:
    """``/proc/PID/smaps_rollup`` in MiB: RSS split into anonymous and file-backed pages, and threads."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            fields[name] = int(rest.split()[0]) / 1024
    threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
    return {"rss": fields["Rss"], "anonymous": fields["Anonymous"], "file_backed": fields["Rss"] - fields["Anonymous"],
            "pss": fields["Pss"], "threads": threads}


def smaps_top(pid: int, count: int = 12) -> list[dict[str, Any]]:
    """The agent's largest mappings by resident pages (``/proc/PID/smaps``), summed per file or kind."""
    totals: dict[str, list[int]] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            name = Path(head[5]).name if len(head) > 5 else "[anonymous mmap]"
        elif head and head[0] in ("Rss:", "Anonymous:"):
            totals.setdefault(name, [0, 0])[head[0] == "Anonymous:"] += int(head[1])
    top = sorted(totals.items(), key=lambda item: -item[1][0])[:count]
    return [{"mapping": k, "rss_mib": round(v[0] / 1024, 2), "anonymous_mib": round(v[1] / 1024, 2)} for k, v in top]


def wait_for(what: str, check: Any, timeout: float = 120.0) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return time.time()
        time.sleep(0.002)
    raise RuntimeError(f"no {what} within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=20.0, help="seconds idle before reading RSS")
    parser.add_argument("--telemetry", type=float, default=5.0, help="telemetry_interval, seconds")
    parser.add_argument("--boots", type=int, default=3, help="simulated reboots to time")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--device-venv", action="store_true",
                        help="run the agent from a plain venv (no editable-install finder), as a device's pip install")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="with --device-venv: the source tree the agent is imported from (e.g. a git worktree "
                             "of an earlier commit, to measure before and after side by side)")  # fmt: skip
    parser.add_argument("--python-flags", default=" ".join(PYTHON_FLAGS),
                        help="the agent's interpreter flags (default: those 'edgeship agent run' passes; '' for none)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="run the agent under tracemalloc (traced_agent.py) and record its heap by package; "
                             "that run's RSS includes tracemalloc's own bookkeeping")  # fmt: skip
    args = parser.parse_args()

    # byte-code caches as a device's pip install leaves them (this tree is an editable install, and
    # PYTHONDONTWRITEBYTECODE may be set): without them the agent compiles its modules at every start
    for optimize in (0, 1, 2):
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-o", str(optimize), str(args.tree / "agent"),
                        str(args.tree / "edgeship")], check=True)  # fmt: skip
    load_start = Path("/proc/loadavg").read_text().split()[:3]
    root = Path(tempfile.mkdtemp(prefix="edgeship-lean-bench-"))
    python = device_python(root / "device", args.tree.resolve()) if args.device_venv else sys.executable
    broker, tls_port, ca_file = tls_broker(root / "broker")
    side = ReleaseSide(root / "release", Console(quiet=True))
    side.release(1)
    hub = HubServer(HubConfig(workspace=side.workspace.root, trust_root=side.trust_root_file,
                              broker_url=broker.url, port=0)).start()  # fmt: skip
    hub.services.catalog.upload_from_workspace(side.workspace.root, "digits", 1)
    hub.services.fleet.create_device(DEVICE, {"site": "lean"})
    watch = OnlineWatch(broker)
    ports = free_port_block(20)
    folder = root / "agent"
    folder.mkdir()
    config = folder / "agent.toml"
    config.write_text(
        f'device_id = "{DEVICE}"\nhub_url = "{hub.api_url}"\ntrust_root = {json.dumps(str(side.trust_root_file))}\n'
        f'data_dir = {json.dumps(str(folder / "data"))}\nruntime = "process"\nreconcile_interval = 1\n'
        f'telemetry_interval = {args.telemetry}\nport_range = [{ports}, {ports + 19}]\n\n'
        f'[broker]\nurl = "mqtts://127.0.0.1:{tls_port}"\nca_file = {json.dumps(str(ca_file))}\n'
    )
    runtime_dir = folder / "data" / "runtime"
    body = json.dumps(sample_request()[0]).encode()
    log_path = folder / "agent.log"
    results: dict[str, Any] = {"boots": []}
    trace_out = folder / "trace.json"
    # as on a device: the agent writes the byte-code caches its flags need (.opt-2.pyc) on its first start
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["EDGESHIP_TRACE_OUT"] = str(trace_out)
    agent: subprocess.Popen[bytes] | None = None

    def start_agent() -> subprocess.Popen[bytes]:
        log = log_path.open("ab")
        try:
            entry = [str(Path(__file__).with_name("traced_agent.py"))] if args.tracemalloc else ["-m", "edgeship.agent"]
            command = [python, *args.python_flags.split(), *entry, "--config", str(config), "--verbose"]
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
        finally:
            log.close()

    def running() -> dict[str, Any] | None:
        module = reported(hub, DEVICE)
        return module if module.get("status") == "running" else None

    try:
        agent = start_agent()
        hub.services.deployments.create_deployment("d1", "tags.site = 'lean'", [ModuleRefSpec("digits", 1)], 1)
        wait_for("first install", running, 600)
        wait_for("an answer", lambda: answers(int(running()["port"]), body))  # type: ignore[index]
        answer = hub.services.fleet.invoke_method(DEVICE, "logs", {"module": "digits", "tail": 5})
        results["direct_method_status"] = answer.get("status")
        time.sleep(args.idle)
        results["telemetry_batches_seen"] = len(hub.services.fleet.recent_telemetry(DEVICE, 100))
        results["agent_idle_rss_mib"] = rss_kib(agent.pid) / 1024
        results["agent_smaps_mib"] = smaps_split(agent.pid)
        results["agent_smaps_top"] = smaps_top(agent.pid)
        if args.tracemalloc:
            agent.send_signal(signal.SIGUSR1)
            wait_for("the heap dump", trace_out.exists, 30)
            time.sleep(0.5)
            results["tracemalloc"] = json.loads(trace_out.read_text())
        results["modules_rss_mib"] = tree_rss_kib(module_pids(runtime_dir)) / 1024
        print(f"agent idle RSS: {results['agent_idle_rss_mib']:.1f} MiB "
              f"(module processes beside it: {results['modules_rss_mib']:.1f} MiB); "
              f"smaps: {results['agent_smaps_mib']}")  # fmt: skip
        for _ in range(args.boots):
            pids = module_pids(runtime_dir)
            agent.kill()
            agent.wait(10)
            for pid in pids:
                with_pgid = os.getpgid(pid) if Path(f"/proc/{pid}").exists() else None
                if with_pgid is not None:
                    os.killpg(with_pgid, signal.SIGKILL)
            wait_for("the will", lambda: watch.online_at is None, 60)
            time.sleep(1.0)
            runs = {p: p.stat().st_mtime_ns for p in (runtime_dir / "run").glob("*/run.json")}
            start = time.time()
            agent = start_agent()
            connected = wait_for("online", lambda: watch.online_at is not None)
            started = wait_for("supervisors", lambda runs=runs: all(p.exists() and p.stat().st_mtime_ns != t
                                                                    for p, t in runs.items()))  # fmt: skip
            serving = wait_for("serving", lambda: answers(int(running()["port"]), body))  # type: ignore[index]
            boot = {"connected_s": watch.online_at - start if watch.online_at else connected - start,
                    "started_s": started - start, "serving_s": serving - start}
            results["boots"].append(boot)
            print("boot: " + ", ".join(f"{k[:-2]} {v:.3f} s" for k, v in boot.items()))
            time.sleep(2.0)
        if results["boots"]:  # idle again after the last reboot: the same features, no install in this process
            answer = hub.services.fleet.invoke_method(DEVICE, "logs", {"module": "digits", "tail": 5})
            time.sleep(args.idle)
            results["after_reboot"] = {"direct_method_status": answer.get("status"),
                                       "agent_idle_rss_mib": rss_kib(agent.pid) / 1024,
                                       "agent_smaps_mib": smaps_split(agent.pid)}  # fmt: skip
            print(f"agent idle RSS after the last reboot: {results['after_reboot']['agent_idle_rss_mib']:.1f} MiB")
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
        for pid in module_pids(runtime_dir):
            if Path(f"/proc/{pid}").exists():
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        watch.stop()
        hub.stop()
        broker.stop()
        log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
    if results["boots"]:
        results["boot_median_s"] = {k: statistics.median(b[k] for b in results["boots"]) for k in results["boots"][0]}
    results["agent_log_tail"] = log_text.splitlines()[-30:]
    results["agent_command"] = {"python": "device venv" if args.device_venv else "dev venv (editable)",
                                "flags": args.python_flags, "tree": str(args.tree)}
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_start": load_start, "load": Path("/proc/loadavg").read_text().split()[:3]}  # fmt: skip
    print(json.dumps({k: v for k, v in results.items() if k != "agent_log_tail"}, indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
