"""The agent's configuration file (``agent.toml``) as one frozen :class:`AgentConfig`.

Read once at start; every problem is one :class:`~edgeship.errors.ConfigError` that
names the file and the key. Relative paths are taken relative to the file's folder,
so a provisioning bundle (config, trust root, certificates) can move as a whole.

::

    device_id = "dev-1"
    hub_url = "http://hub.local:8800"          # serves /blobs/sha256:<hex>
    trust_root = "trust-root.json"             # written by 'edgeship keys trust-root'
    data_dir = "/var/lib/edgeship-agent"
    runtime = "process"                        # process | docker | auto
    telemetry_interval = 30                    # seconds
    telemetry_resend_after = 30                # seconds before an unconfirmed batch is sent again (ADR 0049)
    port_range = [5100, 5199]                  # ports for modules without settings.port
    health_timeout = 60                        # seconds
    min_free_bytes = 268435456                 # bytes an update must leave free on the data disk
    max_partial_bytes = 1073741824             # bytes of interrupted downloads kept for resuming
    part_cache_bytes = 4294967296              # bytes of module parts kept for reuse (schemaVersion 2)
    download_min_rate = 1024                   # bytes per second, over each download_rate_window
    download_rate_window = 30                  # seconds
    download_deadline = 300                    # seconds per download, plus its size / download_min_rate

    [broker]
    url = "mqtts://hub.local:8883"             # or a cluster's nodes, tried in turn:
                                               # url = ["mqtts://b1:8883", "mqtts://b2:8883", "mqtts://b3:8883"]
    username = "dev-1"
    password_file = "broker-password"          # or password = "..."
    ca_file = "hub-ca.pem"
    protocol = "3.1.1"                         # or "5"
    subscribe_qos = 1                          # 0 on a NATS cluster: no JetStream consumer per subscription (ADR 0050)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from edgeship.errors import ConfigError
from edgeship.mqtt.settings import BrokerSettings, parse_broker_url
from edgeship.records import field, record

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 devices install tomli with the agent extra
    import tomli as tomllib

__all__ = ["AgentConfig", "BrokerConfig", "RuntimeKind", "example_config", "load_config"]

RuntimeKind = Literal["process", "docker", "auto"]
_TOP_KEYS = {
    "device_id", "hub_url", "trust_root", "data_dir", "runtime", "telemetry_interval", "telemetry_resend_after",
    "port_range",
    "health_timeout", "reconcile_interval", "telemetry_queue_limit", "broker", "min_free_bytes",
    "max_partial_bytes", "part_cache_bytes", "download_min_rate", "download_rate_window", "download_deadline",
}  # fmt: skip
_BROKER_KEYS = {
    "url", "username", "password", "password_file", "ca_file", "cert_file", "key_file", "protocol", "subscribe_qos",
}  # fmt: skip


@record
class BrokerConfig:
    """The ``[broker]`` table; ``settings()`` checks files and the URL (``edgeship.mqtt``)."""

    url: str  # the first (or only) broker address
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: str = "3.1.1"
    more_urls: tuple[str, ...] = ()  # further addresses of the same broker cluster, in the order to try them
    subscribe_qos: int = 1  # of the agent's trust-root, desired and commands subscriptions (ADR 0050)

    def settings(self) -> BrokerSettings:
        return self._settings(self.url)

    def all_settings(self) -> list[BrokerSettings]:
        """Every broker address, the first first; they share the login and TLS files (ADR 0039)."""
        return [self._settings(url) for url in (self.url, *self.more_urls)]

    def _settings(self, url: str) -> BrokerSettings:
        return parse_broker_url(
            url,
            username=self.username,
            password=self.password,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            protocol=self.protocol,
        )


@record
class AgentConfig:
    device_id: str
    broker: BrokerConfig
    hub_url: str  # base URL for hub-relative blob locations ("/blobs/sha256:...")
    trust_root: Path
    data_dir: Path
    runtime: RuntimeKind = "process"
    telemetry_interval: float = 30.0  # seconds between telemetry samples
    telemetry_resend_after: float = 30.0  # seconds before a batch the hub has not confirmed is sent again
    port_range: tuple[int, int] = (5100, 5199)  # inclusive; for modules without settings.port
    health_timeout: float = 60.0  # seconds a candidate has to answer its health probe
    reconcile_interval: float = 5.0  # seconds between reconcile ticks (restarts, cool-off retries)
    telemetry_queue_limit: int = 10_000  # samples kept on disk while offline; older ones are dropped
    min_free_bytes: int = 256 * 2**20  # bytes an update must leave free on the data disk, or it is refused
    max_partial_bytes: int = 2**30  # bytes of interrupted downloads kept for resuming; the oldest go first
    part_cache_bytes: int = 4 * 2**30  # bytes of module parts kept for reuse; parts no module needs go first
    download_min_rate: float = 1024.0  # bytes per second a download must keep up over each window
    download_rate_window: float = 30.0  # seconds; also the longest one read or connect may wait
    download_deadline: float = 300.0  # seconds per download, plus its signed size / download_min_rate

    @property
    def broker_settings(self) -> BrokerSettings:
        return self.broker.settings()

    @property
    def broker_addresses(self) -> list[BrokerSettings]:
        """All of ``[broker] url`` (one address or a list): the agent fails over between them."""
        return self.broker.all_settings()


def _fail(path: Path, key: str, what: str) -> ConfigError:
    return ConfigError(f"{path}: {key} {what}.")


def _string(table: dict[str, Any], key: str, path: Path, prefix: str = "", required: bool = False) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise _fail(path, prefix + key, "is missing; add it")
        return None
    if not isinstance(value, str) or not value:
        raise _fail(path, prefix + key, f"must be a non-empty string, not {value!r}")
    return value


def _number(table: dict[str, Any], key: str, path: Path, default: float, unit: str = "seconds") -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _fail(path, key, f"must be a positive number of {unit}, not {value!r}")
    return float(value)


def _bytes(table: dict[str, Any], key: str, path: Path, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(path, key, f"must be a whole number of bytes (0 or more), not {value!r}")
    return value


def _path(base: Path, value: str | None) -> Path | None:
    return None if value is None else (base / Path(value).expanduser()).resolve()


def _check_keys(table: dict[str, Any], allowed: set[str], path: Path, prefix: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(path, prefix + unknown[0], f"is not a known key (known: {', '.join(sorted(allowed))})")


def load_config(path: Path) -> AgentConfig:
    """Read and check ``agent.toml``; raise ConfigError naming the file and the first bad key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"Agent config {path} does not exist; write one (see docs/agent.md).") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Agent config {path} could not be read: {exc}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from exc
    return config_from_dict(data, path)


def _urls(broker: dict[str, Any], path: Path) -> list[str]:
    """``url``: one broker URL, or a non-empty list of them (a cluster's nodes, at most 16, no repeats)."""
    value = broker.get("url")
    if isinstance(value, str):
        return [value]
    if value is None:
        raise _fail(path, "broker.url", "is missing; give the broker's URL, or a list of a cluster's node URLs")
    if (not isinstance(value, list) or not value or len(value) > 16 or not all(isinstance(u, str) for u in value)
            or len(set(value)) != len(value)):  # fmt: skip
        raise _fail(path, "broker.url", f"must be a URL or a list of 1-16 different URLs, not {value!r}")
    return list(value)


def config_from_dict(data: dict[str, Any], path: Path) -> AgentConfig:
    base = path.parent.resolve()
    _check_keys(data, _TOP_KEYS, path, "")
    broker = data.get("broker")
    if not isinstance(broker, dict):
        raise _fail(path, "[broker]", "is missing; add a [broker] table with at least url")
    _check_keys(broker, _BROKER_KEYS, path, "broker.")
    password = _string(broker, "password", path, "broker.")
    password_file = _path(base, _string(broker, "password_file", path, "broker."))
    if password is not None and password_file is not None:
        raise _fail(path, "broker.password_file", "cannot be given together with broker.password; keep one")
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _fail(path, "broker.password_file", f"cannot be read ({exc})") from exc
    protocol = broker.get("protocol", "3.1.1")
    if protocol not in ("3.1.1", "5"):
        raise _fail(path, "broker.protocol", f"must be \"3.1.1\" or \"5\", not {protocol!r}")
    subscribe_qos = broker.get("subscribe_qos", 1)
    if subscribe_qos not in (0, 1) or isinstance(subscribe_qos, bool):
        raise _fail(path, "broker.subscribe_qos", f"must be 0 or 1, not {subscribe_qos!r}")
    urls = _urls(broker, path)
    broker_config = BrokerConfig(
        url=urls[0],
        more_urls=tuple(urls[1:]),
        username=_string(broker, "username", path, "broker."),
        password=password,
        ca_file=_path(base, _string(broker, "ca_file", path, "broker.")),
        cert_file=_path(base, _string(broker, "cert_file", path, "broker.")),
        key_file=_path(base, _string(broker, "key_file", path, "broker.")),
        protocol=protocol,
        subscribe_qos=subscribe_qos,
    )
    try:
        addresses = broker_config.all_settings()
    except ConfigError as exc:
        raise ConfigError(f"{path}: [broker]: {exc}") from exc
    if len({address.tls for address in addresses}) > 1:
        raise _fail(path, "broker.url", "mixes mqtt:// and mqtts:// addresses; the nodes of one cluster share one "
                    "scheme (the login and CA are the same for all)")
    device_id = str(_string(data, "device_id", path, required=True))
    from edgeship.mqtt.topics import device_topic

    try:
        device_topic(device_id, "desired")
    except ValueError as exc:
        raise _fail(path, "device_id", f"is not usable: {exc}") from exc
    hub_url = str(_string(data, "hub_url", path, required=True))
    if not hub_url.startswith(("http://", "https://")):
        raise _fail(path, "hub_url", f"must be an http(s) URL, not {hub_url!r}")
    runtime = data.get("runtime", "process")
    if runtime not in ("process", "docker", "auto"):
        raise _fail(path, "runtime", f"must be \"process\", \"docker\" or \"auto\", not {runtime!r}")
    ports = data.get("port_range", [5100, 5199])
    if (
        not isinstance(ports, list)
        or len(ports) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports)
        or ports[0] > ports[1]
    ):
        raise _fail(path, "port_range", f"must be [first, last] TCP ports with first <= last, not {ports!r}")
    limit = data.get("telemetry_queue_limit", 10_000)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _fail(path, "telemetry_queue_limit", f"must be a positive whole number, not {limit!r}")
    resend_after = _number(data, "telemetry_resend_after", path, 30.0)
    if resend_after > 900:
        raise _fail(path, "telemetry_resend_after", f"must be at most 900 seconds, not {resend_after:g}")
    return AgentConfig(
        device_id=device_id,
        broker=broker_config,
        hub_url=hub_url.rstrip("/"),
        trust_root=_path(base, str(_string(data, "trust_root", path, required=True))),  # type: ignore[arg-type]
        data_dir=_path(base, str(_string(data, "data_dir", path, required=True))),  # type: ignore[arg-type]
        runtime=runtime,
        telemetry_interval=_number(data, "telemetry_interval", path, 30.0),
        telemetry_resend_after=resend_after,
        port_range=(ports[0], ports[1]),
        health_timeout=_number(data, "health_timeout", path, 60.0),
        reconcile_interval=_number(data, "reconcile_interval", path, 5.0),
        telemetry_queue_limit=limit,
        min_free_bytes=_bytes(data, "min_free_bytes", path, 256 * 2**20),
        max_partial_bytes=_bytes(data, "max_partial_bytes", path, 2**30),
        part_cache_bytes=_bytes(data, "part_cache_bytes", path, 4 * 2**30),
        download_min_rate=_number(data, "download_min_rate", path, 1024.0, "bytes per second"),
        download_rate_window=_number(data, "download_rate_window", path, 30.0),
        download_deadline=_number(data, "download_deadline", path, 300.0),
    )


def example_config(device_id: str = "dev-1") -> str:
    """A commented ``agent.toml`` to start from (``edgeship agent init-config``)."""
    return f'''# edgeship agent configuration (docs/agent.md)
device_id = "{device_id}"
hub_url = "http://127.0.0.1:8800"     # serves /blobs/sha256:<hex>
trust_root = "trust-root.json"        # 'edgeship keys trust-root' writes it
data_dir = "agent-data"               # state, blob cache, module runtimes, telemetry queue
runtime = "process"                   # process | docker | auto
telemetry_interval = 30               # seconds
telemetry_resend_after = 30           # seconds before a batch the hub has not confirmed is sent again
port_range = [5100, 5199]             # module ports when a document gives none
health_timeout = 60                   # seconds for a new module to become healthy
min_free_bytes = 268435456            # bytes an update must leave free on the data disk (256 MiB)
max_partial_bytes = 1073741824        # bytes of interrupted downloads kept for resuming (1 GiB)
part_cache_bytes = 4294967296         # bytes of module parts (wheels, model chunks, layers) kept for reuse (4 GiB)
download_min_rate = 1024              # bytes per second a download must keep up...
download_rate_window = 30             # ...over every window of this many seconds
download_deadline = 300               # seconds per download, plus its size / download_min_rate

[broker]
url = "mqtt://127.0.0.1:1883"        # or a cluster's nodes: ["mqtt://b1:1883", "mqtt://b2:1883", "mqtt://b3:1883"]
# username = "{device_id}"
# password_file = "broker-password"
# ca_file = "hub-ca.pem"               # with mqtts://
protocol = "3.1.1"
'''
