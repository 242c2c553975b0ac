"""Direct methods: a request on ``.../commands/{method}/{rid}``, the answer on ``.../responses/{rid}``.

The contract (``docs/mqtt.md``): the request payload is a JSON object of arguments;
the device answers ``{"status": 200, "result": ...}`` or ``{"status": 4xx|5xx,
"error": "message"}`` with QoS 1, not retained. Answers are matched by request id
in paho's network thread (a dictionary lookup, no I/O), so a slow database never
delays them. Every hub replica sees every answer and ignores request ids it did
not send.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import paho.mqtt.client as paho

from edgeship.errors import InputError, TransportError
from edgeship.hub.errors import DeviceTimeoutError
from edgeship.mqtt import DeviceTopic, command_topic

__all__ = ["MAX_ANSWER_BYTES", "MethodInvoker"]

MAX_ANSWER_BYTES = 1024 * 1024  # a device's answer (logs can be long)

log = logging.getLogger("edgeship.hub.bridge")


class MethodInvoker:
    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[str, Future[dict[str, Any]]]] = {}

    def invoke(self, device_id: str, method: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Publish the request and wait for the device's answer; ``DeviceTimeoutError`` after ``timeout`` s."""
        try:
            payload = json.dumps(dict(args), separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InputError(f"Direct method arguments must be JSON-serialisable: {exc}.") from exc
        if not self.client.is_connected():
            raise TransportError(
                f"The hub is not connected to its MQTT broker, so it cannot call {method!r} on {device_id!r}; "
                "check the broker and retry."
            )
        request_id = uuid.uuid4().hex
        answer: Future[dict[str, Any]] = Future()
        with self._lock:
            self._waiting[request_id] = (device_id, answer)
        try:
            self.client.publish(command_topic(device_id, method, request_id), payload, qos=1, retain=False)
            try:
                return answer.result(timeout)
            except TimeoutError:
                raise DeviceTimeoutError(
                    f"Device {device_id!r} did not answer {method!r} within {timeout:g} s; is it online?"
                ) from None
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)

    def on_response(self, topic: DeviceTopic, payload: bytes) -> None:
        """Called in paho's network thread for ``.../responses/{rid}``."""
        request_id = topic.rest[0]
        with self._lock:
            entry = self._waiting.get(request_id)
        if entry is None:
            return  # another replica's request, or one that timed out already
        device_id, answer = entry
        if topic.device_id != device_id:
            log.warning("dropped a response for request %s from %r: the request went to %r",
                        request_id, topic.device_id, device_id)
            return
        answer.set_result(_answer(device_id, payload))


def _answer(device_id: str, payload: bytes) -> dict[str, Any]:
    """The device's answer, or a 502 answer saying why it could not be read."""
    if len(payload) > MAX_ANSWER_BYTES:
        return {"status": 502, "error": f"Device {device_id!r} answered with more than {MAX_ANSWER_BYTES} bytes."}
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return {"status": 502, "error": f"Device {device_id!r} answered with something that is not JSON."}
    status = data.get("status") if isinstance(data, dict) else None
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return {"status": 502, "error": f"Device {device_id!r} answered without an HTTP-like 'status' number."}
    return data
