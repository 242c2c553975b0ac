"""A real Mosquitto run on the generated security config, and a small paho client to probe it.

The broker gets the files ``write_broker_config`` wrote plus log lines; ``reload()``
sends SIGHUP (Mosquitto rereads the password file and the ACL). ``Probe`` connects
with given credentials and records what arrives, so a test can show that a message
was refused by the broker rather than lost.
"""

from __future__ import annotations

import queue
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from parts import free_port, need_binary

from edgeship.mqtt import parse_broker_url
from edgeship.mqtt.client import make_client


class SecureBroker:
    def __init__(self, config: Path, ports: list[int]) -> None:
        self.binary = need_binary("mosquitto")
        self.log = config.parent / "mosquitto.log"
        self.run_config = config.parent / "run.conf"
        self.run_config.write_text(config.read_text() + f"log_dest file {self.log}\nlog_type all\n")
        self.ports = ports
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> SecureBroker:
        self.process = subprocess.Popen([self.binary, "-c", str(self.run_config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    log = self.log.read_text() if self.log.exists() else ""
                    raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {err} {log}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"mosquitto did not listen on {port}") from None
                    time.sleep(0.05)
        return self

    def reload(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def start_broker(write_config: Callable[[list[int]], Path], count: int, attempts: int = 5) -> SecureBroker:
    """Pick ``count`` free ports, let ``write_config(ports)`` write the config, start the broker.

    A port found free can be taken by another process (or an outgoing connection)
    before Mosquitto binds it; then it starts over with new ports.
    """
    for attempt in range(attempts):
        ports = [free_port() for _ in range(count)]
        if len(set(ports)) < count:
            continue
        try:
            return SecureBroker(write_config(ports), ports).start()
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise RuntimeError("no free ports for mosquitto")


class Probe:
    """One MQTT client; ``connected`` is the CONNACK reason (0 = accepted) or an exception's text.

    ``connects`` and ``drops`` count CONNACKs and disconnects the client did not ask for
    (paho reconnects by itself, so a client kicked off the broker shows up only here).
    """

    def __init__(
        self, url: str, client_id: str, *, username: str | None = None, password: str | None = None,
        ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None,
        persistent: bool = False,
    ) -> None:  # fmt: skip
        settings = parse_broker_url(url, username=username, password=password, ca_file=ca_file,
                                    cert_file=cert_file, key_file=key_file)  # fmt: skip
        self.client = make_client(settings, client_id, persistent=persistent)
        self.connects = 0
        self.drops = 0
        self._closing = False
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self._done = threading.Event()
        self.connected: int | str | None = None
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put([int(c.value) for c in codes])
        self.client.on_disconnect = self._on_disconnect
        try:
            self.client.connect(settings.host, settings.port, keepalive=10)
        except (OSError, ssl.SSLError) as exc:
            self.connected = f"{type(exc).__name__}: {exc}"
            self._done.set()
            return
        self.client.loop_start()
        self._done.wait(5)

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.connected = int(reason.value)
        self.connects += 1
        self._done.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if not self._closing:
            self.drops += 1
        if self.connected is None:
            self.connected = f"disconnected: {reason}"
        self._done.set()

    @property
    def ok(self) -> bool:
        return self.connected == 0

    def subscribe(self, topic: str) -> list[int]:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=5)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def next_message(self, timeout: float = 3.0) -> tuple[str, bytes] | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()


__all__ = ["Probe", "SecureBroker", "paho", "start_broker"]
