"""Where the broker is and how to log in: ``mqtt://user:pass@host:1883`` or ``mqtts://host:8883``.

Credentials may come in the URL (percent-encoded) or separately (the agent's config
keeps the password out of the URL). ``mqtts`` turns TLS on; a CA file pins the
broker's certificate authority (the hub CA of ``docs/mqtt.md``), and a client
certificate/key pair logs in by certificate instead of by password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from edgeship.errors import ConfigError
from edgeship.records import record, replace

__all__ = ["DEFAULT_PORTS", "BrokerSettings", "parse_broker_url"]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
Protocol = Literal["3.1.1", "5"]


@record
class BrokerSettings:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: Protocol = "3.1.1"
    keepalive: int = 30  # seconds; the broker declares a silent client dead after 1.5x this

    @property
    def url(self) -> str:
        """The URL without credentials (safe to log and to show)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def with_credentials(self, username: str | None, password: str | None) -> BrokerSettings:
        return replace(self, username=username or self.username, password=password or self.password)


def parse_broker_url(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    protocol: str = "3.1.1",
) -> BrokerSettings:
    """Parse a broker URL; explicit arguments win over credentials in the URL."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"Broker {url!r} is not a URL; write it as mqtt://host:1883 or mqtts://host:8883.")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"Broker URL scheme {parts.scheme!r} is not supported; use mqtt:// or mqtts://.")
    if not parts.hostname:
        raise ConfigError(f"Broker URL {url!r} names no host; write it as {scheme}://host:port.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"Broker URL {url!r} has a path or query; give only {scheme}://host:port.")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ConfigError(f"Broker URL {url!r} has an invalid port; give a number between 1 and 65535.") from exc
    if protocol not in ("3.1.1", "5"):
        raise ConfigError(f"MQTT protocol {protocol!r} is not supported; use 3.1.1 or 5.")
    if (cert_file is None) != (key_file is None):
        raise ConfigError("Give both a client certificate and its key, or neither.")
    paths: dict[str, Path | None] = {}
    for what, value in (("CA file", ca_file), ("client certificate", cert_file), ("client key", key_file)):
        path = Path(value) if value is not None else None
        if path is not None and not path.is_file():
            raise ConfigError(f"The broker {what} {str(path)!r} does not exist; check the path.")
        paths[what] = path
    if not scheme == "mqtts" and any(paths.values()):
        raise ConfigError("Certificates need TLS; write the broker URL as mqtts://host:port.")
    return BrokerSettings(
        host=parts.hostname,
        port=port,
        tls=scheme == "mqtts",
        username=username if username is not None else (unquote(parts.username) if parts.username else None),
        password=password if password is not None else (unquote(parts.password) if parts.password else None),
        ca_file=paths["CA file"],
        cert_file=paths["client certificate"],
        key_file=paths["client key"],
        protocol=protocol,  # type: ignore[arg-type]  # checked above
    )
