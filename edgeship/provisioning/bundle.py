"""The provisioning bundle (what the operator sends) and how a device installs it.

A bundle is one compact JSON object (UTF-8, at most :data:`MAX_BUNDLE` bytes)::

    {"schemaVersion": 1, "device_id": "dev-1", "broker_url": "mqtts://hub.local:8883",
     "username": "dev-1", "password": "...", "ca_cert_pem": "-----BEGIN CERTIFICATE-----...",
     "client_cert_pem": null, "client_key_pem": null,
     "hub_url": "http://hub.local:8000", "trust_root": "<the trust-root DSSE envelope, as JSON text>"}

:func:`install_bundle` writes the agent's files beside ``agent.toml``: everything is
first written and fsynced in a scratch folder and checked with the agent's own
config loader; only then are the files renamed into place, ``agent.toml`` last, so
``agent.toml`` is the commit point and a failure before it leaves the folder as it
was. Private material (the broker password, the client key) is 0600.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeship.errors import BundleError, EdgeshipError
from edgeship.provisioning.protocol import MAX_BUNDLE

__all__ = ["BUNDLE_FILES", "InstalledFiles", "ProvisioningBundle", "install_bundle"]

BUNDLE_FILES = {
    "trust_root": "trust-root.json",
    "password": "broker-password",
    "ca": "hub-ca.pem",
    "cert": "client.crt",
    "key": "client.key",
}
"""File names written beside ``agent.toml`` (agent.toml refers to them by these relative paths)."""


def _pem(value: str | None, kind: str) -> str | None:
    if value is None:
        return None
    if f"-----BEGIN {kind}" not in value and not (kind == "PRIVATE KEY" and "PRIVATE KEY-----" in value):
        raise ValueError(f"must be PEM text starting with -----BEGIN {kind}")
    return value


class ProvisioningBundle(BaseModel):
    """Everything a device needs to join the fleet; validated when built and when received."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(1, alias="schemaVersion")
    device_id: str
    broker_url: str
    username: str | None = None
    password: str | None = Field(None, repr=False)
    ca_cert_pem: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = Field(None, repr=False)
    hub_url: str
    trust_root: str  # the trust-root DSSE envelope (JSON text), self-signed by its root keys

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        from edgeship.mqtt.topics import device_topic

        device_topic(value, "desired")  # ValueError with the rule
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        from edgeship.mqtt.settings import parse_broker_url

        try:
            settings = parse_broker_url(value)
        except EdgeshipError as exc:
            raise ValueError(str(exc)) from exc
        if settings.username or settings.password:
            raise ValueError("must not carry credentials; give the username and password separately")
        return value

    @field_validator("hub_url")
    @classmethod
    def _hub_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("trust_root")
    @classmethod
    def _trust_root(cls, value: str) -> str:
        from edgeship.signing import load_trust_root

        try:
            load_trust_root(value)
        except EdgeshipError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("ca_cert_pem", "client_cert_pem")
    @classmethod
    def _cert(cls, value: str | None) -> str | None:
        return _pem(value, "CERTIFICATE")

    @field_validator("client_key_pem")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return _pem(value, "PRIVATE KEY")

    @model_validator(mode="after")
    def _consistent(self) -> ProvisioningBundle:
        if (self.client_cert_pem is None) != (self.client_key_pem is None):
            raise ValueError("give both a client certificate and its key, or neither")
        tls = self.broker_url.lower().startswith("mqtts://")
        if not tls and (self.ca_cert_pem or self.client_cert_pem):
            raise ValueError("certificates need TLS; write the broker URL as mqtts://host:port")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        return self

    @classmethod
    def build(cls, **fields: Any) -> ProvisioningBundle:
        """Construct one, turning validation failures into a one-sentence :class:`BundleError`."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise BundleError(f"Provisioning bundle is invalid: {_first_error(exc)}.") from exc

    def to_bytes(self) -> bytes:
        data = json.dumps(self.model_dump(by_alias=True), sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(data) > MAX_BUNDLE:
            raise BundleError(
                f"The provisioning bundle is {len(data)} bytes, over the limit of {MAX_BUNDLE}; "
                "leave out what the device does not need (e.g. a long CA chain)."
            )
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> ProvisioningBundle:
        if len(data) > MAX_BUNDLE:
            raise BundleError(f"The provisioning bundle is {len(data)} bytes, over the limit of {MAX_BUNDLE}.")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"The provisioning bundle is not JSON ({exc}); send it again.") from exc
        if not isinstance(obj, dict):
            raise BundleError("The provisioning bundle must be a JSON object; send it again.")
        return cls.build(**obj)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ").rstrip(".")
    return f"{where}: {message}" if where else message


@dataclass(frozen=True)
class InstalledFiles:
    config: Path
    files: tuple[Path, ...]  # every file written, agent.toml last


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def render_agent_toml(bundle: ProvisioningBundle, data_dir: str) -> str:
    """The ``agent.toml`` for ``bundle`` (keys of ``edgeship.agent.config``); paths are relative."""
    lines = [
        "# Written by 'edgeship agent provision'; the files named here sit beside this one.",
        f"device_id = {_toml_str(bundle.device_id)}",
        f"hub_url = {_toml_str(bundle.hub_url)}",
        f"trust_root = {_toml_str(BUNDLE_FILES['trust_root'])}",
        f"data_dir = {_toml_str(data_dir)}",
        'runtime = "process"',
        "",
        "[broker]",
        f"url = {_toml_str(bundle.broker_url)}",
    ]
    if bundle.username is not None:
        lines.append(f"username = {_toml_str(bundle.username)}")
    if bundle.password is not None:
        lines.append(f"password_file = {_toml_str(BUNDLE_FILES['password'])}")
    if bundle.ca_cert_pem is not None:
        lines.append(f"ca_file = {_toml_str(BUNDLE_FILES['ca'])}")
    if bundle.client_cert_pem is not None:
        lines.append(f"cert_file = {_toml_str(BUNDLE_FILES['cert'])}")
        lines.append(f"key_file = {_toml_str(BUNDLE_FILES['key'])}")
    return "\n".join(lines) + "\n"


def _planned(bundle: ProvisioningBundle, data_dir: str) -> list[tuple[str, bytes, int]]:
    files: list[tuple[str, bytes, int]] = [(BUNDLE_FILES["trust_root"], bundle.trust_root.encode("utf-8"), 0o644)]
    if bundle.password is not None:
        files.append((BUNDLE_FILES["password"], bundle.password.encode("utf-8"), 0o600))
    if bundle.ca_cert_pem is not None:
        files.append((BUNDLE_FILES["ca"], bundle.ca_cert_pem.encode("utf-8"), 0o644))
    if bundle.client_cert_pem is not None and bundle.client_key_pem is not None:
        files.append((BUNDLE_FILES["cert"], bundle.client_cert_pem.encode("utf-8"), 0o644))
        files.append((BUNDLE_FILES["key"], bundle.client_key_pem.encode("utf-8"), 0o600))
    return files


def install_bundle(bundle: ProvisioningBundle, config_path: Path, *, data_dir: str = "agent-data") -> InstalledFiles:
    """Write ``agent.toml`` at ``config_path`` and its files beside it; all or nothing before the commit.

    Raises :class:`BundleError` (nothing changed) when a target is a folder, the folder
    cannot be written, or the agent would refuse the resulting config.
    """
    config_path = Path(config_path)
    folder = config_path.parent.resolve()
    files = _planned(bundle, data_dir)
    names = [name for name, _, _ in files] + [config_path.name]
    for name in names:
        if (folder / name).is_dir():
            raise BundleError(f"{folder / name} is a folder; move it away and provision again.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=folder, prefix=".provision-"))
    except OSError as exc:
        raise BundleError(f"Cannot write in {folder} ({exc.strerror}); pick a writable --config path.") from exc
    try:
        for name, data, mode in [*files, (config_path.name, render_agent_toml(bundle, data_dir).encode(), 0o644)]:
            _write_synced(stage / name, data, mode)
        _check_agent_config(stage / config_path.name)
        written: list[Path] = []
        for name in names:  # agent.toml is last: the commit point
            os.replace(stage / name, folder / name)
            written.append(folder / name)
        for stale in set(BUNDLE_FILES.values()) - set(names):  # e.g. a password after a switch to certificates
            (folder / stale).unlink(missing_ok=True)
        _fsync_dir(folder)
    except OSError as exc:
        raise BundleError(
            f"Cannot write the agent's files in {folder} ({exc.strerror}); pick a writable --config path."
        ) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return InstalledFiles(config=folder / config_path.name, files=tuple(written))


def _write_synced(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_agent_config(path: Path) -> None:
    """Load the staged config with the agent's own loader: never install what the agent would refuse."""
    from edgeship.agent.config import load_config

    try:
        load_config(path)
    except EdgeshipError as exc:
        raise BundleError(f"The agent would refuse the provisioned config: {exc}") from exc
