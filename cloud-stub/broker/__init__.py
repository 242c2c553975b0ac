"""The embedded MQTT broker (amqtt) that lets ``edgeship hub serve --embedded-broker`` run on a laptop.

At fleet scale use Mosquitto or EMQX (``docs/mqtt.md``); amqtt speaks MQTT 3.1.1
only, so hub replicas cannot share subscriptions on it.

For Mosquitto, :mod:`.mosquitto` generates the security configuration (password
file, per-device ACL, TLS listener) and :mod:`.ca` the hub CA and its certificates.
"""

from __future__ import annotations

from edgeship.hub.broker.ca import CertificateAuthority, IssuedCertificate, open_ca
from edgeship.hub.broker.embedded import EmbeddedBroker
from edgeship.hub.broker.mosquitto import (
    BrokerFiles,
    BrokerUser,
    MosquittoSettings,
    TlsListener,
    fleet_users,
    hash_password,
    parse_password_file,
    verify_password,
    write_access_files,
    write_broker_config,
)

__all__ = [
    "BrokerFiles",
    "BrokerUser",
    "CertificateAuthority",
    "EmbeddedBroker",
    "IssuedCertificate",
    "MosquittoSettings",
    "TlsListener",
    "fleet_users",
    "hash_password",
    "open_ca",
    "parse_password_file",
    "verify_password",
    "write_access_files",
    "write_broker_config",
]
