"""Real agents (six by default) on a real Mosquitto and a hub that can be stopped, run as a process, killed and
restarted.

The fleet of ``tests/e2e/test_rollouts.py``: ``edgeship agent run`` processes with the
process runtime, modules made by the demo's release side (``edgeship.demo.release``),
one ``HubServer`` in the test process on a fixed API port (the agents download
bundles from it) that can be swapped for ``edgeship hub serve`` on the same
workspace, database and port and back. :class:`DocumentLog` is a probe subscribed to
every device's ``desired`` topic from before the first document: it verifies each
envelope as an agent would and keeps what every document named, so a test can say
which devices were ever offered a release, not only what they run at the end.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / "hub") not in sys.path:
    sys.path.insert(0, str(TESTS / "hub"))

from hub_process import HubProcess  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqtt_probe import Probe, Received  # noqa: E402
from parts import port_block  # noqa: E402

from edgeship.demo.model import sample_request  # noqa: E402
from edgeship.demo.release import APP_DIR, ReleaseSide  # noqa: E402
from edgeship.deployment import DeploymentDocument  # noqa: E402
from edgeship.hub.api import create_token  # noqa: E402
from edgeship.hub.server import TRUST_ROOT_FILE, HubConfig, HubServer  # noqa: E402
from edgeship.hub.services import ModuleRefSpec  # noqa: E402
from edgeship.modules.manifest import ModuleManifest  # noqa: E402
from edgeship.mqtt.topics import TOPIC_ROOT  # noqa: E402
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, MODULE_PAYLOAD_TYPE  # noqa: E402
from edgeship.signing.dsse import Envelope  # noqa: E402
from edgeship.signing.trust import TrustRoot, load_trust_root, verify_envelope  # noqa: E402

__all__ = ["MODULE", "Delivered", "DocumentLog", "RolloutFleet", "build_fleet", "edited_release", "score"]

MODULE = "digits"
DEVICES = tuple(f"edge-{n}" for n in range(1, 7))
GROUP = "tags.group = 'rollouts'"  # every device of the fleet; the base deployment and most rollouts target it
FIRST_INSTALL = 240.0  # seconds: the first install builds the shared venv
WAIT = 150.0  # seconds for anything after that (a model-only update takes a few; a gate rollout took 83 s at load 4)
PORTS_PER_AGENT = 40


def score(port: int) -> list[int]:
    """The predictions of the module serving on ``port`` for the demo's sample request."""
    request, _ = sample_request()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/score", data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as reply:
        return [int(p) for p in json.loads(reply.read())["predictions"]]


@dataclass(frozen=True)
class Delivered:
    """One document the broker delivered, as an agent would read it (verified with the trust root)."""

    at: float  # time.monotonic() when it arrived
    device: str
    sequence: int
    modules: Mapping[str, int]  # module name -> version
    deployments: tuple[str, ...]


class DocumentLog:
    """Every ``desired`` document the broker delivers, in arrival order; an undecodable one is kept as an error."""

    def __init__(self, url: str, trust_root: TrustRoot) -> None:
        self.trust_root = trust_root
        self.delivered: list[Delivered] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.probe = Probe(url)
        self.probe.handlers.append(self._on)
        self.probe.subscribe(f"{TOPIC_ROOT}/+/desired")

    def _on(self, _probe: Probe, message: Received) -> None:
        if not message.payload:
            return
        try:
            body = verify_envelope(Envelope.from_json(message.payload), self.trust_root, "hub",
                                   DEPLOYMENT_PAYLOAD_TYPE)  # fmt: skip
            document = DeploymentDocument.from_bytes(body)
            modules = {}
            for name, entry in document.modules.items():
                manifest = verify_envelope(Envelope.from_dict(entry.module), self.trust_root, "release",
                                           MODULE_PAYLOAD_TYPE)  # fmt: skip
                modules[name] = ModuleManifest.from_bytes(manifest).version
        except Exception as exc:  # every defect is a finding, kept for the assertion
            with self._lock:
                self.errors.append(f"{message.topic}: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            self.delivered.append(Delivered(time.monotonic(), document.device_id, document.sequence, modules,
                                            tuple(document.deployments)))  # fmt: skip

    def mark(self) -> int:
        """A position in the log; ``since(mark)`` is what arrived after it."""
        with self._lock:
            return len(self.delivered)

    def since(self, mark: int = 0) -> list[Delivered]:
        with self._lock:
            return self.delivered[mark:]

    def offered(self, version: int, since: int = 0, module: str = MODULE) -> set[str]:
        """Devices that were delivered a document naming ``module:version`` after ``since``."""
        return {d.device for d in self.since(since) if d.modules.get(module) == version}

    def latest(self, device: str) -> Delivered | None:
        with self._lock:
            mine = [d for d in self.delivered if d.device == device]
        return max(mine, key=lambda d: d.sequence) if mine else None

    def close(self) -> None:
        self.probe.close()


@dataclass
class RolloutFleet:
    root: Path
    broker: Mosquitto
    side: ReleaseSide
    versions: dict[str, int]  # "v1", "v2": good releases; "bad" (by default): a release whose init() raises
    hub: HubServer | None
    port: int  # the hub API's port, the same for every hub of the fleet (the agents' hub_url)
    token: str
    docs: DocumentLog
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    hub_processes: list[HubProcess] = field(default_factory=list)
    devices: tuple[str, ...] = DEVICES
    telemetry_interval: float = 2.0  # seconds, each agent's

    # the hub ----------------------------------------------------------------
    @property
    def services(self) -> Any:
        assert self.hub is not None, "the in-process hub is stopped (a hub process runs instead)"
        return self.hub.services

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_hub(self) -> HubServer:
        """The in-process hub on the fleet's workspace, database and port."""
        assert self.hub is None
        self.hub = HubServer(HubConfig(workspace=self.side.workspace.root, broker_url=self.broker.url,
                                       port=self.port)).start()  # fmt: skip
        return self.hub

    def stop_hub(self) -> None:
        if self.hub is not None:
            self.hub.stop()
            self.hub = None

    def hub_process(self, name: str) -> HubProcess:
        """``edgeship hub serve`` on the fleet's workspace, broker and port (not started; the in-process hub
        must be stopped first)."""
        process = HubProcess(self.side.workspace.root, self.broker.url, self.root / f"{name}.log")
        process.port = self.port
        self.hub_processes.append(process)
        return process

    # the devices -------------------------------------------------------------
    def reported(self, device: str) -> Mapping[str, Any]:
        view = self.services.fleet.get_device(device)
        return view.reported.state if view.reported else {}

    def module(self, device: str) -> Mapping[str, Any] | None:
        entry = (self.reported(device).get("modules") or {}).get(MODULE)
        return entry if isinstance(entry, dict) else None

    def version(self, device: str) -> int | None:
        """The version ``device`` reports running (None: not running the module)."""
        module = self.module(device)
        return module.get("version") if module and module.get("status") == "running" else None

    def versions_now(self, devices: Iterable[str] | None = None) -> dict[str, int | None]:
        return {d: self.version(d) for d in (self.devices if devices is None else devices)}

    def settled(self, device: str, version: int) -> bool:
        """``device`` applied its newest document (status 200) and runs ``version``."""
        view = self.services.fleet.get_device(device)
        if view.reported is None or view.desired is None:
            return False
        state = view.reported.state
        return (state.get("lastAppliedSequence") == view.desired.sequence
                and (state.get("status") or {}).get("code") == 200 and self.version(device) == version)  # fmt: skip

    def no_failure(self) -> None:
        """Asserts that no running agent reports a failure (the base install, where nothing may fail)."""
        for device in self.agents:
            status = self.reported(device).get("status") or {}
            if (status.get("code") or 200) >= 400:
                raise AssertionError(f"{device} reports {status}: {self.logs[device].read_text()[-1500:]}")

    def wait(self, what: str, check: Callable[[], bool], timeout: float = WAIT,
             during: Callable[[], None] | None = None) -> None:  # fmt: skip
        """Poll ``check`` (and the invariant ``during``, which asserts) until it holds; agents must stay up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for device, process in self.agents.items():
                assert process.poll() is None, f"agent {device} exited: {self.logs[device].read_text()[-3000:]}"
            if during is not None:
                during()
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; devices run "
                             f"{self.versions_now() if self.hub else '?'}; {self.tails()}")  # fmt: skip

    def tails(self, size: int = 1200) -> str:
        return "agent logs: " + json.dumps({d: p.read_text()[-size:] for d, p in self.logs.items() if p.exists()})

    def add_agent(self, device: str, index: int, ports: int) -> None:
        folder = self.root / "agents" / device
        (folder / "data" / "runtime").mkdir(parents=True)
        (folder / "data" / "runtime" / "venvs").symlink_to(self.root / "venvs", target_is_directory=True)
        first = ports + PORTS_PER_AGENT * index
        config = folder / "agent.toml"
        config.write_text(
            f'device_id = "{device}"\nhub_url = "{self.api_url}"\n'
            f"trust_root = {json.dumps(str(self.side.trust_root_file))}\n"
            f"data_dir = {json.dumps(str(folder / 'data'))}\n"
            f'runtime = "process"\nreconcile_interval = 1\n'
            f"telemetry_interval = {self.telemetry_interval:g}\n"
            f"port_range = [{first}, {first + PORTS_PER_AGENT - 1}]\n"
            f'\n[broker]\nurl = "{self.broker.url}"\n'
        )
        self.configs[device] = config
        self.logs[device] = folder / "agent.log"

    def start_agent(self, device: str) -> None:
        assert device not in self.agents
        with self.logs[device].open("ab") as log:
            self.agents[device] = subprocess.Popen(
                [sys.executable, "-m", "edgeship", "agent", "run", "--config", str(self.configs[device]),
                 "--stop-modules-on-exit"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def stop_agent(self, device: str) -> None:
        """SIGTERM: the agent stops its modules and says it is offline; the device is gone until started."""
        process = self.agents.pop(device)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def close(self) -> None:
        for device in list(self.agents):
            self.agents[device].send_signal(signal.SIGTERM)
        for device in list(self.agents):
            try:
                self.agents[device].wait(30)
            except subprocess.TimeoutExpired:
                self.agents[device].kill()
        self.agents.clear()
        for process in self.hub_processes:
            process.stop()
        self.stop_hub()
        self.docs.close()
        self.broker.stop()


def _quiet() -> Any:
    from rich.console import Console

    return Console(quiet=True)


def edited_release(side: ReleaseSide, model_version: int, label: str, edit: Callable[[str], str]) -> int:
    """Package the demo's entry script as changed by ``edit`` (score.py's text -> new text) for ``model_version``;
    same environment, so devices reuse their venv. Returns the new module version."""
    from edgeship.packager.package import PackageRequest, package_module
    from edgeship.registry.refs import ModelRef

    app = side.root / f"app-{label}"
    shutil.copytree(APP_DIR, app)
    script = app / "score.py"
    script.write_text(edit(script.read_text()))
    result = package_module(
        side.workspace,
        PackageRequest(models=[ModelRef(MODULE, model_version)], output=side.root / f"module-{label}",
                       inference_config=app / "inferenceconfig.json", image=False, name=MODULE),
        console=side.console,
    )  # fmt: skip
    return result.manifest.version


def _raise_in_init(text: str) -> str:
    """An ``init()`` that raises (as on hardware it does not support): the failure is the health check's, fast."""
    assert "def init():\n" in text, "the demo's score.py changed shape; update the failing release"
    return text.replace(
        "def init():\n",
        "def init():\n    raise RuntimeError('no accelerator found: this release cannot start here')\n", 1)


def build_fleet(root: Path, *, devices: tuple[str, ...] = DEVICES, telemetry_interval: float = 2.0,
                variants: Mapping[str, Callable[[str], str]] | None = None, base: str = "v1") -> RolloutFleet:
    """Releases v1, v2 and ``variants`` (name -> an edit of score.py, packaged with v2's model; default: "bad",
    whose init() raises); the hub; ``devices`` (default six) running ``base`` (a name in ``versions``) through a
    base deployment."""
    broker = Mosquitto(root / "mosquitto").start()
    side = ReleaseSide(root / "release", console=_quiet())
    (side.workspace.root / TRUST_ROOT_FILE).write_bytes(side.trust_root_file.read_bytes())  # for 'hub serve'
    versions = {"v1": side.release(1).version, "v2": side.release(2).version}
    for label, edit in ({"bad": _raise_in_init} if variants is None else variants).items():
        versions[label] = edited_release(side, versions["v2"], label, edit)
    docs = DocumentLog(broker.url, load_trust_root(side.trust_root_file.read_text()))
    (root / "venvs").mkdir()
    fleet = RolloutFleet(root, broker, side, versions, None, port_block(1), "", docs, devices=devices,
                         telemetry_interval=telemetry_interval)
    try:
        hub = fleet.start_hub()
        fleet.token = create_token(hub.store, "rollout-tests")
        for version in versions.values():
            hub.services.catalog.upload_from_workspace(side.workspace.root, MODULE, version)
        hub.services.deployments.create_deployment("base", GROUP, [ModuleRefSpec(MODULE, versions[base])],
                                                   priority=1)  # fmt: skip
        ports = port_block(PORTS_PER_AGENT * len(devices))
        for index, device in enumerate(devices):
            hub.services.fleet.create_device(device, {"group": "rollouts"})
            fleet.add_agent(device, index, ports)
        fleet.start_agent(devices[0])  # builds the shared venv alone, then the others reuse it
        fleet.wait(f"{devices[0]} to serve {base}", lambda: fleet.settled(devices[0], versions[base]),
                   timeout=FIRST_INSTALL, during=fleet.no_failure)  # fmt: skip
        for device in devices[1:]:
            fleet.start_agent(device)
        fleet.wait(f"every device to serve {base}", lambda: all(fleet.settled(d, versions[base]) for d in devices),
                   timeout=FIRST_INSTALL, during=fleet.no_failure)  # fmt: skip
    except BaseException:
        fleet.close()
        raise
    return fleet
