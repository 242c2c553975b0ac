"""``EmbeddedBroker``: an amqtt MQTT 3.1.1 broker in its own thread and event loop.

amqtt is asyncio-only while the hub's bridge is paho (threads), so the broker gets
a private loop in a daemon thread; :meth:`start` returns once the listener accepts
connections and :meth:`stop` shuts the broker down and joins the thread.
Anonymous clients are allowed, so the default bind is 127.0.0.1: binding another
address is the caller's explicit choice.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import Future
from typing import Any

from edgeship.errors import TransportError

__all__ = ["EmbeddedBroker"]

START_TIMEOUT = 10.0  # seconds for the listener to come up
STOP_TIMEOUT = 10.0  # seconds for a clean shutdown

log = logging.getLogger("edgeship.hub.broker")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """One amqtt broker listening on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config(self) -> dict[str, Any]:
        """amqtt's broker configuration: one TCP listener, anonymous login, no $SYS or packet logging."""
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}},
            "timeout_disconnect_delay": 0,
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    def start(self) -> EmbeddedBroker:
        if self._thread is not None:
            return self
        started: Future[None] = Future()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop, started), name="edgeship-broker", daemon=True)
        self._thread.start()
        try:
            started.result(timeout=START_TIMEOUT)
        except Exception as exc:
            self._join()
            raise TransportError(
                f"The embedded MQTT broker could not listen on {self.host}:{self.port}: {exc}; "
                "pick another --broker-port or stop what uses it."
            ) from exc
        log.info("embedded MQTT broker listening on %s", self.url)
        return self

    def _run(self, loop: asyncio.AbstractEventLoop, started: Future[None]) -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            from amqtt.broker import Broker

            self._broker = Broker(self.config(), loop=loop)
            await self._broker.start()

        try:
            loop.run_until_complete(boot())
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or self._thread is None:
            return
        if broker is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(STOP_TIMEOUT)
            except Exception as exc:
                log.warning("embedded MQTT broker did not shut down cleanly: %s", exc)
        self._join()

    def _join(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(STOP_TIMEOUT)
        self._loop = self._thread = self._broker = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
