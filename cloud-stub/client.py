"""``HubClient``: the operator CLI's small, synchronous client of the hub's REST API (httpx).

Errors come back as edgeship errors with the hub's own one-sentence ``detail``:
an unreachable hub is a :class:`~edgeship.errors.TransportError` naming the URL,
a refused request a :class:`HubRequestError` carrying the HTTP status.
"""

from __future__ import annotations

import json as json_module
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from edgeship.errors import EdgeshipError, InputError, TransportError

__all__ = ["DEFAULT_HUB_URL", "ENV_HUB_TOKEN", "ENV_HUB_URL", "ROLLOUT_ACTIONS", "HubClient", "HubRequestError"]

DEFAULT_HUB_URL = "http://127.0.0.1:8800"
ENV_HUB_URL = "EDGESHIP_HUB_URL"
ENV_HUB_TOKEN = "EDGESHIP_HUB_TOKEN"  # noqa: S105 - the name of an environment variable
ROLLOUT_ACTIONS = ("pause", "resume", "approve", "abort")


class HubRequestError(EdgeshipError):
    """The hub answered with an error status; ``status`` is the HTTP status, the message the hub's detail."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class HubClient:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get(ENV_HUB_URL) or DEFAULT_HUB_URL).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise InputError(f"Hub URL {self.url!r} must start with http:// or https://.")
        self.token = token or os.environ.get(ENV_HUB_TOKEN)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                timeout: float | None = None, content: bytes | Iterator[bytes] | None = None,
                content_type: str = "application/json") -> Any:
        if not self.token:
            raise InputError(
                f"No operator token for the hub at {self.url}: pass --token or set {ENV_HUB_TOKEN} "
                "(create one with 'edgeship hub token create NAME')."
            )
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        if content is not None:
            extra.update(content=content, headers={"Content-Type": content_type})
        try:
            response = self._http.request(method, path, json=json, params=params, **extra)
        except httpx.ConnectError as exc:
            raise TransportError(
                f"Cannot reach the hub at {self.url} ({exc}); is 'edgeship hub serve' running there?"
            ) from exc
        except httpx.TimeoutException as exc:
            raise TransportError(f"The hub at {self.url} did not answer {method} {path} in time; retry later.") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"Request to the hub at {self.url} failed: {exc}.") from exc
        if response.status_code >= 400:
            raise HubRequestError(_detail(response), response.status_code)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # devices -----------------------------------------------------------------
    def list_devices(self) -> list[dict[str, Any]]:
        return self.request("GET", "/devices")

    def create_device(self, device_id: str, tags: Mapping[str, Any], credentials: str = "password") -> dict[str, Any]:
        """The device, with its one-time ``credentials`` and the ``broker`` reload outcome."""
        return self.request("POST", "/devices", json={"id": device_id, "tags": dict(tags), "credentials": credentials})

    def rotate_credentials(self, device_id: str) -> dict[str, Any]:
        """``{"credentials", "broker"}``: the new secret, shown once; the old one is revoked."""
        return self.request("POST", f"/devices/{_seg(device_id)}/credentials/rotate")

    def delete_device(self, device_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/devices/{_seg(device_id)}")

    def get_device(self, device_id: str) -> dict[str, Any]:
        return self.request("GET", f"/devices/{_seg(device_id)}")

    def set_tags(self, device_id: str, tags: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"/devices/{_seg(device_id)}/tags", json={"tags": dict(tags)})

    def telemetry(self, device_id: str, limit: int = 10) -> list[dict[str, Any]]:
        return self.request("GET", f"/devices/{_seg(device_id)}/telemetry", params={"limit": limit})

    def invoke(self, device_id: str, method: str, args: Mapping[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """The device's answer ``{"status", "result"|"error"}``; a 504 HubRequestError when it stays silent."""
        return self.request(
            "POST", f"/devices/{_seg(device_id)}/methods/{_seg(method)}", json=dict(args),
            params={"timeout": timeout}, timeout=timeout + 10,
        )

    # trust root --------------------------------------------------------------
    def trust_root(self) -> dict[str, Any]:
        return self.request("GET", "/trust-root")

    def publish_trust_root(self, envelope: bytes) -> dict[str, Any]:
        """Rotate the hub (and then every device) to this trust-root envelope (``PUT /trust-root``)."""
        return self.request("PUT", "/trust-root", content=envelope)

    # modules -----------------------------------------------------------------
    def upload_module(self, workspace: str, name: str, version: int | None = None) -> dict[str, Any]:
        return self.request(
            "POST", "/modules", json={"workspace": workspace, "name": name, "version": version}
        )

    def upload_module_dir(self, directory: Path) -> dict[str, Any]:
        """Upload a signed module directory over HTTP: each artifact the hub lacks, then the envelope.

        Works from any machine (no folder shared with the hub); an artifact the hub already
        holds (another module's wheel or model) is not sent again.
        """
        from edgeship.modules.manifest import ENVELOPE_FILE, MANIFEST_FILE, ModuleManifest

        directory = Path(directory)
        manifest = ModuleManifest.from_bytes((directory / MANIFEST_FILE).read_bytes())
        artifacts = {ref.path: ref.digest for ref in manifest.files}
        for part in manifest.parts.all() if manifest.parts is not None else []:  # schemaVersion 2 (ADR 0028)
            artifacts[f"parts/{part.digest.removeprefix('sha256:')}"] = part.digest
        for rel, digest in artifacts.items():
            try:
                self.request("GET", f"/uploads/{digest}")
                continue  # the hub has it
            except HubRequestError as exc:
                if exc.status != 404:
                    raise
            size = (directory / rel).stat().st_size
            self.request("PUT", f"/uploads/{digest}", content=_chunks(directory / rel),
                         content_type="application/octet-stream", timeout=max(60.0, size / 5e6))
        envelope = json_module.loads((directory / ENVELOPE_FILE).read_text())
        return self.request("POST", "/modules/signed", json={"envelope": envelope})

    def list_modules(self) -> list[dict[str, Any]]:
        return self.request("GET", "/modules")

    # deployments -------------------------------------------------------------
    def create_deployment(self, name: str, target_condition: str, modules: list[dict[str, Any]],
                          priority: int = 0, rollout: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``rollout``: a policy with the camelCase keys of ``RolloutPolicy.to_dict`` (docs/rollouts.md)."""
        body: dict[str, Any] = {"name": name, "targetCondition": target_condition, "priority": priority,
                                "modules": modules}
        if rollout is not None:
            body["rollout"] = dict(rollout)
        return self.request("POST", "/deployments", json=body)

    def list_deployments(self) -> list[dict[str, Any]]:
        return self.request("GET", "/deployments")

    def get_deployment(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/deployments/{_seg(name)}")

    def delete_deployment(self, name: str) -> None:
        self.request("DELETE", f"/deployments/{_seg(name)}")

    # rollouts ----------------------------------------------------------------
    def rollout(self, name: str) -> dict[str, Any]:
        """The deployment's rollout (``RolloutView.to_dict()``); a 404 HubRequestError when it has none."""
        return self.request("GET", f"/deployments/{_seg(name)}/rollout")

    def rollout_action(self, name: str, action: str, reason: str | None = None) -> dict[str, Any]:
        """``pause``, ``resume``, ``approve`` or ``abort`` the rollout; the answer is the rollout after it."""
        if action not in ROLLOUT_ACTIONS:
            raise InputError(f"Rollout action {action!r} is not one of {', '.join(ROLLOUT_ACTIONS)}.")
        body = {"reason": reason} if reason is not None else None
        return self.request("POST", f"/deployments/{_seg(name)}/rollout/{action}", json=body)

    def rollout_events(self, name: str) -> list[dict[str, Any]]:
        """Every state change of the rollout, oldest first (``RolloutEvent.to_dict()``)."""
        return self.request("GET", f"/deployments/{_seg(name)}/events")


def _chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(size):
            yield chunk


def _seg(value: str) -> str:
    """A path segment, percent-encoded so an id cannot change the path."""
    from urllib.parse import quote

    return quote(value, safe="")


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):  # FastAPI's validation errors
        first = detail[0] if detail else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"Request field {where}: {first.get('msg', 'invalid')}."
    text = str(detail) if detail else f"The hub answered {response.status_code} {response.reason_phrase}."
    if response.status_code == 401:
        text += f" Pass a valid --token or set {ENV_HUB_TOKEN}."
    return text
