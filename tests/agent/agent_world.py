"""Real parts for agent tests: a blob server with Range, signed modules and documents, agent processes, an observer.

- :class:`BlobServer`: ``ThreadingHTTPServer`` serving ``/blobs/sha256:<hex>`` from a folder,
  with ``Range: bytes=N-``, a request log, and a switch that cuts the next answer short.
- :class:`AgentWorld`: release/hub/root keys, the trust-root file a device is provisioned
  with, real MNIST modules (bundle with the session wheelhouse) signed by the release key,
  and deployment documents signed by the hub key.
- :class:`AgentProcess`: ``python -m edgeship agent run --config`` as a subprocess.
- :class:`Observer`: a paho client that plays the hub's side of the MQTT contract.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from module_world import MNIST, V2_REQUEST
from paho.mqtt.enums import CallbackAPIVersion

from edgeship.deployment import ModuleBlobs, ModuleEntry, ModuleSettings, build_document, sign_document
from edgeship.modules.manifest import ArtifactRef, BundleRef, EnvironmentRef, ModelPin, ModuleManifest
from edgeship.packager.bundle import build_bundle
from edgeship.registry import Model
from edgeship.signing import DEPLOYMENT_PAYLOAD_TYPE, MODULE_PAYLOAD_TYPE, Envelope, Signer, TrustRoot, sign_envelope
from edgeship.signing.trust import sign_trust_root
from edgeship.workspace import Workspace

__all__ = ["AgentProcess", "AgentWorld", "BlobServer", "Observer", "SignedModule", "infer"]

ROOT = Path(__file__).resolve().parents[2]


# --- blobs over HTTP ---------------------------------------------------------------------------


class BlobServer:
    """Serves ``root/<hex>`` at ``/blobs/sha256:<hex>``; ``cut_next`` sends only that many bytes once.

    ``misbehave(digest, mode)`` makes it a hostile or broken host for that blob (the faults
    of TUF's "endless data" and "slow retrieval" attacks, and hosts that cannot resume):

    - ``endless``: the blob, then random bytes without end (no Content-Length), until the
      client hangs up or ``endless_cap`` bytes went out;
    - ``announce``: a Content-Length a thousand times the blob's, then the same endless body;
    - ``trickle``: the blob one byte every ``trickle_interval`` seconds (Range honoured);
    - ``silent``: the headers, then nothing at all (Range honoured);
    - ``ignore_range``: always 200 with the whole blob; ``refuse_range``: 416 to every Range;
      ``wrong_range``: 206 with the blob from byte 0 whatever was asked.

    ``hangups`` records ``(path, bytes of the body sent)`` when a client closed a
    misbehaving transfer; ``cond`` is notified on every request and hang-up.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_next: int | None = None
        self.modes: dict[str, str] = {}  # hex digest -> misbehaviour
        self.trickle_interval = 0.2  # seconds between bytes in "trickle" mode
        self.endless_cap = 64 * 2**20  # bytes an endless answer sends at most (a safety net for the test machine)
        self.hangups: list[tuple[str, int]] = []
        self.sent: dict[str, int] = {}  # path -> body bytes sent by the last misbehaving transfer so far
        self.cond = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with server.cond:
                    server.requests.append((self.path, self.headers.get("Range")))
                    server.cond.notify_all()
                name = self.path.removeprefix("/blobs/sha256:")
                path = server.root / name
                if not self.path.startswith("/blobs/sha256:") or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                mode = server.modes.get(name)
                if mode is not None and mode not in ("ignore_range", "refuse_range", "wrong_range"):
                    server._misbehave(self, mode, data)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and mode == "refuse_range":
                    self._empty(416, len(data))
                    return
                if rng and mode == "wrong_range":
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
                elif rng and mode != "ignore_range" and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(data):
                        self._empty(416, len(data))
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut, server.cut_next = server.cut_next, None
                try:
                    self.wfile.write(body if cut is None else body[:cut])
                except (BrokenPipeError, ConnectionResetError):  # the client refused the answer and hung up
                    self.close_connection = True
                    return
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def _empty(self, status: int, total: int) -> None:
                self.send_response(status)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def misbehave(self, digest: str, mode: str | None) -> None:
        """Serve ``digest`` as ``mode`` from the next request on (None: behave again)."""
        name = digest.removeprefix("sha256:")
        if mode is None:
            self.modes.pop(name, None)
        else:
            self.modes[name] = mode

    def _misbehave(self, handler: BaseHTTPRequestHandler, mode: str, data: bytes) -> None:
        rng = handler.headers.get("Range")
        if mode in ("trickle", "silent") and rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])  # slow, but resumes properly
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            handler.send_response(200)
        if mode == "announce":
            handler.send_header("Content-Length", str(len(data) * 1000))
        elif mode in ("trickle", "silent"):
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.flush()
        handler.close_connection = True
        conn = handler.connection
        sent = 0
        try:
            if mode == "silent":
                while not _client_gone(conn, timeout=0.2):
                    pass
                raise ConnectionResetError
            if mode == "trickle":
                for byte in data:
                    if _client_gone(conn, timeout=self.trickle_interval):
                        raise ConnectionResetError
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                    sent += 1
                    self.sent[handler.path] = sent
                return
            handler.wfile.write(data)
            sent = len(data)
            chunk = os.urandom(64 * 1024)
            while sent < self.endless_cap:
                handler.wfile.write(chunk)
                sent += len(chunk)
                self.sent[handler.path] = sent
        except (BrokenPipeError, ConnectionResetError):
            with self.cond:
                self.hangups.append((handler.path, sent))
                self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Block until ``predicate()`` (checked on every request and hang-up) holds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"blob server: condition not met within {timeout} s; requests "
                                         f"{self.requests[-5:]}, hang-ups {self.hangups[-5:]}")
                self.cond.wait(min(left, 0.2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def put(self, data: bytes) -> str:
        """Serve ``data``; returns its digest."""
        digest = hashlib.sha256(data).hexdigest()
        (self.root / digest).write_bytes(data)
        return f"sha256:{digest}"

    def put_as(self, digest: str, data: bytes) -> None:
        """Serve ``data`` under another blob's name (a tampered mirror)."""
        (self.root / digest.removeprefix("sha256:")).write_bytes(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _client_gone(conn: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` s; True if the client closed its end (readable with nothing to read)."""
    readable, _, _ = select.select([conn], [], [], timeout)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


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
        values = {
            "telemetry_interval": 30,
            "reconcile_interval": 1,
            "health_timeout": 60,
            "port_range": [20000 + (os.getpid() * 7 + len(device_id) * 131) % 20000, 45000],
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

    def start(self, *extra: str) -> AgentProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgeship", "agent", "run", "--config", str(self.config), "-v", *extra],
            stdout=log,
            stderr=log,
            cwd=self.home,
        )
        log.close()
        return self

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

