"""``Issuing``: from deployments and tags to one signed document per device, and out through the link.

Every change that can alter what a device must run (a device created or re-tagged, a
deployment created or deleted, a rotation to another hub key) commits a re-evaluation
intent with the change (``edgeship.hub.store.outbox``, ADR 0019). :meth:`Issuing.drain_pending`
serves them: it re-evaluates the devices they name, signs a new document for each device
whose module set changed (layering: ``edgeship.hub.targeting``), stores it and hands it to
the :class:`~edgeship.hub.services.link.DeviceLink`, then deletes exactly the intents it
read. Devices join and leave deployments in the time one request takes, and a hub killed
in between finishes the work at its next start (``HubServer`` drains before the API opens).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from edgeship.deployment import DEFAULT_TTL, MAX_SEQUENCE, ModuleBlobs, ModuleEntry, ModuleSettings
from edgeship.hub.issuer import DocumentGroup, signed_message
from edgeship.hub.rollouts.admission import Admission
from edgeship.hub.services.keys import SigningKeys
from edgeship.hub.services.link import DeviceLink, Outgoing
from edgeship.hub.services.rules import parsed_condition
from edgeship.hub.signing_pool import Signing, SigningPool, SigningSession, shared_pool
from edgeship.hub.store import HubStore, IssueRequest, ModuleRecord, Outbox
from edgeship.hub.store.outbox import merge
from edgeship.hub.targeting import Deployment, DeviceFacts, select_modules
from edgeship.hub.targeting.expression import Field
from edgeship.signing import SignerLike

__all__ = ["HANDOFF", "REEVALUATE_BATCH", "Issuing"]

log = logging.getLogger("edgeship.hub")

REEVALUATE_BATCH = 1000  # devices per issuing transaction
HANDOFF = 20_000  # stored documents held before they are handed to the link (about 4 KB each)

Layered = list[Deployment[tuple[dict[str, Any], ModuleEntry]]]
GroupKey = tuple[tuple[tuple[str, str], ...], ...]


@dataclasses.dataclass(frozen=True)
class Staged:
    """A store batch and the signatures started for it: device id -> (predicted sequence, payload, signing,
    index in the signing)."""

    requests: list[IssueRequest]
    guesses: dict[str, tuple[int, bytes, Signing, int]]


class Issuing:
    """Re-evaluation, signing and delivery of deployment documents; the outbox's one consumer."""

    def __init__(
        self,
        store: HubStore,
        keys: SigningKeys,
        link: DeviceLink,
        *,
        clock: Callable[[], datetime],
        ttl: timedelta = DEFAULT_TTL,
        batch: int = REEVALUATE_BATCH,
        admission: Callable[[], Admission] = Admission,
        signing: SigningPool | None = None,
    ) -> None:
        """``admission`` reads which devices each staged deployment counts for now (``docs/rollouts.md``);
        ``signing`` spreads a batch's signatures over processes (default: the process's shared pool)."""
        self.store = store
        self.admission = admission
        self.keys = keys
        self.link = link
        self.clock = clock
        self.ttl = ttl
        self.batch = batch
        self.outbox = Outbox(store)
        self.signing = signing if signing is not None else shared_pool()

    def reevaluate(self, device_ids: Iterable[str] | None = None) -> list[Outgoing]:
        """Sign and store a new document for each device (of ``device_ids``, or all) whose module set changed.

        Also re-issues a document that is older than half its time to live, so a
        device is never frozen by expiry while the hub runs. Returns the documents
        to publish; the caller publishes them (nothing goes to the link here).
        """
        return [o for batch in self.batches(device_ids) for o in batch]

    def drain_pending(self) -> int:
        """Serve every pending re-evaluation intent: re-evaluate, sign, store, publish, then delete the intents.

        Called right after every change (in the request that made it) and at hub start,
        so a change whose delivery a crash interrupted is finished without waiting for
        the refresh timer. Idempotent: a device whose module set did not change gets no
        new document, so draining twice (or two hubs at once) issues nothing twice. An
        error leaves the intents for the next drain. Returns the documents that went out.
        """
        work = merge(self.outbox.pending())
        if work is None:
            return 0
        sent = self.deliver_batches(work.device_ids, force=work.force)
        self.outbox.finish(work.intent_ids)
        return sent

    def refresh(self) -> int:
        """Re-issue and publish every document past half its time to live (and any whose modules changed).

        ``HubServer`` calls this on a timer, so a device that hears nothing new still
        gets a fresh document long before its current one expires (410, freeze).
        Pending intents are served first. Returns how many documents went out.
        """
        return self.drain_pending() + self.deliver_batches(None)

    def deliver_batches(self, device_ids: Iterable[str] | None, *, force: bool = False) -> int:
        """Re-evaluate, then hand the stored documents to the link, :data:`HANDOFF` documents at a time at most.

        The link's publish is a hand-off (the bridge sends from its own thread), and the
        documents of a whole re-evaluation are handed over together once stored, so the
        request that made the change returns without sharing its CPU with sending
        (ADR 0027); the link still gets each store batch as one publish, in order.
        """
        sent = 0
        held: list[list[Outgoing]] = []
        for batch in self.batches(device_ids, force=force):
            if batch:
                held.append(batch)
            sent += len(batch)
            if sum(map(len, held)) >= HANDOFF:
                self._hand_off(held)
                held = []
        self._hand_off(held)
        return sent

    def _hand_off(self, batches: list[list[Outgoing]]) -> None:
        for batch in batches:
            self.link.publish(batch)

    def current_documents(self) -> list[Outgoing]:
        """The newest signed document of every device: what a link re-publishes on (re)connect."""
        return [
            Outgoing(r.device_id, r.sequence, r.envelope.encode("utf-8")) for r in self.store.latest_desired().values()
        ]

    def batches(self, device_ids: Iterable[str] | None, *, force: bool = False) -> Iterator[list[Outgoing]]:
        """:meth:`reevaluate` in batches of ``batch`` devices, one store transaction each.

        Two reads for all devices (devices, newest documents), then per device only
        the layering rule; devices with the same winning modules share one
        :class:`DocumentGroup` (fingerprint, module entries, document template), so
        the per-device cost is the signature and the insert. ``force`` re-signs every
        device's document (a new hub key after a trust-root rotation).

        Pipelined (ADR 0027): a full batch's signatures are started on the signing
        workers (:meth:`_stage`), then the batch before it is stored. Each batch is stored
        under the keys' lock and keeps a staged signature only if it was made by the
        signers current at that moment, so a rotation never waits for a whole fleet's
        re-evaluation, and a re-evaluation that began before a rotation signs its later
        batches with the new key. Batches are published outside the lock.
        """
        ids = None if device_ids is None else list(device_ids)
        signers = self.keys.signers
        modules: dict[tuple[str, int], ModuleRecord] = {}
        layered = self.layered(modules)
        admission = self.admission()
        everyone = admission.everyone
        now = self.clock()
        reissue_before = now if force else now - self.ttl / 2
        newest = self.store.newest_issues(ids)  # one read, so unchanged devices cost no write transaction
        groups: dict[GroupKey, DocumentGroup] = {}
        owners: dict[str, DocumentGroup] = {}  # device id -> its group, for signing a batch at once
        predicted: dict[str, int] = {}  # device id -> the sequence its counter predicts
        pending: list[IssueRequest] = []
        # Devices with the same tags get the same modules when every deployment counts for everyone and no
        # condition names deviceId: their group is found once per distinct tags (device_tags shares the dict).
        by_tags: dict[int, DocumentGroup] | None = (
            {} if everyone and not any(_names_device_id(d.condition) for d in layered) else None
        )
        with self.signing.session() as session:
            staged: Staged | None = None  # the batch whose signatures the workers are making
            for device_id, tags, counter in self.store.device_tags(ids):
                group = by_tags.get(id(tags)) if by_tags is not None else None
                if group is None:
                    group = self._group(device_id, tags, layered, admission, modules, groups, now, signers)
                    if by_tags is not None:
                        by_tags[id(tags)] = group
                prior = newest.get(device_id)
                if prior is not None and prior[1] == group.fingerprint and prior[2] > reissue_before:
                    continue  # HubStore.issue_many re-checks under the device lock; this only skips the common case
                owners[device_id] = group
                predicted[device_id] = (prior[0] if prior is not None else counter) + 1
                pending.append(IssueRequest(
                    device_id, group.fingerprint, group.deployments,
                    partial(group.sign, device_id),
                ))
                if len(pending) >= self.batch:
                    # this batch is signed on the workers while the one before it is stored
                    ready, staged = staged, self._stage(pending, owners, predicted, session)
                    pending = []
                    if ready is not None:
                        yield self._issue(ready, reissue_before, groups.values(), owners, newest)
            last = self._stage(pending, owners, predicted, session) if pending else None
            for ready in (staged, last):
                if ready is not None:
                    yield self._issue(ready, reissue_before, groups.values(), owners, newest)

    def _stage(
        self, requests: list[IssueRequest], owners: Mapping[str, DocumentGroup], predicted: Mapping[str, int],
        session: SigningSession,
    ) -> Staged:
        """Start signing ``requests``' documents with the sequences their devices' counters predict.

        A guess only: :meth:`_sign_many` uses a signature when ``issue_many`` allocated the
        predicted sequence under the device lock and the signers did not change meanwhile;
        any other document is signed then.
        """
        guessed = [r for r in requests if predicted[r.device_id] <= MAX_SEQUENCE]  # else issue_many refuses it
        if not guessed:
            return Staged(requests, {})
        payloads = [owners[r.device_id].payload(r.device_id, predicted[r.device_id]) for r in guessed]
        signers = owners[guessed[0].device_id].distinct_signers()
        signing = session.start(signers, [signed_message(p) for p in payloads])
        return Staged(requests, {r.device_id: (predicted[r.device_id], payload, signing, index)
                                 for index, (r, payload) in enumerate(zip(guessed, payloads, strict=True))})

    def _group(
        self, device_id: str, tags: dict[str, Any], layered: Layered, admission: Admission,
        modules: dict[tuple[str, int], ModuleRecord], groups: dict[GroupKey, DocumentGroup], now: datetime,
        signers: Sequence[SignerLike],
    ) -> DocumentGroup:
        """The device's group: the layering rule over the deployments that count for it, and its pins."""
        everyone = admission.everyone
        active = layered if everyone else [d for d in layered if admission.admits(d.id, device_id)]
        selection = select_modules(DeviceFacts(device_id, tags), active)
        pins = {} if everyone else {n: p for n, p in admission.pins(device_id).items() if n not in selection}
        key = (
            tuple((name, chosen.deployment_id) for name, chosen in selection.items()),
            tuple(sorted((name, json.dumps(pin, sort_keys=True)) for name, pin in pins.items())),
        )
        group = groups.get(key)
        if group is None:
            contributing = sorted({chosen.deployment_id for chosen in selection.values()})
            chosen_modules = {name: chosen.module for name, chosen in selection.items()}
            for name, pin in pins.items():  # last known-good modules an abort re-issued (rollouts)
                part, entry = self._entry(modules, name, int(pin["version"]), "pinned", pin.get("settings") or {})
                chosen_modules[name] = ({**part, "pinned": True}, entry)
            fingerprint = json.dumps(
                {
                    "modules": {name: chosen[0] for name, chosen in chosen_modules.items()},
                    "deployments": contributing,
                },
                sort_keys=True,
                separators=(",", ":"),
            )
            entries = {name: chosen[1] for name, chosen in sorted(chosen_modules.items())}
            group = groups[key] = DocumentGroup(
                entries, contributing, fingerprint, issued_at=now, ttl=self.ttl, signers=signers
            )
        return group

    def _issue(
        self, staged: Staged, reissue_before: datetime, groups: Iterable[DocumentGroup],
        owners: Mapping[str, DocumentGroup], newest: Mapping[str, tuple[int, str, datetime]],
    ) -> list[Outgoing]:
        with self.keys.lock:
            signers = self.keys.signers
            for group in groups:
                group.signers = signers
            issued = self.store.issue_many(staged.requests, reissue_before=reissue_before,
                                           sign_many=partial(self._sign_many, owners, staged), known=newest)
        return [Outgoing(d.device_id, d.sequence, d.envelope.encode("utf-8")) for d in issued]

    def _sign_many(
        self, owners: Mapping[str, DocumentGroup], staged: Staged, allocated: Sequence[tuple[IssueRequest, int]]
    ) -> list[tuple[str, datetime, datetime]]:
        """The envelopes of a store batch: staged signatures where the sequence was predicted, the rest now.

        The same bytes as each request's ``sign`` would make (Ed25519 is deterministic; the
        envelope text is the group's): only where the signatures are computed differs.
        """
        if not allocated:
            return []
        signers = owners[allocated[0][0].device_id].distinct_signers()  # every group of the batch has the same
        keyids = tuple(s.keyid for s in signers)
        out: list[tuple[str, datetime, datetime] | None] = []
        late: list[tuple[int, DocumentGroup, bytes]] = []  # (position, group, payload) still to sign
        for position, (request, sequence) in enumerate(allocated):
            group = owners[request.device_id]
            guess = staged.guesses.get(request.device_id)
            if guess is not None and guess[0] == sequence and guess[2].keyids == keyids:
                out.append(group.envelope(guess[1], guess[2].result()[guess[3]]))
            else:
                out.append(None)
                late.append((position, group, group.payload(request.device_id, sequence)))
        if late:
            signatures = self.signing.sign(signers, [signed_message(payload) for _p, _g, payload in late])
            for (position, group, payload), sigs in zip(late, signatures, strict=True):
                out[position] = group.envelope(payload, sigs)
        return [envelope for envelope in out if envelope is not None]

    def layered(self, modules: dict[tuple[str, int], ModuleRecord] | None = None) -> Layered:
        """Every deployment as the layering rule sees it; each module carries (fingerprint part, entry).

        ``modules`` caches module records by (name, version) across calls of one pass.
        """
        cache = {} if modules is None else modules
        result: Layered = []
        for record in self.store.list_deployments():
            chosen = {ref.name: self._entry(cache, ref.name, ref.version, record.id, ref.settings)
                      for ref in record.modules}
            condition = parsed_condition(record.target_condition)
            result.append(Deployment(record.id, record.priority, record.created, condition, chosen))
        return result

    def _entry(
        self, modules: dict[tuple[str, int], ModuleRecord], name: str, version: int, deployment_id: str,
        settings: dict[str, Any],
    ) -> tuple[dict[str, Any], ModuleEntry]:
        """One module as a document carries it, and its part of the fingerprint."""
        key = (name, version)
        if key not in modules:
            modules[key] = self.store.get_module(name, version)
        module = modules[key]
        entry = ModuleEntry(
            module=module.envelope,
            blobs=ModuleBlobs(
                bundle=f"/blobs/{module.bundle_digest}",
                image=f"/blobs/{module.image_digest}" if module.image_digest else None,
            ),
            settings=_stored_settings(deployment_id, name, settings),
        )
        part = {"ref": module.ref, "manifest": module.manifest_digest,
                "settings": entry.settings.model_dump(by_alias=True, exclude_none=True)}
        return part, entry


def _stored_settings(deployment_id: str, module: str, stored: dict[str, Any]) -> ModuleSettings:
    """A stored module's settings; ``env`` that a hub before the trust split accepted is dropped.

    Such a deployment was created when the hub still passed environment variables to
    devices; signing them now would make every agent refuse the document (400), so the
    hub leaves them out and says so. The module's own release decides its environment.
    """
    if stored.get("env"):
        log.warning(
            "deployment %s, module %s: settings.env (%s) is no longer sent to devices: only a release-signed "
            "module may set environment variables (docs/security.md); delete and re-create the deployment "
            "without it", deployment_id, module, ", ".join(sorted(stored["env"])),
        )
        stored = {k: v for k, v in stored.items() if k != "env"}
    return ModuleSettings.model_validate(stored, strict=False)


def _names_device_id(node: object) -> bool:
    """Whether a parsed target condition refers to ``deviceId`` anywhere (then tags alone do not decide)."""
    if isinstance(node, Field):
        return node.path == ("deviceId",)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return any(_names_device_id(getattr(node, f.name)) for f in dataclasses.fields(node))
    if isinstance(node, (tuple, list)):
        return any(_names_device_id(item) for item in node)
    return False
