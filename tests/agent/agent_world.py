"""Real parts for agent tests: a blob server with Range, signed modules and documents, agent processes, an observer.

- :class:`BlobServer` (``blob_server.py``, re-exported here): the blob host, which can misbehave.
- :class:`AgentWorld`: release/hub/root keys, the trust-root file a device is provisioned
  with, real MNIST modules (bundle with the session wheelhouse) signed by the release key,
  and deployment documents signed by the hub key.
- :class:`AgentProcess`: ``python -m edgeship agent run --config`` as a subprocess.
- :class:`Observer`: a paho client that plays the hub's side of the MQTT contract.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from blob_server import BlobServer
from module_world import MNIST, V2_REQUEST
from paho.mqtt.enums import CallbackAPIVersion
from parts import port_block

from edgeship.deployment import ModuleBlobs, ModuleEntry, ModuleSettings, build_document, sign_document
from edgeship.modules.manifest import ArtifactRef, BundleRef, EnvironmentRef, ModelPin, ModuleManifest
from edgeship.packager.bundle import build_bundle
from edgeship.registry import Model
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, MODULE_PAYLOAD_TYPE, Envelope, Signer, TrustRoot, sign_envelope
from edgeship.signing.trust import sign_trust_root
from edgeship.workspace import Workspace

__all__ = ["AgentProcess", "AgentWorld", "BlobServer", "Observer", "SignedModule", "infer"]

ROOT = Path(__file__).resolve().parents[2]
AGENT_PORTS = 20  # ports in an agent's port_range: blue/green needs two per module, kill tests leave some taken


# --- modules and documents ---------------------------------------------------------------------


@dataclass(frozen=True)
class SignedModule:
    name: str
    version: int
    envelope: dict[str, Any]
    manifest: ModuleManifest
    bundle_digest: str


@dataclass
class AgentWorld:
    root: Path
    wheelhouse: Path
    blobs: BlobServer
    release: Signer = field(default_factory=lambda: Signer.generate(name="release"))
    hub_key: Signer = field(default_factory=lambda: Signer.generate(name="hub"))
    root_key: Signer = field(default_factory=lambda: Signer.generate(name="root"))
    _workspace: Workspace | None = None
    _versions: dict[str, int] = field(default_factory=dict)

    def trust_root(self) -> TrustRoot:
        return TrustRoot.build(
            root=[self.root_key.public_key], release=[self.release.public_key], hub=[self.hub_key.public_key]
        )

    def trust_root_file(self) -> Path:
        path = self.root / "trust-root.json"
        if not path.exists():
            path.write_text(sign_trust_root(self.trust_root(), [self.root_key]).to_json())
        return path

    @property
    def workspace(self) -> Workspace:
        if self._workspace is None:
            self._workspace = Workspace.at(self.root / "ws")
            self._workspace.create()
        return self._workspace

    def module(self, name: str = "mnist", *, entry_script: Path | None = None) -> SignedModule:
        """The next version of ``name``: the MNIST model (no code, or ``entry_script``), served as a blob."""
        version = self._versions.get(name, 0) + 1
        self._versions[name] = version
        model = Model.register(self.workspace, MNIST, "mnist")
        out = self.root / "built" / name / str(version)
        out.mkdir(parents=True, exist_ok=True)
        bundle = build_bundle(out / "bundle.tar", models=[model], wheelhouse=self.wheelhouse, entry_script=entry_script)
        manifest = ModuleManifest(
            name=name,
            version=version,
            models=[ModelPin(name=model.name, version=model.version, digest=model.digest, framework="onnx")],
            entryScript=bundle.entry_script,
            environment=EnvironmentRef(lockDigest=bundle.env_lock_digest, python="3.11"),
            bundle=BundleRef(digest=bundle.digest, size=bundle.size),
            files=[ArtifactRef(path="bundle.tar", digest=bundle.digest, size=bundle.size)],
        )
        self.blobs.put(bundle.path.read_bytes())
        envelope = sign_envelope(manifest.to_bytes(), MODULE_PAYLOAD_TYPE, [self.release])
        return SignedModule(name, version, json.loads(envelope.to_json()), manifest, bundle.digest)

    def blob_module(self, name: str, data: bytes) -> SignedModule:
        """A release-signed module whose bundle is ``data`` (served as a blob): for tests that never install it."""
        version = self._versions.get(name, 0) + 1
        self._versions[name] = version
        digest = self.blobs.put(data)
        manifest = ModuleManifest(
            name=name,
            version=version,
            models=[],
            environment=EnvironmentRef(lockDigest="sha256:" + "0" * 64, python="3.11"),
            bundle=BundleRef(digest=digest, size=len(data)),
            files=[ArtifactRef(path="bundle.tar", digest=digest, size=len(data))],
        )
        envelope = sign_envelope(manifest.to_bytes(), MODULE_PAYLOAD_TYPE, [self.release])
        return SignedModule(name, version, json.loads(envelope.to_json()), manifest, digest)

    def document(
        self,
        device_id: str,
        sequence: int,
        modules: list[SignedModule],
        *,
        settings: dict[str, ModuleSettings] | None = None,
        issued_at: datetime | None = None,
        ttl: timedelta = timedelta(days=1),
        signer: Signer | None = None,
        bundle_location: Callable[[SignedModule], str] | None = None,
    ) -> bytes:
        entries = {
            m.name: ModuleEntry(
                module=m.envelope,
                blobs=ModuleBlobs(bundle=(bundle_location or (lambda s: f"/blobs/{s.bundle_digest}"))(m)),
                settings=(settings or {}).get(m.name, ModuleSettings()),
            )
            for m in modules
        }
        doc = build_document(
            device_id=device_id,
            sequence=sequence,
            modules=entries,
            issued_at=issued_at or datetime.now(timezone.utc),
            ttl=ttl,
        )
        return sign_document(doc, [signer or self.hub_key]).to_json().encode()

    def forged(self, envelope: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
        """``envelope``'s document changed by ``change`` and signed again with the hub key.

        What a stolen hub key (or a hostile hub) can send: any JSON, validly signed.
        """
        body = json.loads(Envelope.from_json(envelope).payload)
        change(body)
        return sign_envelope(json.dumps(body).encode(), DEPLOYMENT_PAYLOAD_TYPE, [self.hub_key]).to_json().encode()


def infer(port: int, timeout: float = 10.0) -> int:
    """POST the MNIST v2 request; returns the HTTP status."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/mnist/infer",
        data=V2_REQUEST.read_bytes(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return int(resp.status)


# --- the agent as a process --------------------------------------------------------------------


class AgentProcess:
    """``edgeship agent run`` for one device; its log goes to ``data_dir/../<device>.log``."""

    def __init__(
        self, world: AgentWorld, device_id: str, broker_url: str, home: Path, *, protocol: str = "3.1.1",
        **settings: Any,
    ) -> None:
        self.device_id = device_id
        self.home = home
        self.data_dir = home / "data"
        self.log_path = home / "agent.log"
        self.config = home / "agent.toml"
        home.mkdir(parents=True, exist_ok=True)
        ports = port_block(AGENT_PORTS)  # this agent's own, so agents running at once never race for one
        values = {
            "telemetry_interval": 30,
            "reconcile_interval": 1,
            "health_timeout": 60,
            "port_range": [ports, ports + AGENT_PORTS - 1],
            **settings,
        }
        lines = [
            f'device_id = "{device_id}"',
            f'hub_url = "{world.blobs.url}"',
            f'trust_root = "{world.trust_root_file()}"',
            f'data_dir = "{self.data_dir}"',
            'runtime = "process"',
            *(f"{k} = {json.dumps(v)}" for k, v in values.items()),
            "",
            "[broker]",
            f'url = "{broker_url}"',
            f'protocol = "{protocol}"',
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def share_venvs(self, venvs: Path) -> None:
        """Point this agent's venv folder at a shared one (one offline venv build per test session)."""
        venvs.mkdir(parents=True, exist_ok=True)
        link = self.data_dir / "runtime" / "venvs"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(venvs, target_is_directory=True)

    def start(self, *extra: str, fault: str | None = None) -> AgentProcess:
        """Start the agent; ``fault`` arms its fault point (``EDGESHIP_AGENT_FAULT``, ``edgeship.agent.faults``)."""
        env = {k: v for k, v in os.environ.items() if k != "EDGESHIP_AGENT_FAULT"}
        if fault is not None:
            env["EDGESHIP_AGENT_FAULT"] = fault
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgeship", "agent", "run", "--config", str(self.config), "-v", *extra],
            stdout=log,
            stderr=log,
            cwd=self.home,
            env=env,
        )
        log.close()
        return self

    def wait_killed(self, timeout: float) -> None:
        """Wait for the agent to kill itself with SIGKILL at its armed fault point."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the fault point was not reached within {timeout} s:\n{self.log()[-3000:]}") from None
        assert code == -signal.SIGKILL, f"the agent exited with {code}, not SIGKILL:\n{self.log()[-3000:]}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise

    def cleanup(self) -> None:
        """Stop the agent and remove every module service it left running."""
        from edgeship.agent.runtimes.process import ProcessRuntime

        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        runtime = ProcessRuntime(self.data_dir / "runtime")
        for status in runtime.list():
            runtime.remove(status.name)


# --- the hub's side of MQTT --------------------------------------------------------------------


class Observer:
    """Subscribes to every device topic; publishes documents and method calls like the hub does."""

    def __init__(self, port: int, client_id: str = "test-observer") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, *_: c.subscribe("edgeship/v1/devices/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.cond.notify_all()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def desired(self, device_id: str, envelope: bytes) -> None:
        self.publish(f"edgeship/v1/devices/{device_id}/desired", envelope, retain=True)

    def wait_for(self, predicate: Callable[[str, bytes], bool], timeout: float, after: int = 0) -> tuple[str, bytes]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for topic, payload, _retain in self.messages[after:]:
                    if predicate(topic, payload):
                        return topic, payload
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(t, p[:300]) for t, p, _ in self.messages[after:] if t.endswith("/reported")][-3:]
                    raise AssertionError(f"no matching message within {timeout} s; last reports: {seen}")
                self.cond.wait(left)

    def report(self, device_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120.0,
               after: int = 0) -> dict[str, Any]:
        topic = f"edgeship/v1/devices/{device_id}/reported"

        def match(t: str, p: bytes) -> bool:
            return t == topic and bool(p) and predicate(json.loads(p))

        return dict(json.loads(self.wait_for(match, timeout, after)[1]))

    def call(self, device_id: str, method: str, args: Any, rid: str, timeout: float = 30.0) -> dict[str, Any]:
        mark = len(self.messages)
        payload = args if isinstance(args, bytes) else json.dumps(args).encode()
        self.publish(f"edgeship/v1/devices/{device_id}/commands/{method}/{rid}", payload)
        _, answer = self.wait_for(lambda t, _p: t == f"edgeship/v1/devices/{device_id}/responses/{rid}", timeout, mark)
        return dict(json.loads(answer))

    def payloads(self, suffix: str) -> list[bytes]:
        with self.cond:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

