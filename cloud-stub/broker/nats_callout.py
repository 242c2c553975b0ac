"""The NATS auth callout: the hub decides each device login, and binds its MQTT client id to it (ADR 0051).

nats-server has no ``use_username_as_clientid``: with logins in ``users.conf`` a device
that sends another device's MQTT client id replaces that device's connection, again and
again. With ``auth_callout`` in ``users.conf`` (``edgeship hub broker-config --engine nats
--auth-callout``) a node sends every login but the hubs' to ``$SYS.REQ.USER.AUTH`` as a
JWT it signed, and waits for a user JWT signed by the callout's issuer key. The hub
replicas answer as one queue group (:class:`NatsAuthCallout`); :class:`LoginDecider`
decides:

- the login is a device's (hub identities never reach the callout: they are ``auth_users``);
- its password matches the device's bcrypt hash, the same hashes ``users.conf`` holds
  (``ManagedNats.logins``), so the callout and the file never disagree;
- it speaks MQTT and its client id is its own (:func:`~edgeship.mqtt.client.mqtt_client_id`:
  the login, ``.`` sent as ``~``);
- then the user JWT carries the permissions ``users.conf`` would give it
  (:func:`~edgeship.hub.broker.nats.user_permissions`), for MQTT connections only.

Anything else is answered with an error and the node closes the connection. Each replica
decides up to :data:`IN_FLIGHT` requests at once on :data:`POOL` threads, and leaves a request
past its ``exp`` unanswered (its node gave up: the device tries again). A password
that passed bcrypt once is remembered as its SHA-256 until the device's hash changes, so a
reconnect storm costs a hash lookup per device, not a bcrypt check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeship.errors import InputError, TransportError
from edgeship.fsutil import atomic_write_text
from edgeship.hub.broker.nats import AUTH_SUBJECT, NatsUser, user_permissions
from edgeship.hub.broker.nats_jwt import SERVER, USER, NKey, decode_jwt, encode_jwt, public_key_bytes
from edgeship.mqtt.client import mqtt_client_id
from edgeship.mqtt.identity import is_hub_identity

__all__ = ["QUEUE", "SEED_FILE", "LoginDecider", "NatsAuthCallout", "load_issuer", "make_issuer"]

QUEUE = "edgeship-hub-auth"  # every replica answers in one queue group: each login is decided once
SEED_FILE = "auth-callout.nk"  # beside users.conf: the issuer's seed, the hub's secret (0600)
CONNECT_TIMEOUT = 10.0
IN_FLIGHT = 64  # requests taken from the subscription and not yet answered, per replica
POOL = 4  # threads deciding them: bcrypt releases the GIL, so a bcrypt check per core, and remembered ones between
WARN_EVERY = 60.0  # seconds between two warnings about one login name's refusals
MAX_WARNED = 10_000  # login names remembered for that; past it the memory starts again

log = logging.getLogger("edgeship.hub.broker")


def make_issuer(folder: Path) -> NKey:
    """The issuer key in ``folder/auth-callout.nk``, made (0600) if missing: written once, kept across reruns."""
    path = Path(folder) / SEED_FILE
    if path.exists():
        return load_issuer(path)
    key = NKey.generate()
    atomic_write_text(path, key.seed + "\n", mode=0o600)
    return key


def load_issuer(path: Path) -> NKey:
    """The issuer key from its seed file; refused if others may read it (whoever has it can log in as any device)."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the auth callout key {path} ({getattr(exc, 'strerror', None) or exc}); write "
                         "the folder with 'edgeship hub broker-config --engine nats --auth-callout'.") from exc
    if mode & 0o077:
        raise InputError(f"The auth callout key {path} may be read by group or others (mode {mode:o}); run chmod 600 "
                         f"{path}: whoever reads it can log in to the cluster as any device.")  # fmt: skip
    return NKey(text)


class LoginDecider:
    """Answers one authorization request: a user JWT for a device's own login, an error for anything else."""

    def __init__(self, issuer: NKey, logins: Callable[[], Mapping[str, str]], *, account: str = "$G") -> None:
        """``logins()``: username -> bcrypt hash of every device that may log in (``ManagedNats.logins``);
        ``account``: the NATS account the devices are bound to (the config's global account)."""
        self.issuer = issuer
        self.logins = logins
        self.account = account
        self._checked: dict[str, tuple[str, bytes]] = {}  # username -> (hash, sha256 of a password bcrypt accepted)
        self._lock = threading.Lock()
        self._warned: dict[str, float] = {}  # login name -> when its last refusal was logged
        self._unlogged = 0
        self.allowed = 0
        self.refused = 0
        self.expired = 0  # requests left unanswered: the node had stopped waiting

    def answer(self, token: bytes, *, slow: bool = True) -> bytes | None:
        """The response JWT for an authorization request JWT, or None for a request whose node stopped waiting
        (past its ``exp``: in a storm a late answer only costs the node work, and the device tries again). A
        request that is not one gets no answer (:class:`InputError`): it names no server to answer to. With
        ``slow=False`` a password that needs a bcrypt check raises :class:`NeedsBcrypt` instead (the caller asks
        again where a bcrypt check may block)."""
        request = decode_jwt(token, SERVER)
        expires = request.get("exp")
        if isinstance(expires, int) and expires < time.time():
            self.expired += 1
            return None
        nats = request.get("nats")
        if not isinstance(nats, dict):
            raise InputError("The authorization request has no 'nats' claims.")
        server = _section(nats, "server_id").get("id")
        user_nkey = nats.get("user_nkey")
        if server != request["iss"] or not isinstance(user_nkey, str):
            raise InputError("The authorization request's server or user key is missing or not its signer's.")
        public_key_bytes(user_nkey, USER)  # a user nkey, or refused
        try:
            username, permissions = self._decide(nats, slow)
        except NeedsBcrypt:
            raise
        except InputError as exc:
            self.refused += 1
            self._log_refusal(str(_section(nats, "connect_opts").get("user"))[:80], str(exc))
            return self._response(server, user_nkey, error=str(exc)).encode("ascii")
        self.allowed += 1
        nats_user = {"pub": {"allow": permissions["publish"]}, "sub": {"allow": permissions["subscribe"]},
                     "subs": -1, "data": -1, "payload": -1, "allowed_connection_types": ["MQTT"],
                     "type": "user", "version": 2}  # fmt: skip
        user_jwt = encode_jwt({"sub": user_nkey, "aud": self.account, "name": username, "nats": nats_user},
                              self.issuer)  # fmt: skip
        return self._response(server, user_nkey, jwt=user_jwt).encode("ascii")

    def _decide(self, nats: Mapping[str, Any], slow: bool) -> tuple[str, dict[str, Any]]:
        options, client = _section(nats, "connect_opts"), _section(nats, "client_info")
        username, password = options.get("user"), options.get("pass")
        if not isinstance(username, str) or not username or not isinstance(password, str) or not password:
            raise InputError("a login without a username and password (devices log in with both)")
        shown = username[:80]
        if is_hub_identity(username):  # hubs are the callout's auth_users: a hub name here is not the hub
            raise InputError(f"{shown!r} is a hub identity, which the cluster checks itself")
        hashed = self.logins().get(username)
        if hashed is None or not self._password_matches(username, password, hashed, slow):
            raise InputError(f"wrong username or password for {shown!r}")
        if client.get("type") != "mqtt" and client.get("client_type") != "mqtt":
            raise InputError(f"device {shown!r} connected over the NATS protocol; devices log in over MQTT only")
        wanted = mqtt_client_id(username)
        if client.get("mqtt_id") != wanted:
            raise InputError(f"device {shown!r} sent the MQTT client id {str(client.get('mqtt_id'))[:80]!r}; a "
                             f"device must use its own, {wanted!r}")  # fmt: skip
        return username, user_permissions(NatsUser(username, hashed))

    def _log_refusal(self, username: str, why: str) -> None:
        """A warning per login name at most every :data:`WARN_EVERY` seconds: a device retrying a bad login every
        second, or a fleet after a mistake, must not flood the hub's log; the refusals left out are counted."""
        now = time.monotonic()
        with self._lock:
            last = self._warned.get(username)
            if last is not None and now - last < WARN_EVERY:
                self._unlogged += 1
                return
            if len(self._warned) >= MAX_WARNED:
                self._warned.clear()
            self._warned[username] = now
            unlogged, self._unlogged = self._unlogged, 0
        log.warning("refused a NATS login: %s%s", why,
                    f" ({unlogged} other refusal(s) of logins warned about in the last minute not logged)"
                    if unlogged else "")  # fmt: skip

    def _password_matches(self, username: str, password: str, hashed: str, slow: bool) -> bool:
        import bcrypt

        digest = hashlib.sha256(password.encode("utf-8")).digest()
        with self._lock:
            known = self._checked.get(username)
        if known is not None and known[0] == hashed and hmac.compare_digest(known[1], digest):
            return True
        if not slow:
            raise NeedsBcrypt(username)
        try:
            ok = bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))
        except ValueError:
            ok = False
        if ok:
            with self._lock:
                self._checked[username] = (hashed, digest)
        return ok

    def _response(self, server: str, user_nkey: str, *, jwt: str | None = None, error: str | None = None) -> str:
        body = {"jwt": jwt} if jwt is not None else {"error": error}
        return encode_jwt({"sub": user_nkey, "aud": server,
                           "nats": {**body, "type": "authorization_response", "version": 2}}, self.issuer)


class NeedsBcrypt(InputError):
    """A login whose password only a bcrypt check can decide (``LoginDecider.answer(slow=False)``)."""


def _section(claims: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = claims.get(name)
    return value if isinstance(value, dict) else {}


class NatsAuthCallout:
    """This replica's share of the cluster's logins: a queue subscription on ``$SYS.REQ.USER.AUTH``, answered by a
    :class:`LoginDecider` on a thread pool (bcrypt releases the GIL), on an asyncio loop in its own thread."""

    def __init__(self, servers: Sequence[str], decider: LoginDecider, *, username: str | None,
                 password: str | None, ca_file: Path | None = None,
                 name: str = "edgeship-hub auth") -> None:  # fmt: skip
        self.servers = list(servers)
        self.decider = decider
        self.username, self.password = username, password
        self.ca_file = ca_file
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._pool = concurrent.futures.ThreadPoolExecutor(POOL, thread_name_prefix="edgeship-hub-nats-auth")
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, timeout: float = CONNECT_TIMEOUT) -> NatsAuthCallout:
        """Connect and subscribe; a :class:`TransportError` saying why if that fails within ``timeout``."""
        self._thread = threading.Thread(target=self._loop.run_forever, name="edgeship-hub-nats-auth", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(timeout), self._loop).result(timeout + 5)
        except Exception as exc:
            self.stop()
            raise TransportError(
                f"The hub could not serve the NATS auth callout at {', '.join(self.servers)} as {self.username!r} "
                f"({exc or type(exc).__name__}); check the --nats-inbound addresses, the hub's broker user and that "
                "the nodes run from the configs 'edgeship hub broker-config --engine nats --auth-callout' wrote."
            ) from exc
        log.info("deciding device logins for NATS (auth callout, queue %s)", QUEUE)
        return self

    async def _open(self, timeout: float) -> None:
        import nats

        tls = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file is not None else None
        self._connection = await asyncio.wait_for(nats.connect(
            self.servers, user=self.username, password=self.password, name=self.name, tls=tls,
            connect_timeout=min(timeout, 2.0), max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            allow_reconnect=True,
        ), timeout)  # fmt: skip
        await self._connection.subscribe(AUTH_SUBJECT, queue=QUEUE, cb=self._on_request)
        await self._connection.flush(timeout)

    async def _on_request(self, msg: Any) -> None:
        """nats-py hands a subscription's next message over only when this returns: wait for a free slot, then
        decide on the pool in a task of its own, so up to :data:`IN_FLIGHT` logins are decided at once. While every
        slot is taken, requests wait in the subscription's queue (bounded by nats-py's pending limits)."""
        await self._slots.acquire()
        task = self._loop.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Any) -> None:
        try:
            try:  # a remembered password is decided here (~0.3 ms); a bcrypt check goes to the pool
                answer = self.decider.answer(msg.data, slow=False)
            except NeedsBcrypt:
                answer = await self._loop.run_in_executor(self._pool, self.decider.answer, msg.data)
        except InputError as exc:
            log.warning("ignored a message on %s that is no authorization request: %s", AUTH_SUBJECT, exc)
            return
        except Exception:  # the service must survive anything one request does
            log.exception("the NATS auth callout failed on a request; continuing")
            return
        finally:
            self._slots.release()
        if answer is not None and msg.reply:
            with contextlib.suppress(Exception):  # a connection lost meanwhile: the node times the login out
                await msg.respond(answer)

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._connection is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._connection.close(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("decided %d NATS login(s): %d allowed, %d refused; %d request(s) left unanswered because their node "
                 "had stopped waiting", self.decider.allowed + self.decider.refused, self.decider.allowed,
                 self.decider.refused, self.decider.expired)  # fmt: skip
        if not self._loop.is_running():
            self._loop.close()
