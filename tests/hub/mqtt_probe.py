"""A paho test client that collects what arrives on its subscriptions (stands in for a device)."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho

from edgeship.mqtt import parse_broker_url
from edgeship.mqtt.client import make_client

__all__ = ["Probe", "Received"]


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int


class Probe:
    """Connects on construction; ``subscribe`` waits for SUBACK; ``expect`` waits for a message."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        self.client = make_client(parse_broker_url(url), client_id or f"probe-{uuid.uuid4().hex[:8]}",
                                  persistent=False)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.handlers: list[Callable[[Probe, Received], None]] = []
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        settings = parse_broker_url(url)
        self.client.connect(settings.host, settings.port, keepalive=10)
        self.client.loop_start()
        assert self._connected.wait(10), f"probe could not connect to {url}"

    def _on_message(self, _client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        received = Received(message.topic, bytes(message.payload), bool(message.retain), message.qos)
        for handler in self.handlers:
            handler(self, received)
        self.messages.put(received)

    def subscribe(self, topic: str, qos: int = 1) -> Probe:
        self._subscribed.clear()
        self.client.subscribe(topic, qos)
        assert self._subscribed.wait(10), f"no SUBACK for {topic}"
        return self

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def expect(self, topic: str | None = None, timeout: float = 10.0) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"nothing arrived on {topic or 'any topic'} within {timeout} s"
            try:
                received = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if topic is None or received.topic == topic:
                return received

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
