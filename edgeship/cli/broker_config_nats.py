"""``edgeship hub broker-config --engine nats``: a NATS cluster's node configs and users for the hub's devices.

Thin: rendering lives in :mod:`edgeship.hub.broker.nats`. NATS checks bcrypt password
hashes only. The hub stores one beside Mosquitto's ``$7$`` hash for every device
password it issues or rotates (store revision 0008), so those devices need no file. A
password issued before that has only a ``$7$`` hash, which cannot be turned into a
bcrypt one: its device is left out and named, to be rotated
(``edgeship device rotate-credentials ID``) or given in ``--device-passwords``
(``id:$2b$...`` lines, ``htpasswd -bnBC 6 "" PASSWORD``), which overrides the store per
device (``docs/scale.md``). The hub users get a bcrypt hash of ``--hub-password-file``:
their password is the operator's, not one the hub issues. A hub serving with
``--nats-config-dir OUT`` keeps ``OUT/users.conf`` current from then on
(``edgeship.hub.broker.nats_reload``, ADR 0045); this command writes the node configs and the
first ``users.conf``. With ``--tls-host`` it also issues one server certificate from the hub CA
(``--ca-dir``) naming those hosts and every node's, and every node serves MQTT, NATS clients and
its routes over TLS only (ADR 0048).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgeship.cli._common import console
from edgeship.errors import InputError

if TYPE_CHECKING:
    from edgeship.hub.broker.nats import NatsTls
    from edgeship.hub.store import CredentialRecord

__all__ = ["DeviceHashes", "parse_bcrypt_lines", "parse_node", "write_nats"]

_NODE = re.compile(r"^(?P<name>[A-Za-z0-9_-]{1,64})=(?P<host>[^:,=\s]+)(?::(?P<ports>\d+,\d+,\d+,\d+))?$")
DEFAULT_PORTS = (4222, 6222, 1883, 8222)  # client, cluster, MQTT, monitoring: each node on its own host


@dataclass(frozen=True)
class DeviceHashes:
    """Each device's bcrypt hash: from ``--device-passwords`` (``supplied``, wins) or the hub's store."""

    stored: dict[str, str] = field(default_factory=dict, repr=False)  # passwords the hub issued (revision 0008 on)
    supplied: dict[str, str] = field(default_factory=dict, repr=False)
    issued_before: frozenset[str] = frozenset()  # active password with only a $7$ hash: rotate to get a bcrypt one

    @classmethod
    def from_store(cls, active: Mapping[str, CredentialRecord], supplied: dict[str, str]) -> DeviceHashes:
        """From ``CredentialStore.active()``: the bcrypt hash of each active password, and those that lack one."""
        records = [r for r in active.values() if r.kind == "password"]
        return cls({r.device_id: r.bcrypt_hash for r in records if r.bcrypt_hash}, supplied,
                   frozenset(r.device_id for r in records if not r.bcrypt_hash))  # fmt: skip

    def get(self, device_id: str) -> str | None:
        return self.supplied.get(device_id) or self.stored.get(device_id)


def parse_node(text: str) -> object:
    """``NAME=HOST`` (default ports) or ``NAME=HOST:CLIENT,CLUSTER,MQTT,HTTP`` as a ``NatsNode``."""
    from edgeship.hub.broker.nats import NatsNode

    match = _NODE.fullmatch(text.strip())
    if match is None:
        raise InputError(f"--nats-node {text!r} is not NAME=HOST or NAME=HOST:CLIENT,CLUSTER,MQTT,HTTP (four port "
                         "numbers); e.g. n1=10.0.0.1 or n1=127.0.0.1:4222,6222,1883,8222.")  # fmt: skip
    ports = tuple(int(p) for p in match["ports"].split(",")) if match["ports"] else DEFAULT_PORTS
    if not all(0 < port < 65536 for port in ports):
        raise InputError(f"--nats-node {text!r} has a port outside 1-65535; give four valid port numbers.")
    client, cluster, mqtt, http = ports
    return NatsNode(match["name"], client, cluster, mqtt, http, host=match["host"])


def parse_bcrypt_lines(text: str) -> dict[str, str]:
    """``id -> bcrypt hash`` from ``id:$2b$...`` lines (``#`` comments and blank lines skipped)."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise InputError(f"Device password line {number} is not 'id:$2b$...' (a bcrypt hash, which NATS needs); "
                             "make one with htpasswd -bnBC 6 \"\" PASSWORD.")  # fmt: skip
        if name in entries:
            raise InputError(f"Device password file names {name!r} twice (line {number}); keep one line per device.")
        entries[name] = hashed
    return entries


def write_nats(out: Path, nodes: list[str], device_ids: list[str], hub_names: list[str], hub_password: str,
               hashes: DeviceHashes, *, tls_hosts: Sequence[str] = (), ca_dir: Path | None = None,
               auth_callout: bool = False) -> None:  # fmt: skip
    """Write the node configs and ``users.conf`` (and with ``ca_dir`` the TLS files); say which devices were left
    out, why, and what to do."""
    from edgeship.hub.broker.nats import NatsNode, NatsSettings, NatsUser, hash_password_bcrypt, write_nats_config
    from edgeship.mqtt.identity import is_hub_identity

    if len(nodes) < 3:
        raise InputError(f"A NATS cluster needs at least 3 nodes (got {len(nodes)}); give --nats-node three times.")
    cluster = [node for node in (parse_node(text) for text in nodes) if isinstance(node, NatsNode)]
    reserved = [device_id for device_id in device_ids if is_hub_identity(device_id)]
    if reserved:
        raise InputError(f"Device(s) {', '.join(reserved)} carry a name reserved for the hub's broker identities "
                         "and would log in with the hub's rights; delete them and create them under other ids.")
    hub_hash = hash_password_bcrypt(hub_password)
    users = [NatsUser(name, hub_hash) for name in hub_names]
    to_rotate: list[str] = []
    without: list[str] = []
    for device_id in sorted(set(device_ids)):
        hashed = hashes.get(device_id)
        if hashed is not None:
            users.append(NatsUser(device_id, hashed))  # refuses anything but bcrypt
        else:
            (to_rotate if device_id in hashes.issued_before else without).append(device_id)
    tls = _issue_tls(out, ca_dir, [*tls_hosts, *(node.host for node in cluster)]) if ca_dir is not None else None
    issuer = None
    if auth_callout:
        from edgeship.hub.broker.nats_callout import make_issuer

        out.mkdir(parents=True, exist_ok=True)
        issuer = make_issuer(out).public_key  # kept across reruns: the nodes know only this public key
    files = write_nats_config(out, cluster, users, NatsSettings(tls=tls, auth_callout=issuer))
    devices = [user.username for user in users[len(hub_names):]]
    supplied = sum(1 for device_id in devices if device_id in hashes.supplied)
    console.print(f"Wrote {', '.join(p.name for p in files.configs.values())} and {files.users_file.name} in {out} "
                  f"for {len(devices)} devices ({len(devices) - supplied} with the password the hub issued, "
                  f"{supplied} from --device-passwords) and the hub user(s) {', '.join(hub_names)}.",
                  highlight=False)  # fmt: skip
    if to_rotate:
        console.print(f"Left out {len(to_rotate)} device(s) whose password the hub issued before it kept bcrypt "
                      f"hashes (NATS checks no other format): {_names(to_rotate)}; rotate each with 'edgeship device "
                      "rotate-credentials ID' and run this again, or give their hashes with --device-passwords.",
                      highlight=False)  # fmt: skip
    if without:
        console.print(f"Left out {len(without)} device(s) without a password hash (a certificate or no credentials; "
                      f"NATS logins here are by password): {_names(without)}; give their hashes with "
                      "--device-passwords (id:$2b$... lines).", highlight=False)  # fmt: skip
    if tls is not None:
        console.print(f"TLS only on every node's MQTT, client and route ports with {tls.cert_file.name} (from the hub "
                      f"CA in {ca_dir}); give devices and hubs {tls.ca_file} and use mqtts:// and tls:// addresses.",
                      highlight=False)  # fmt: skip
    if issuer is not None:
        console.print(f"Device logins go to the hub replicas (auth callout, issuer {issuer}); the key that signs "
                      f"their answers is {out / 'auth-callout.nk'}: keep it on the hub hosts only, never on a node.",
                      highlight=False)  # fmt: skip
    console.print("Start each node with: nats-server -c OUT/<node>.conf (it writes OUT/<node>.pid); keep the logins "
                  "current with: edgeship hub serve ... --nats-config-dir OUT (it rewrites users.conf and reloads the "
                  "nodes after every device change)", highlight=False)  # fmt: skip


def _issue_tls(out: Path, ca_dir: Path, hosts: list[str]) -> NatsTls:
    """Load or create the hub CA, issue one certificate for every node's host (and the given names) into ``out``:
    ``ca.pem``, ``server.crt``, ``server.key`` (0600), the names Mosquitto's TLS listener uses."""
    from edgeship.hub.broker.ca import open_ca, write_server_files
    from edgeship.hub.broker.nats import NatsTls

    # routes verify each other's certificate: it must also authenticate a client
    files = write_server_files(out, open_ca(ca_dir), list(dict.fromkeys(hosts)), also_client=True)
    return NatsTls(cert_file=files.cert_file, key_file=files.key_file, ca_file=files.ca_file)


def _names(device_ids: list[str]) -> str:
    return ", ".join(device_ids[:20]) + (f" ... ({len(device_ids) - 20} more)" if len(device_ids) > 20 else "")
