"""``Replication``: one hub process's part among replicas on one PostgreSQL database (ADR 0037).

- **Periodic work on one replica.** Whoever holds the ``coordinator`` lease
  (``store/lease.py``) runs the rollout engine, the document refresh and the sweep
  below; :meth:`Replication.leading` says whether this replica does, as of its last
  check (every ``interval`` seconds). The others take the lease as soon as its holder
  is gone.
- **No stranded messages.** Every replica registers its broker client id
  (``store/replicas.py``) and holds the lease ``replica:<client id>`` while it lives. The
  coordinator tries each other replica's lease; one it can take belongs to a replica
  that is gone, whose broker session it drains (``bridge/adopt.py``) before deleting
  its row, and whose committed but undelivered re-evaluations it then issues. A
  replica that (re)starts waits for its own lease, so it never runs while a survivor
  drains its session.
- **Changes reach every replica.** The change feed (``store/notify.py``) runs the
  handlers ``HubServer`` registers (reload the trust root, wake the rollout engine).

On SQLite (one process per database) every lease is granted, nothing registers and
nothing is swept: the embedded laptop path is unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from edgeship.errors import TransportError
from edgeship.hub.store import HubStore, ReplicaTable
from edgeship.hub.store.lease import Leases
from edgeship.hub.store.notify import ChangeFeed
from edgeship.hub.store.replicas import replica_lease

__all__ = ["COORDINATOR", "Replication"]

COORDINATOR = "coordinator"  # the lease of the replica that runs the periodic work
INTERVAL = 1.0  # seconds between lease checks (and the longest a lost coordinator goes unnoticed)
SWEEP_EVERY = 2.0  # seconds between looks for replicas that are gone
JOIN_WAIT = 60.0  # seconds a starting replica waits for its own lease (a drain of its old session takes seconds)

log = logging.getLogger("edgeship.hub.replication")


class Replication:
    def __init__(
        self,
        store: HubStore,
        leases: Leases,
        feed: ChangeFeed,
        *,
        client_id: str,
        protocol: str,
        shared: bool,
        clock: Callable[[], datetime],
        adopt: Callable[[str], int] | None = None,
        finish_pending: Callable[[], None] | None = None,
        interval: float = INTERVAL,
    ) -> None:
        """``shared``: the database is PostgreSQL and other replicas may use it; ``adopt`` drains a gone
        replica's broker session (None: this replica cannot, e.g. it speaks MQTT 3.1.1); ``finish_pending`` issues
        what a replica that died committed and did not deliver: it runs each time this replica takes the periodic
        work over (the dead one was the coordinator) and after each gone replica it sweeps (any other one)."""
        self.leases = leases
        self.feed = feed
        self.table = ReplicaTable(store)
        self.client_id = client_id
        self.protocol = protocol
        self.shared = shared
        self.clock = clock
        self.adopt = adopt
        self.finish_pending = finish_pending
        self.interval = interval
        self.adopted: list[str] = []  # client ids whose sessions this replica drained
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0

    def join(self) -> None:
        """Before the bridge connects: take this replica's own lease (waiting while a survivor drains its old
        session), register it, and start listening for changes."""
        if self.shared:
            self._take_own_lease()
            self.table.register(self.client_id, self.protocol, self.clock())
        self.feed.start()

    def _take_own_lease(self) -> None:
        """This replica's lease, waiting up to :data:`JOIN_WAIT` seconds while a survivor drains its old session;
        still held after that, another live process uses this client id (an error saying so)."""
        lease = replica_lease(self.client_id)
        deadline = time.monotonic() + JOIN_WAIT
        if not self.leases.acquire(lease):
            log.info("waiting for the lease of replica %r (a survivor may be draining its old session)",
                     self.client_id)
        while not self.leases.held(lease):
            if time.monotonic() > deadline:
                raise TransportError(
                    f"Another hub process on this database uses the broker client id {self.client_id!r}; give each "
                    "replica its own broker user (--broker-username hub-<name>)."
                )
            self._stopping.wait(0.5)
            self.leases.acquire(lease)

    def start(self) -> None:
        """Start checking leases (and, when coordinating, sweeping) every ``interval`` seconds."""
        self._check()
        self._thread = threading.Thread(target=self._loop, name="edgeship-hub-replication", daemon=True)
        self._thread.start()

    def leading(self) -> bool:
        """Whether this replica runs the periodic work now."""
        return self.leases.held(COORDINATOR)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self.feed.stop()
        self.leases.close()  # the coordinator lease goes to another replica at once

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self._check()
            except Exception:  # a database hiccup must not end the coordination for good
                log.exception("checking this replica's leases failed; trying again")

    def _check(self) -> None:
        was = self.leading()
        if not self.leases.check() and self.shared:
            log.warning("this replica lost its database leases; taking them again")
        if self.shared and not self.leases.held(replica_lease(self.client_id)):
            self.leases.acquire(replica_lease(self.client_id))
        if not self.leading():
            self.leases.acquire(COORDINATOR)
        if self.leading() != was:
            log.info("this replica %s the periodic work", "now runs" if self.leading() else "no longer runs")
            if self.leading() and self.finish_pending is not None:
                self.finish_pending()
        if self.leading() and self.shared and time.monotonic() - self._last_sweep >= SWEEP_EVERY:
            self._last_sweep = time.monotonic()
            self._sweep()

    def _sweep(self) -> None:
        """Drain and forget every registered replica whose lease this one can take (it is gone), then issue what
        it committed and did not deliver (killed between a REST change and its documents)."""
        gone = 0
        for client_id, protocol in self.table.list():
            if client_id == self.client_id or self._stopping.is_set():
                continue
            lease = replica_lease(client_id)
            if not self.leases.acquire(lease):
                continue  # alive
            try:
                if self.adopt is not None and protocol == "5":
                    log.warning("replica %r is gone; draining its broker session", client_id)
                    self.adopt(client_id)
                    self.adopted.append(client_id)
                self.table.remove(client_id)
                gone += 1
            except Exception:
                log.exception("draining the session of gone replica %r failed; trying again later", client_id)
            finally:
                self.leases.release(lease)
        if gone and self.finish_pending is not None:
            self.finish_pending()
