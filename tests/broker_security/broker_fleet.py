"""The broker fixture's data: the password users and what a test gets back (``Fleet``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from secure_broker import SecureBroker

from edgeship.hub.broker import BrokerUser, MosquittoSettings, hash_password

PASSWORDS = {"hub": "hub-secret", "hub-2": "hub-2-secret", "dev-a": "pw-a", "dev-b": "pw-b"}  # hub-2: a 2nd hub process


@dataclass
class Fleet:
    broker: SecureBroker
    folder: Path
    settings: MosquittoSettings
    plain_url: str
    tls_url: str
    ca_file: Path
    certs: dict[str, tuple[Path, Path]]  # device id -> (cert, key)

    def users(self, passwords: dict[str, str]) -> list[BrokerUser]:
        return [BrokerUser(name, hash_password(pw)) for name, pw in passwords.items()] + [BrokerUser("dev-c")]
