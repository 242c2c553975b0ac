"""``ManagedNats``: a running hub keeps a NATS cluster's ``users.conf`` in step with its store and reloads the nodes.

``edgeship hub serve --nats-config-dir DIR`` (ADR 0045), the NATS counterpart of
``--broker-config-dir`` (``reload.ManagedBroker``). ``DIR`` is the folder ``edgeship hub
broker-config --engine nats -o DIR`` wrote; the hub rewrites only ``DIR/users.conf``
(atomically, 0600), at start and after every credential change (``device create``,
``rotate-credentials``, ``delete``: ``DeviceCredentials.sync_broker``), then makes every
node re-read it, before the request returns:

- **same host** (the default): SIGHUP, NATS's reload signal, to the pid each node wrote
  in ``DIR/<node>.pid`` (the generated node configs set ``pid_file`` there); a pid that
  is not a running ``nats-server`` (a stale file) is not signalled;
- **other hosts**: ``--nats-reload-command`` argv lists, run in turn without a shell
  (e.g. ``ssh n1 nats-server --signal reload``); ``EDGESHIP_NATS_USERS`` names the
  written file, so a command can copy it first.

What goes in: each device with the bcrypt hash the hub stored when it issued or
rotated its password. A device whose hash only the operator can give (a password from
before store revision 0008, or no credential; ``BrokerState.operator_hashed``) keeps the
line the folder has (``broker-config --device-passwords``); a device with a certificate
or reserved for the hub gets none. Hub users (``hub``, ``hub-<name>``) keep their lines
from the folder (their password is the operator's ``--hub-password-file``); this hub's own
is made from ``--broker-password`` when the folder has none.

Hub replicas (ADR 0037): every replica given ``--nats-config-dir`` rewrites after its own
changes and announces the change topic ``credentials``; on that notice the others
rewrite and reload only if their ``users.conf`` would change (a folder they share is
already current: nothing to do; a folder of their own, e.g. one replica per node host,
catches up). Rewrites are serialised by a lock in the process and a ``flock`` on
``DIR/.users.lock`` across processes, and each reads the store inside them, so the last
writer always leaves the newest state.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from edgeship.errors import ConfigError, EdgeshipError, InputError
from edgeship.fsutil import atomic_write_text
from edgeship.hub.broker.nats import (
    PID_SUFFIX,
    NatsUser,
    hash_password_bcrypt,
    parse_auth_callout,
    parse_users,
    render_users,
)
from edgeship.hub.broker.reload import BrokerState
from edgeship.mqtt.identity import RESERVED_NAMES, is_hub_identity, validate_hub_identity

__all__ = ["CHANGE_TOPIC", "MAX_RELOAD_COMMANDS", "RELOAD_TIMEOUT", "USERS_FILE", "ManagedNats",
           "parse_reload_command"]  # fmt: skip

log = logging.getLogger("edgeship.hub.broker")

USERS_FILE = "users.conf"
CHANGE_TOPIC = "credentials"  # the replicas' change notice (store/notify.py)
RELOAD_TIMEOUT = 30.0  # seconds one --nats-reload-command may take
MAX_RELOAD_COMMANDS = 32
MAX_COMMAND_LENGTH = 4096  # characters of one --nats-reload-command


def parse_reload_command(text: str) -> tuple[str, ...]:
    """One ``--nats-reload-command`` as an argv (shell-like quoting, but never run by a shell)."""
    if len(text) > MAX_COMMAND_LENGTH:
        raise InputError(f"--nats-reload-command is longer than {MAX_COMMAND_LENGTH} characters; put the steps in "
                         "a script and give its path.")  # fmt: skip
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise InputError(f"--nats-reload-command {text!r} cannot be split into words ({exc}); close its "
                         "quotes.") from exc
    if not argv:
        raise InputError("--nats-reload-command is empty; give a program and its arguments, e.g. "
                         "'ssh n1 nats-server --signal reload'.")  # fmt: skip
    return argv


class ManagedNats:
    """A NATS config folder whose ``users.conf`` the hub rewrites, and how the nodes are made to reload it."""

    def __init__(
        self,
        folder: Path,
        *,
        hub_username: str = "hub",
        hub_password: str | None = None,
        commands: Sequence[Sequence[str]] = (),
        announce: Callable[[str], None] | None = None,
    ) -> None:
        """``commands``: reload commands (argv lists) instead of signalling the pids in the folder; ``announce`` tells
        the other hub replicas that the logins changed (``ChangeFeed.announce``)."""
        try:
            self.hub_username = validate_hub_identity(hub_username)
        except InputError as exc:
            raise ConfigError(f"{exc} Pass such a --broker-username with --nats-config-dir.") from exc
        if len(commands) > MAX_RELOAD_COMMANDS:
            raise InputError(f"{len(commands)} --nats-reload-command options are more than {MAX_RELOAD_COMMANDS}; "
                             "run one script that reloads every node.")  # fmt: skip
        self.folder = Path(folder)
        self._check_folder()
        self.users_file = self.folder / USERS_FILE
        self.commands = [tuple(argv) for argv in commands]
        self.announce = announce
        self._lock = threading.Lock()
        self._left_out: frozenset[str] = frozenset()
        self._logins: dict[str, str] = {}  # device -> bcrypt hash, as last rendered (the auth callout reads it)
        self._synced = False  # written and reloaded once since start
        self.auth_callout = self._callout()
        self._hub_hash = self._existing().get(self.hub_username) or (
            hash_password_bcrypt(hub_password) if hub_password else None)  # fmt: skip
        if self._hub_hash is None:
            raise ConfigError(
                f"{self.users_file} has no line for the hub user {self.hub_username!r}; write the folder with "
                "'edgeship hub broker-config --engine nats -o DIR' first or pass --broker-password."
            )

    def logins(self) -> dict[str, str]:
        """Every device that may log in and its bcrypt hash, as ``users.conf`` last said (the auth callout's
        source, ``nats_callout.LoginDecider``): the file and the callout never disagree."""
        return self._logins

    def _callout(self) -> str | None:
        """The auth callout's issuer if ``users.conf`` declares one (kept on every rewrite). Its ``auth_users`` can
        change only with a node restart, so this hub's user must already be among them."""
        if not self.users_file.is_file():
            return None
        declared = parse_auth_callout(self.users_file.read_text(encoding="utf-8"))
        if declared is None:
            return None
        issuer, hubs = declared
        if self.hub_username not in hubs:
            raise ConfigError(
                f"{self.users_file} sends logins to an auth callout whose hub users are {', '.join(hubs)}, not "
                f"{self.hub_username!r}; write the folder again with 'edgeship hub broker-config --engine nats "
                "--auth-callout' naming this hub with --hub-username, and restart the nodes (NATS cannot reload that)."
            )
        return issuer

    # what the hub calls ----------------------------------------------------------------------------------------
    def start(self, read_state: Callable[[], BrokerState]) -> str:
        """At hub start: write and reload whatever the folder holds (a node may have started from an older file).
        Raises :class:`ConfigError`: a hub that cannot keep the logins current does not start."""
        self._sync(read_state, only_if_changed=False)
        return "reloaded"

    def apply(self, read_state: Callable[[], BrokerState]) -> str:
        """After a credential change made here: write, reload every node, tell the other replicas.

        ``"reloaded"``; a node that cannot be reloaded raises :class:`ConfigError` after the file is written
        (the change is stored; ``DeviceCredentials`` logs it and answers ``failed: ...``)."""
        try:
            self._sync(read_state, only_if_changed=False)
        finally:
            if self.announce is not None:
                self.announce(CHANGE_TOPIC)
        return "reloaded"

    def refresh(self, read_state: Callable[[], BrokerState]) -> None:
        """On another replica's change notice: write and reload only if ``users.conf`` would change; a failure is
        logged (this runs on the change feed's thread, nobody waits for it)."""
        try:
            if self._sync(read_state, only_if_changed=True):
                log.info("NATS users rewritten and nodes reloaded after another replica's change")
        except EdgeshipError as exc:
            log.warning("NATS users not brought up to date after another replica's change: %s", exc)

    # internals --------------------------------------------------------------------------------------------------
    def _sync(self, read_state: Callable[[], BrokerState], *, only_if_changed: bool) -> bool:
        """Render from the store under both locks; write and reload (unless unchanged and ``only_if_changed``).

        With the auth callout the reload follows the logins this replica decides from, not the file: a replica
        that learns of a removed login from another's notice reloads too, though the shared file is already
        written, since the nodes may have asked it, still unaware, during the first replica's reload."""
        self._check_folder()
        with self._lock, self._folder_lock():
            existing, before = self._existing(), self._logins
            text = self._render(read_state(), existing)
            current = self.users_file.read_text(encoding="utf-8") if self.users_file.is_file() else None
            changed = text != current or not only_if_changed
            if changed:
                try:
                    atomic_write_text(self.users_file, text, mode=0o600)
                except OSError as exc:
                    raise ConfigError(f"Cannot write {self.users_file} ({exc.strerror}); run the hub as a user that "
                                      "may write the NATS config folder.") from exc  # fmt: skip
            reload = self._must_reload(before) if self.auth_callout is not None else changed
            if reload:
                self._reload()
            self._synced = True
        return changed or reload

    def _must_reload(self, before: dict[str, str]) -> bool:
        """With the auth callout the nodes ask the hubs, who already know a new login: a reload is needed only to
        cut live connections whose login was removed or changed (on a reload every node asks again about every
        connection: 13.6 s and ~14 CPU-seconds for 2,000 connections here, ADR 0051), and at start (a node may
        hold connections from before)."""
        if not self._synced:
            return True
        return any(self._logins.get(name) != hashed for name, hashed in before.items())

    def _check_folder(self) -> None:
        if not self.folder.is_dir():
            raise ConfigError(f"The NATS config folder {self.folder} does not exist; write it with 'edgeship hub "
                              "broker-config --engine nats -o DIR' and pass that DIR.")  # fmt: skip

    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[None]:
        """An exclusive ``flock`` on ``DIR/.users.lock``: replicas on one host sharing the folder take turns."""
        try:
            handle = (self.folder / ".users.lock").open("a")
        except OSError as exc:
            raise ConfigError(f"Cannot write in the NATS config folder {self.folder} ({exc.strerror}); run the hub "
                              "as a user that may write it.") from exc  # fmt: skip
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _existing(self) -> dict[str, str]:
        if not self.users_file.is_file():
            return {}
        try:
            return parse_users(self.users_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"Cannot read {self.users_file} ({exc.strerror}); run the hub as a user that may read "
                              "and write the NATS config folder.") from exc  # fmt: skip

    def _render(self, state: BrokerState, existing: dict[str, str]) -> str:
        assert self._hub_hash is not None
        hubs = {self.hub_username: self._hub_hash, **{n: h for n, h in existing.items() if is_hub_identity(n)}}
        users = [NatsUser(name, hashed) for name, hashed in sorted(hubs.items())]
        reserved = sorted(d for d in set(state.device_ids) if is_hub_identity(d))
        if reserved:
            log.error("devices %s carry a name reserved for the hub (%s) and get no broker login; delete them and "
                      "create them under other ids", ", ".join(reserved), RESERVED_NAMES)  # fmt: skip
        left_out = []
        for device_id in sorted(set(state.device_ids) - set(reserved)):
            hashed = state.bcrypt_hashes.get(device_id)
            if hashed is None and device_id in state.operator_hashed:
                hashed = existing.get(device_id)  # the operator's --device-passwords line, kept
            try:
                if hashed is None:
                    raise InputError("no bcrypt hash")
                users.append(NatsUser(device_id, hashed))
            except InputError:
                left_out.append(device_id)
        if frozenset(left_out) != self._left_out:
            self._left_out = frozenset(left_out)
            if left_out:
                log.warning("%d device(s) get no NATS login (a certificate, no credential, or a password issued "
                            "before the hub kept bcrypt hashes): %s; give each a new password with 'edgeship device "
                            "rotate-credentials ID'", len(left_out), ", ".join(left_out[:20]))  # fmt: skip
        self._logins = {user.username: user.password_hash for user in users if not user.is_hub}
        return render_users(users, self.auth_callout)

    def _reload(self) -> None:
        failed = self._run_commands() if self.commands else self._signal_nodes()
        if failed:
            raise ConfigError(
                f"{self.users_file} is written but NATS did not reload on {'; '.join(failed)}; start the node(s) or "
                "run 'nats-server --signal reload=<pid>' on each (the logins change only after a reload)."
            )

    def _signal_nodes(self) -> list[str]:
        """SIGHUP to every node whose ``<node>.pid`` is in the folder; the nodes that could not be signalled."""
        configs = sorted(p for p in self.folder.glob("*.conf") if p.name != USERS_FILE)
        pid_files = [(c.stem, c.with_suffix(PID_SUFFIX)) for c in configs if c.with_suffix(PID_SUFFIX).exists()]
        if not pid_files:
            raise ConfigError(
                f"No NATS node runs from {self.folder} on this host (no <node>{PID_SUFFIX} beside "
                f"{', '.join(c.name for c in configs) or 'any <node>.conf'}); start the nodes from the configs "
                "'edgeship hub broker-config --engine nats' wrote, or give --nats-reload-command for nodes elsewhere."
            )
        failed = []
        for node, pid_file in pid_files:
            try:
                pid = int(pid_file.read_text(encoding="ascii").strip())
                if not _is_nats_server(pid):
                    failed.append(f"node {node} (pid {pid} in {pid_file.name} is no running nats-server)")
                    continue
                os.kill(pid, signal.SIGHUP)
            except (OSError, ValueError) as exc:
                failed.append(f"node {node} ({getattr(exc, 'strerror', None) or exc})")
                continue
            log.info("reloaded NATS node %s (SIGHUP to pid %d)", node, pid)
        return failed

    def _run_commands(self) -> list[str]:
        failed = []
        env = {**os.environ, "EDGESHIP_NATS_USERS": str(self.users_file.resolve())}
        for argv in self.commands:
            shown = shlex.join(argv)
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=RELOAD_TIMEOUT, env=env,
                                      check=False)  # fmt: skip
            except subprocess.TimeoutExpired:
                failed.append(f"'{shown}' (still running after {RELOAD_TIMEOUT:g} s; stopped)")
                continue
            except OSError as exc:
                failed.append(f"'{shown}' ({exc.strerror})")
                continue
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
                failed.append(f"'{shown}' (exit status {done.returncode}: {last})")
            else:
                log.info("ran the NATS reload command %s", shown)
        return failed


def _is_nats_server(pid: int) -> bool:
    """Whether ``pid`` is a running ``nats-server`` (``/proc/<pid>/comm``; without ``/proc``, whether it runs):
    a stale pid file must not make the hub send SIGHUP, which ends most programs, to whatever took the pid."""
    comm = Path(f"/proc/{pid}/comm")
    if Path("/proc/self/comm").exists():
        try:
            return comm.read_text(encoding="utf-8", errors="replace").strip().startswith("nats-server")
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
