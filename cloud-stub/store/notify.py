"""Change notices between hub replicas: PostgreSQL ``LISTEN``/``NOTIFY`` on one channel (ADR 0037).

A replica that changes something other replicas keep in memory (the trust root and
hub key, a rollout's state) sends a notice naming the topic after its transaction
committed (:meth:`ChangeFeed.announce`); every replica, the sender included, runs the
handlers registered for that topic. Notices are not stored: one sent while a replica's
listening connection was down is lost. So each time the listener (re)connects it runs
every handler once, as if each topic had changed: a replica whose connection broke
catches up on its next connect, without a version counter to compare.

On SQLite (one hub process per database) :class:`LocalFeed` does nothing: the one
process that made the change holds it already, so the code that announces does not
depend on the backend.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from edgeship.hub.store.lease import CONNECT_TIMEOUT, KEEPALIVE, libpq_url

__all__ = ["CHANNEL", "TOPICS", "ChangeFeed", "LocalFeed", "NotifyFeed", "feed_for"]

CHANNEL = "edgeship_hub"
TOPICS = ("trust", "rollouts", "credentials")  # what replicas reload on a notice (docs/scale.md; credentials:
# a NATS cluster's users.conf, ADR 0045)
RETRY = 1.0  # seconds between attempts to reconnect the listener

log = logging.getLogger("edgeship.hub.notify")

Handler = Callable[[], None]


class ChangeFeed(Protocol):
    def on(self, topic: str, handler: Handler) -> None:
        """Run ``handler`` (on the feed's thread) whenever ``topic`` changed on any replica."""

    def announce(self, topic: str) -> None:
        """Tell every replica that ``topic`` changed; call after the change committed."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class _Handlers:
    def __init__(self) -> None:
        self.by_topic: dict[str, list[Handler]] = {}

    def add(self, topic: str, handler: Handler) -> None:
        if topic not in TOPICS:
            raise ValueError(f"unknown change topic {topic!r}; one of {TOPICS}")
        self.by_topic.setdefault(topic, []).append(handler)

    def run(self, topic: str) -> None:
        for handler in self.by_topic.get(topic, []):
            try:
                handler()
            except Exception:  # one failed reload must not stop the others or the feed
                log.exception("reloading %s after a change notice failed", topic)


class LocalFeed:
    """One process per database: nobody else to tell (the process that changed something holds it already)."""

    def __init__(self) -> None:
        self.handlers = _Handlers()

    def on(self, topic: str, handler: Handler) -> None:
        self.handlers.add(topic, handler)

    def announce(self, topic: str) -> None:
        if topic not in TOPICS:
            raise ValueError(f"unknown change topic {topic!r}; one of {TOPICS}")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class NotifyFeed:
    """``LISTEN edgeship_hub`` on a connection of its own, in a daemon thread; ``NOTIFY`` on another."""

    def __init__(self, url: str, *, application: str = "edgeship-hub") -> None:
        self.url = libpq_url(url)
        self.application = application[:63]
        self.handlers = _Handlers()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sender: Any = None
        self._send_lock = threading.Lock()
        self.connected = threading.Event()  # the listener is listening (tests wait for it)
        self.received = 0  # notices handled

    def on(self, topic: str, handler: Handler) -> None:
        self.handlers.add(topic, handler)

    def announce(self, topic: str) -> None:
        """Best effort: a notice that cannot be sent is logged; the other replicas catch up at their next reconnect
        (or, for rollouts, at their next full pass)."""
        import psycopg

        if topic not in TOPICS:
            raise ValueError(f"unknown change topic {topic!r}; one of {TOPICS}")
        with self._send_lock:
            for attempt in (1, 2):
                try:
                    if self._sender is None or self._sender.closed:
                        self._sender = self._connect()
                    self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, topic))
                    return
                except psycopg.Error as exc:
                    self._sender = None
                    if attempt == 2:
                        log.warning("could not tell the other replicas that %s changed: %s", topic, exc)

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                               application_name=self.application, **KEEPALIVE)

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._listen, name="edgeship-hub-notify", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._send_lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None

    def _listen(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    for topic in TOPICS:  # whatever changed while this replica was not listening
                        self.handlers.run(topic)
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self.received += 1
                            self.handlers.run(notice.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("the change-notice connection to the database broke (%s); reconnecting", exc)
                self._stopping.wait(RETRY)
        self.connected.clear()


def feed_for(url: str, *, application: str = "edgeship-hub") -> ChangeFeed:
    """LISTEN/NOTIFY on PostgreSQL; in-process on SQLite."""
    if url.startswith("postgresql"):
        return NotifyFeed(url, application=application)
    return LocalFeed()
