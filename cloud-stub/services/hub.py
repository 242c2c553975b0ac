"""``HubServices``: the hub's service layer as one object graph, built in one place.

Each service takes its collaborators at construction and none is assigned afterwards.
The graph has no cycle: the :class:`~edgeship.hub.services.link.DeviceLink` (the MQTT
bridge) is built first and knows nothing of the services; the bridge gets the services
only when it starts serving (``MqttBridge.start(services)``), as a server gets its
application. Each line names only what is built above it, so there is no cycle::

    SigningKeys(trust_root, signers)                the current root and hub keys, one lock
    Issuing(store, keys, link, admission)           re-evaluation, signing, outbox drain, refresh
    TrustRotation(store, keys, issuing, link, ...)  rotation; the chain for new devices
    Fleet(store, issuing, trust, link, wakeup)      devices and what they send; direct methods
    Catalog(store, blobs, keys)                     verified modules and their blobs
    Rollouts(store, issuing, health)                staged rollouts: the engine's step, gates, operator actions
    Deployments(store, issuing, rollouts)           deployments and their status

REST routers and the bridge each call one of these services per request or message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from edgeship.deployment import DEFAULT_TTL
from edgeship.hub.services.catalog import Catalog
from edgeship.hub.services.deployments import Deployments
from edgeship.hub.services.fleet import Fleet
from edgeship.hub.services.health import HealthReader
from edgeship.hub.services.issuing import REEVALUATE_BATCH, Issuing
from edgeship.hub.services.keys import SigningKeys
from edgeship.hub.services.link import DeviceLink
from edgeship.hub.services.rollouts import Rollouts, Wakeup
from edgeship.hub.services.trust import TrustRotation
from edgeship.hub.store import HubStore, RolloutStore, TelemetryHistory
from edgeship.hub.trust import TrustRootFiles
from edgeship.registry.blobs import BlobStore
from edgeship.signing import SignerLike, TrustRoot

__all__ = ["HubServices", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class HubServices:
    """The services of one hub process, over one store and one device link."""

    store: HubStore
    clock: Callable[[], datetime]  # the time every service reads (issue times, reports, telemetry)
    keys: SigningKeys
    issuing: Issuing
    trust: TrustRotation
    fleet: Fleet
    catalog: Catalog
    deployments: Deployments
    rollouts: Rollouts
    wakeup: Wakeup  # set when reports arrive, so the rollout engine looks at once

    @classmethod
    def build(
        cls,
        store: HubStore,
        blobs: BlobStore,
        trust_root: TrustRoot,
        signers: Sequence[SignerLike],
        link: DeviceLink,
        *,
        clock: Callable[[], datetime] = utcnow,
        ttl: timedelta = DEFAULT_TTL,
        trust_files: TrustRootFiles | None = None,
        hub_keys: Callable[[], Sequence[SignerLike]] | None = None,
        batch: int = REEVALUATE_BATCH,
        announce: Callable[[str], None] | None = None,
    ) -> HubServices:
        """Wire the graph. ``trust_files`` None: the hub cannot rotate its trust root (an in-memory hub);
        ``hub_keys``: every hub key it holds, read at each rotation; ``batch``: devices per issuing transaction;
        ``announce`` tells other hub replicas that a topic changed (``edgeship.hub.store.notify``)."""
        keys = SigningKeys(trust_root, signers)
        issuing = Issuing(store, keys, link, clock=clock, ttl=ttl, batch=batch,
                          admission=RolloutStore(store).admission)
        trust = TrustRotation(store, keys, issuing, link, clock=clock, files=trust_files, hub_keys=hub_keys,
                              announce=announce)
        rollouts = Rollouts(store, issuing, clock=clock, health=HealthReader(TelemetryHistory(store)),
                            announce=announce)
        wakeup = Wakeup()
        return cls(
            store=store,
            clock=clock,
            keys=keys,
            issuing=issuing,
            trust=trust,
            fleet=Fleet(store, issuing, trust, link, clock=clock, wakeup=wakeup),
            catalog=Catalog(store, blobs, keys, clock=clock),
            deployments=Deployments(store, issuing, rollouts, clock=clock),
            rollouts=rollouts,
            wakeup=wakeup,
        )
