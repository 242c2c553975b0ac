"""``edgeship demo``: a hub, an embedded broker, three agents, a model released twice, all on this machine.

The story an operator would live through, with real parts only:

1. a release workspace with ``root``/``release``/``hub`` keys and a trust root;
2. digits model v1 trained, registered, packaged and signed as a bundle module;
3. a hub (SQLite, embedded amqtt broker, REST API) and three agents started as
   separate ``edgeship agent run`` processes with the process runtime, tagged
   ``site=lab`` (two of them) and ``site=field``;
4. a deployment to ``tags.site = 'lab'``: the two lab devices verify, install,
   health-check and report; the demo scores a sample through each device's module;
5. model v2 released and deployed with a higher priority: a model-only update the
   devices apply blue/green while reusing their environment;
6. a table of devices, module versions and telemetry; then everything is stopped
   and the temporary folder removed. With ``--keep`` the hub, its dashboard and the
   agents stay up until Ctrl-C, and the folder is kept for a look around.

The hub's dashboard (``/ui/``, ``docs/dashboard.md``) is up from step 3: its URL and an
operator token to sign in with are printed as soon as the hub starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from edgeship.demo.model import sample_request
from edgeship.demo.release import ReleaseSide
from edgeship.errors import EdgeshipError
from edgeship.release import deploy, upload

__all__ = ["DEVICES", "DemoError", "DemoOptions", "free_port_block", "run_demo"]

T = TypeVar("T")

# device id -> tags; the deployment targets tags.site = 'lab'
DEVICES: dict[str, dict[str, str]] = {
    "lab-1": {"site": "lab", "arch": "amd64"},
    "lab-2": {"site": "lab", "arch": "arm64"},
    "field-1": {"site": "field", "arch": "amd64"},
}
CONDITION = "tags.site = 'lab'"
PORTS_PER_DEVICE = 10


class DemoError(EdgeshipError):
    """A demo step did not finish; the message says which and where its logs are."""


@dataclass(frozen=True)
class DemoOptions:
    keep: bool = False  # keep the temporary folder (logs, workspace, agent data)
    directory: Path | None = None  # where to work (default: a new temporary folder)
    timeout: float = 120.0  # seconds each waiting step may take
    telemetry_interval: float = 2.0  # seconds, for the agents


@dataclass
class _Agent:
    device_id: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class DemoSummary:
    timings: dict[str, float] = field(default_factory=dict)
    scores: dict[str, list[int]] = field(default_factory=dict)
    expected: list[int] = field(default_factory=list)


def free_port_block(count: int, start: int = 20000) -> int:
    """The first port of ``count`` consecutive ports nothing listens on."""
    import socket

    port = start
    while port < 60000:
        ok = True
        for candidate in range(port, port + count):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", candidate))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
        port += count
    raise DemoError("No block of free TCP ports found between 20000 and 60000 for the demo's modules.")


class Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.summary = DemoSummary()
        self.agents: list[_Agent] = []
        self.hub: Any = None
        self.token = ""  # the operator token printed for the dashboard's sign-in
        self.root = Path(options.directory or tempfile.mkdtemp(prefix="edgeship-demo-")).resolve()

    # --- helpers -------------------------------------------------------------------------------
    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        started = time.monotonic()
        with self.console.status(f"{title} ..."):
            yield
        took = time.monotonic() - started
        self.summary.timings[title] = took
        self.console.print(f"[green]✓[/] {title} [dim]({took:.1f} s)[/]", highlight=False)

    def wait_for(self, what: str, check: Callable[[], T | None], poll: float = 0.2) -> T:
        deadline = time.monotonic() + self.options.timeout
        while time.monotonic() < deadline:
            for agent in self.agents:
                if agent.process is not None and agent.process.poll() is not None:
                    raise DemoError(
                        f"Agent {agent.device_id} exited with code {agent.process.returncode} while waiting for "
                        f"{what}; see {agent.log}."
                    )
            value = check()
            if value is not None:
                return value
            time.sleep(poll)
        raise DemoError(
            f"Timed out after {self.options.timeout:.0f} s waiting for {what}; agent logs are in "
            f"{self.root / 'agents'} (run with --keep to look at them)."
        )

    # --- the story ----------------------------------------------------------------------------
    def run(self) -> DemoSummary:
        c = self.console
        c.print(f"[bold]edgeship demo[/] in {self.root}", highlight=False)
        with self.step("Release workspace with root, release and hub keys and a trust root"):
            self.release_side = ReleaseSide(self.root, Console(quiet=True))  # the spinner shows progress
        with self.step("Trained, registered, packaged and signed digits v1"):
            v1 = self.release_side.release(1)
        c.print(f"  model accuracy {v1.model.accuracy:.3f}, module {v1.module_dir}", highlight=False)
        with self.step("Hub started (SQLite, embedded MQTT broker, REST API, dashboard)"):
            self.start_hub()
        c.print(f"  hub API {self.hub.api_url}, broker {self.hub.broker_url}", highlight=False)
        self.print_dashboard()
        with self.step("Module digits:1 uploaded to the hub (signature checked)"):
            upload(self.release_hub, self.release_side.workspace, v1.module)
        with self.step(f"{len(DEVICES)} devices registered and their agents started"):
            for device_id, tags in DEVICES.items():
                self.hub.services.fleet.create_device(device_id, tags)
            self.start_agents()
            self.wait_for("every agent to come online", self.all_online)
        started = time.monotonic()
        with self.step(f"Deployment 'digits-lab' ({CONDITION}) applied on the 2 lab devices"):
            deploy(self.release_hub, "digits-lab", CONDITION, [(v1.module.name, v1.module.version)], 10, None)
            self.wait_for("both lab devices to report digits:1", lambda: self.applied("digits-lab", 1))
        self.summary.timings["deploy v1 (create -> both applied)"] = time.monotonic() - started
        with self.step("Scored a sample through each lab device's module"):
            self.score_all(expect_version=1)
        with self.step("Trained, registered, packaged and signed digits v2 (model-only change)"):
            v2 = self.release_side.release(2)
            upload(self.release_hub, self.release_side.workspace, v2.module)
        c.print(f"  model accuracy {v2.model.accuracy:.3f}", highlight=False)
        started = time.monotonic()
        with self.step("Deployment 'digits-lab-v2' (priority 20) rolled over blue/green"):
            deploy(self.release_hub, "digits-lab-v2", CONDITION, [(v2.module.name, v2.module.version)], 20, None)
            self.wait_for("both lab devices to report digits:2", lambda: self.applied("digits-lab-v2", 2))
        self.summary.timings["update v2 (create -> both applied)"] = time.monotonic() - started
        with self.step("Scored again through the updated modules"):
            self.score_all(expect_version=2)
        with self.step("Telemetry received from both lab devices"):
            self.wait_for("telemetry with request counts", self.telemetry_ready)
        self.print_table()
        self.print_dashboard()
        t = self.summary.timings
        c.print(
            f"deployment create -> both devices serving: v1 {t['deploy v1 (create -> both applied)']:.1f} s "
            f"(first install builds the environment), v2 {t['update v2 (create -> both applied)']:.1f} s "
            "(model-only: environment reused)",
            highlight=False,
        )
        return self.summary

    # --- hub -----------------------------------------------------------------------------------
    def start_hub(self) -> None:
        from edgeship.hub.api import create_token
        from edgeship.hub.server import HubConfig, HubServer
        from edgeship.release import ServicesHub

        self.hub = HubServer(
            HubConfig(
                workspace=self.release_side.workspace.root,
                trust_root=self.release_side.trust_root_file,
                embedded_broker=True,
                broker_port=0,
                port=0,
            )
        ).start()
        self.release_hub = ServicesHub(self.hub.services, self.hub.api_url)  # the steps 'edgeship release' takes
        self.token = create_token(self.hub.store, "demo")
        with urllib.request.urlopen(self.dashboard_url + "signin", timeout=10) as answer:  # noqa: S310 - our hub
            if answer.status != 200:
                raise DemoError(f"The hub's dashboard at {self.dashboard_url} answered {answer.status}.")

    @property
    def dashboard_url(self) -> str:
        return f"{self.hub.api_url}/ui/"

    def print_dashboard(self) -> None:
        self.console.print(f"  [bold]dashboard {self.dashboard_url}[/] (sign in with the operator token {self.token})",
                           highlight=False, soft_wrap=True)

    def hold(self) -> None:
        """``--keep``: leave the hub, its dashboard and the agents running until Ctrl-C (SIGINT) or SIGTERM.

        Both signals are caught here, so the demo stops what it started either way (a shell that
        starts the demo in the background ignores SIGINT for it; SIGTERM still ends it cleanly).
        """
        self.console.print(f"The hub, its dashboard ({self.dashboard_url}) and the agents keep running; "
                           "press Ctrl-C to stop them.", highlight=False, soft_wrap=True)
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop.wait(1.0):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.console.print("Stopping.")

    def all_online(self) -> bool | None:
        views = {v.device.id: v for v in self.hub.services.fleet.list_devices()}
        return True if all(_online(views.get(d)) for d in DEVICES) else None

    def applied(self, deployment: str, version: int) -> bool | None:
        status = self.hub.services.deployments.deployment_status(deployment)
        if status.reporting_failure:
            failed = [f"{d.device_id}: {d.reason}" for d in status.devices if d.state == "failed"]
            raise DemoError(f"Deployment {deployment} failed on {'; '.join(failed)}.")
        if status.targeted != 2 or status.applied != 2:
            return None
        for device_id in ("lab-1", "lab-2"):
            module = self.reported_module(device_id)
            if not module or module.get("version") != version or module.get("status") != "running":
                return None
        return True

    def reported_module(self, device_id: str) -> dict[str, Any] | None:
        view = self.hub.services.fleet.get_device(device_id)
        state = view.reported.state if view.reported else {}
        module = (state.get("modules") or {}).get("digits")
        return module if isinstance(module, dict) else None

    def telemetry_ready(self) -> bool | None:
        """True once each lab device has sent telemetry counting both requests the demo scored on it."""
        for device_id in ("lab-1", "lab-2"):
            if _requests(self.hub.services.fleet.recent_telemetry(device_id, 100)) < 2:
                return None
        return True

    # --- agents --------------------------------------------------------------------------------
    def start_agents(self) -> None:
        base = free_port_block(PORTS_PER_DEVICE * len(DEVICES))
        agents_dir = self.root / "agents"
        for index, device_id in enumerate(DEVICES):
            folder = agents_dir / device_id
            folder.mkdir(parents=True, exist_ok=True)
            first = base + index * PORTS_PER_DEVICE
            config = folder / "agent.toml"
            config.write_text(
                "\n".join(
                    [
                        f'device_id = "{device_id}"',
                        f'hub_url = "{self.hub.api_url}"',
                        f"trust_root = {json.dumps(str(self.release_side.trust_root_file))}",
                        f"data_dir = {json.dumps(str(folder / 'data'))}",
                        'runtime = "process"',
                        f"telemetry_interval = {self.options.telemetry_interval}",
                        f"port_range = [{first}, {first + PORTS_PER_DEVICE - 1}]",
                        "reconcile_interval = 1",
                        "",
                        "[broker]",
                        f'url = "{self.hub.broker_url}"',
                        "",
                    ]
                )
            )
            agent = _Agent(device_id, config, folder / "agent.log")
            with agent.log.open("wb") as log:
                agent.process = subprocess.Popen(
                    [sys.executable, "-m", "edgeship", "agent", "run", "--config", str(config),
                     "--stop-modules-on-exit"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in the terminal reaches the demo, which stops them in order
                )
            self.agents.append(agent)

    def stop_agents(self) -> None:
        for agent in self.agents:
            if agent.process is not None and agent.process.poll() is None:
                agent.process.send_signal(signal.SIGTERM)
        for agent in self.agents:
            if agent.process is None:
                continue
            try:
                agent.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(agent.process.pid, signal.SIGKILL)
                agent.process.wait(5)

    # --- scoring -------------------------------------------------------------------------------
    def score_all(self, expect_version: int) -> None:
        request, labels = sample_request()
        self.summary.expected = labels
        body = json.dumps(request).encode()
        for device_id in ("lab-1", "lab-2"):
            module = self.reported_module(device_id) or {}
            port = module.get("port")
            if module.get("version") != expect_version or not isinstance(port, int):
                raise DemoError(f"{device_id} reports {module}; expected digits:{expect_version} with a port.")
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/score", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=30) as reply:  # noqa: S310 - a local http URL we built
                answer = json.loads(reply.read())
            predictions = [int(p) for p in answer["predictions"]]
            self.summary.scores[f"{device_id} v{expect_version}"] = predictions
            self.console.print(
                f"  {device_id} digits:{expect_version} on port {port}: predicted {predictions}, true {labels}",
                highlight=False,
            )

    # --- the final table -------------------------------------------------------------------
    def print_table(self) -> None:
        table = Table(title="Devices (reported state; telemetry: scoring requests, p50 of the last busy interval)")
        for column in ("device", "site", "module", "status", "port", "requests", "p50 ms", "MB"):
            table.add_column(column, no_wrap=True)
        for view in self.hub.services.fleet.list_devices():
            state = view.reported.state if view.reported else {}
            module = (state.get("modules") or {}).get("digits") or {}
            records = self.hub.services.fleet.recent_telemetry(view.device.id, 100)
            samples = _samples(records)
            last = samples[-1] if samples else {}
            busy = [s for s in samples if ((s.get("modules") or {}).get("digits") or {}).get("requests")]
            mod_sample = (busy[-1].get("modules") or {}).get("digits") or {} if busy else {}
            table.add_row(
                view.device.id,
                str(view.device.tags.get("site", "-")),
                f"digits:{module['version']}" if module.get("version") else "-",
                str(module.get("status", "-")),
                str(module.get("port", "-")),
                str(_requests(records)) if samples else "-",
                f"{mod_sample['latencyMs']['p50']:.1f}" if mod_sample.get("latencyMs") else "-",
                f"{last['memoryBytes'] / 1e6:.0f}" if "memoryBytes" in last else "-",
            )
        self.console.print(table)

    def close(self) -> None:
        self.stop_agents()
        if self.hub is not None:
            self.hub.stop()
        if not self.options.keep and self.options.directory is None:
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.options.keep:
            self.console.print(f"Kept {self.root} (agent logs in {self.root / 'agents'}).", highlight=False)


def _online(view: Any) -> bool:
    return bool(view is not None and view.presence is not None and view.presence.online)


def _samples(records: list[Any]) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    for record in records:
        samples += list(record.batch.get("samples") or [])
    return sorted(samples, key=lambda s: (s.get("time", ""), s.get("seq", 0)))


def _requests(records: list[Any]) -> int:
    """Scoring requests the device's digits module answered, summed over the telemetry received."""
    return sum(int(((s.get("modules") or {}).get("digits") or {}).get("requests", 0)) for s in _samples(records))


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoSummary:
    """Run the whole story; always stops what it started, and raises DemoError on a failed step."""
    console = console or Console()
    demo = Demo(options, console)
    started = time.monotonic()
    try:
        summary = demo.run()
        if options.keep:
            demo.hold()
    finally:
        demo.close()
    console.print(f"[bold green]Demo finished[/] in {time.monotonic() - started:.0f} s.", highlight=False)
    return summary
