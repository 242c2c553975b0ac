"""Azure IoT Edge: a deployment manifest for ``az iot edge set-modules --content`` and its template form.

Why two documents: the *manifest* is what IoT Hub accepts (``createOptions`` a
JSON string, split into ``createOptions01``... chunks of 512 characters,
exactly as iotedgedev does, because a twin value holds at most 512; eight
chunks, 4 KB, is the ceiling). The *template* (``deployment.template.json``)
keeps ``createOptions`` as an object, which is how people edit it in VS Code
before ``iotedgedev genconfig``. The edgeAgent desired properties use schema
1.1, edgeHub 1.2; the system modules pin runtime 1.5 (the current LTS).

Auth keys go into the module's ``env``: IoT Edge has no secret store, so anyone
who can read the device twin can read them (docs/targets.md says so).
"""

from __future__ import annotations

import json
from typing import Any

from edgeship.errors import InputError

from .spec import TargetSpec

__all__ = [
    "CREATE_OPTIONS_CHUNK",
    "CREATE_OPTIONS_MAX_CHUNKS",
    "EDGE_AGENT_IMAGE",
    "EDGE_HUB_IMAGE",
    "create_options",
    "iotedge_manifest",
    "iotedge_template",
    "join_create_options",
    "split_create_options",
]

EDGE_AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
EDGE_HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub:1.5"
CREATE_OPTIONS_CHUNK = 512  # characters per twin value
CREATE_OPTIONS_MAX_CHUNKS = 8  # createOptions + createOptions01..07: 4 KB

_EDGE_HUB_CREATE_OPTIONS = {
    "HostConfig": {
        "PortBindings": {
            "5671/tcp": [{"HostPort": "5671"}],
            "8883/tcp": [{"HostPort": "8883"}],
            "443/tcp": [{"HostPort": "443"}],
        }
    }
}


def create_options(spec: TargetSpec) -> dict[str, Any]:
    """Docker create options for the module: port, memory and CPU caps, labels."""
    port = f"{spec.port}/tcp"
    host: dict[str, Any] = {}
    if spec.host_port is not None:
        host["PortBindings"] = {port: [{"HostPort": str(spec.host_port)}]}
    memory = spec.resources.effective_memory_gb_limit
    if memory is not None:
        host["Memory"] = round(memory * 1_000_000_000)
    cpu = spec.resources.effective_cpu_limit
    if cpu is not None:
        host["NanoCpus"] = round(cpu * 1_000_000_000)
    options: dict[str, Any] = {"ExposedPorts": {port: {}}}
    if host:
        options["HostConfig"] = host
    options["Labels"] = dict(sorted(spec.all_labels().items()))
    return options


def split_create_options(options: dict[str, Any] | str, module: str) -> dict[str, str]:
    """``{"createOptions": ..., "createOptions01": ...}``: minified JSON in 512-character chunks."""
    text = options if isinstance(options, str) else json.dumps(options, separators=(",", ":"), sort_keys=True)
    chunks = [text[i : i + CREATE_OPTIONS_CHUNK] for i in range(0, len(text), CREATE_OPTIONS_CHUNK)] or [""]
    if len(chunks) > CREATE_OPTIONS_MAX_CHUNKS:
        raise InputError(
            f"createOptions of module {module} is {len(text)} characters; IoT Edge allows at most "
            f"{CREATE_OPTIONS_CHUNK * CREATE_OPTIONS_MAX_CHUNKS} (8 chunks of 512): drop labels or env"
        )
    return {("createOptions" if i == 0 else f"createOptions{i:02d}"): chunk for i, chunk in enumerate(chunks)}


def join_create_options(settings: dict[str, Any]) -> str:
    """The inverse of :func:`split_create_options`, as edgeAgent reassembles the chunks."""
    out = str(settings.get("createOptions", ""))
    for i in range(1, CREATE_OPTIONS_MAX_CHUNKS):
        key = f"createOptions{i:02d}"
        if key not in settings:
            break
        out += settings[key]
    return out


def _env(spec: TargetSpec) -> dict[str, dict[str, str]]:
    merged = {**dict(spec.env), **spec.key_env}
    for key in merged:
        if any(c in key for c in "+#$. "):
            raise InputError(f"environment variable {key} cannot be used on IoT Edge (no '+', '#', '$', '.')")
    return {k: {"value": v} for k, v in sorted(merged.items())}


def _document(
    spec: TargetSpec, *, template: bool, registry: dict[str, dict[str, str]] | None
) -> dict[str, Any]:
    settings: dict[str, Any] = {"image": spec.image}
    if template:
        settings["createOptions"] = create_options(spec)
        agent_opts: Any = {}
        hub_opts: Any = _EDGE_HUB_CREATE_OPTIONS
    else:
        settings.update(split_create_options(create_options(spec), spec.name))
        agent_opts = "{}"
        hub_opts = json.dumps(_EDGE_HUB_CREATE_OPTIONS, separators=(",", ":"), sort_keys=True)
    runtime_settings: dict[str, Any] = {"minDockerVersion": "v1.25", "loggingOptions": ""}
    if registry:
        runtime_settings["registryCredentials"] = registry
    module: dict[str, Any] = {
        "version": spec.version,
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "settings": settings,
    }
    env = _env(spec)
    if env:
        module["env"] = env
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": runtime_settings},
                    "systemModules": {
                        "edgeAgent": {
                            "type": "docker",
                            "settings": {"image": EDGE_AGENT_IMAGE, "createOptions": agent_opts},
                        },
                        "edgeHub": {
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {"image": EDGE_HUB_IMAGE, "createOptions": hub_opts},
                        },
                    },
                    "modules": {spec.name: module},
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.2",
                    "routes": {f"{spec.name.replace('-', '_')}ToUpstream": _route(spec.name)},
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
                }
            },
        }
    }


def _route(name: str) -> str:
    return f"FROM /messages/modules/{name}/outputs/* INTO $upstream"


def iotedge_manifest(
    spec: TargetSpec, *, registry_credentials: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """The deployment manifest for ``az iot edge set-modules`` (validates against deployment 2.0).

    ``registry_credentials`` maps a name to ``{address, username, password}``
    for private registries.
    """
    return _document(spec, template=False, registry=registry_credentials)


def iotedge_template(
    spec: TargetSpec, *, registry_credentials: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """``deployment.template.json``: createOptions as objects (validates against template 4.0)."""
    return _document(spec, template=True, registry=registry_credentials)
