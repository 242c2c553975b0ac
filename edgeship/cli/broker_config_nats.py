"""``edgeship hub broker-config --engine nats``: a NATS cluster's node configs and users for the hub's devices.

Thin: rendering lives in :mod:`edgeship.hub.broker.nats`. NATS checks bcrypt password
hashes only, while the hub's store keeps Mosquitto's ``$7$`` hashes of the device
passwords it issued, so device hashes come from ``--device-passwords`` (``id:$2b$...``
lines, ``htpasswd -bnBC 6 "" PASSWORD``); a ``$7$`` hash in the store cannot be turned
into one and its device is left out, named in the output (``docs/scale.md``). The hub
users get a bcrypt hash of ``--hub-password-file``.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgeship.cli._common import console
from edgeship.errors import InputError

__all__ = ["parse_bcrypt_lines", "parse_node", "write_nats"]

_NODE = re.compile(r"^(?P<name>[A-Za-z0-9_-]{1,64})=(?P<host>[^:,=\s]+)(?::(?P<ports>\d+,\d+,\d+,\d+))?$")
DEFAULT_PORTS = (4222, 6222, 1883, 8222)  # client, cluster, MQTT, monitoring: each node on its own host


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
               device_hashes: dict[str, str]) -> None:  # fmt: skip
    """Write the node configs and ``users.conf``; say which devices were left out and why."""
    from edgeship.hub.broker.nats import NatsNode, NatsUser, hash_password_bcrypt, write_nats_config
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
    unusable: list[str] = []
    for device_id in sorted(set(device_ids)):
        hashed = device_hashes.get(device_id)
        if hashed is not None and hashed.startswith(("$2a$", "$2b$", "$2y$")):
            users.append(NatsUser(device_id, hashed))
        else:
            unusable.append(device_id)
    files = write_nats_config(out, cluster, users)
    console.print(f"Wrote {', '.join(p.name for p in files.configs.values())} and {files.users_file.name} in {out} "
                  f"for {len(users) - len(hub_names)} devices and the hub user(s) {', '.join(hub_names)}.",
                  highlight=False)  # fmt: skip
    if unusable:
        console.print(f"Left out {len(unusable)} device(s) without a bcrypt password hash (NATS checks no other "
                      f"format): {', '.join(unusable[:20])}{' ...' if len(unusable) > 20 else ''}; give their "
                      "hashes with --device-passwords (id:$2b$... lines).", highlight=False)  # fmt: skip
    console.print("Start each node with: nats-server -c OUT/<node>.conf; reload after a change with: "
                  "nats-server --signal reload=<pid>", highlight=False)  # fmt: skip
