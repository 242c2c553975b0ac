"""``TrustRotation``: taking a new trust root, sending it to every device, re-signing when the hub key changed.

The rules are pure and live in ``edgeship.hub.trust`` (``check_rotation``,
``signers_for``, ``chain_message``); the files in ``TrustRootFiles``. This service
orders the steps (ADR 0013): check, write the re-sign intent, save the files, send the
chain, then re-sign, all under the keys' lock. A new device gets the chain before its
first document (:meth:`TrustRotation.deliver_trust_root`, called by the fleet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from edgeship.errors import InputError
from edgeship.hub.services.issuing import Issuing
from edgeship.hub.services.keys import SigningKeys
from edgeship.hub.services.link import DeviceLink
from edgeship.hub.store import HubStore
from edgeship.hub.trust import TrustRootFiles, chain_message, check_rotation, signers_for
from edgeship.signing import Envelope, SignerLike, TrustRoot

__all__ = ["TrustRotation"]


class TrustRotation:
    """The hub's trust root over time; ``files`` None means this hub cannot rotate (an in-memory hub)."""

    def __init__(
        self,
        store: HubStore,
        keys: SigningKeys,
        issuing: Issuing,
        link: DeviceLink,
        *,
        clock: Callable[[], datetime],
        files: TrustRootFiles | None = None,
        hub_keys: Callable[[], Sequence[SignerLike]] | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        """``hub_keys``: every hub signing key this hub holds, read at each rotation (a key created later
        counts), so a rotation to another hub key can switch the signer; ``announce`` tells other hub replicas
        that the trust root changed, so they read the saved files again (ADR 0037)."""
        self.store = store
        self.keys = keys
        self.issuing = issuing
        self.link = link
        self.clock = clock
        self.files = files
        self.held_keys = hub_keys
        self.announce = announce

    @property
    def trust_root(self) -> TrustRoot:
        return self.keys.trust_root

    @property
    def signers(self) -> list[SignerLike]:
        return self.keys.signers

    def chain_versions(self) -> list[int]:
        """The versions of the chain devices get on their ``trust-root`` topic, oldest first."""
        chain = self.files.chain() if self.files is not None else []
        return [TrustRoot.from_json(Envelope.from_json(e).payload).version for e in chain]

    def trust_root_message(self) -> bytes | None:
        """The retained ``trust-root`` payload (every rotation so far), or None before the first one."""
        return chain_message(self.files.chain()) if self.files is not None else None

    def deliver_trust_root(self, device_ids: Sequence[str] | None) -> None:
        """Send the chain to ``device_ids`` (every device if None); nothing before the first rotation."""
        message = self.trust_root_message()
        if message is not None:
            ids = device_ids if device_ids is not None else [d.id for d in self.store.list_devices()]
            self.link.publish_trust_root(message, ids)

    def rotate_trust_root(self, envelope: bytes) -> TrustRoot:
        """Take a new trust root, publish it to every device, then re-sign their documents if the hub key changed.

        Checked before anything is written: it rotates from the current root (as the
        agent checks it) and this hub holds enough of its hub keys. The root goes out
        before any document signed by a new key, so devices can verify those. The whole
        rotation holds the keys' lock: a concurrent second rotation waits, then is checked
        against the root this one installed (the same envelope twice: the second is refused).
        """
        if self.files is None:
            raise InputError(
                "This hub keeps no trust-root files, so it cannot rotate; run it with 'edgeship hub serve'."
            )
        with self.keys.lock:
            current = self.keys.signers
            new = check_rotation(self.keys.trust_root, envelope, self.clock())
            signers = signers_for(new, self.held_keys() if self.held_keys else [], current)
            resign = [s.keyid for s in signers] != [s.keyid for s in current]
            # The intent goes in before the files: a hub killed after saving them re-signs at start
            # (with the key the new root lists); killed before, it re-signs harmlessly with the old one.
            outbox = self.issuing.outbox
            intent = outbox.add(f"trust root v{new.version} re-sign", None, force=True) if resign else None
            self.files.save(envelope, new)
            self.keys.replace(new)
            self.deliver_trust_root(None)
            if resign:
                self.keys.replace(new, signers)
                self.issuing.deliver_batches(None, force=True)
                outbox.finish([intent] if intent is not None else [])
        if self.announce is not None:
            self.announce("trust")
        return new
