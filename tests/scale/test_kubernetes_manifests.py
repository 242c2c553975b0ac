"""``deploy/kubernetes``: valid for Kubernetes (``kubernetes-validate --strict``), and what they run really works.

The container's arguments are parsed by the real CLI, the broker user they make is a
hub identity, and a real hub answers the probes' path.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import typer
import yaml
from hub_workspace import make_hub_workspace

from edgeship.cli import app
from edgeship.hub.server import HubConfig, HubServer
from edgeship.mqtt.identity import validate_hub_identity

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # as packager/targets/aks.py validates against


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def hub_container() -> dict[str, Any]:
    (statefulset,) = [doc for doc in documents() if doc["kind"] == "StatefulSet"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_every_manifest_passes_kubernetes_validate_strict() -> None:
    files = sorted(str(path) for path in MANIFESTS.glob("*.yaml"))
    assert len(files) == 3
    command = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(command), "--strict", "-k", KUBERNETES_VERSION, *files], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = sorted(doc["kind"] for doc in documents())
    assert kinds == ["PersistentVolumeClaim", "PodDisruptionBudget", "Secret", "Secret", "Secret", "Service", "Service",
                     "Service", "Service", "StatefulSet"]  # fmt: skip
    assert result.stdout.count("passed for resource") == len(kinds)


def test_the_hub_runs_replicated_with_probes_and_external_postgres() -> None:
    (statefulset,) = [doc for doc in documents() if doc["kind"] == "StatefulSet"]
    assert statefulset["spec"]["replicas"] >= 2
    container = hub_container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    externals = {doc["metadata"]["name"]: doc["spec"] for doc in documents() if doc["kind"] == "Service"
                 and doc["spec"].get("type") == "ExternalName"}  # fmt: skip
    assert set(externals) == {"edgeship-postgres", "edgeship-broker"}
    secret_keys = {key for doc in documents() if doc["kind"] == "Secret" for key in doc["stringData"]}
    assert {"db-url", "broker-password", "hub.key", "trust-root.json"} <= secret_keys


def test_the_containers_arguments_are_what_hub_serve_accepts() -> None:
    container = hub_container()
    values = {"POD_NAME": "edgeship-hub-0", "EDGESHIP_DB_URL": "postgresql+psycopg://hub:pw@db/edgeship",
              "EDGESHIP_BROKER_URL": "mqtt://edgeship-broker:1883"}  # fmt: skip
    env = {item["name"] for item in container["env"]}
    assert set(values) <= env and "EDGESHIP_BROKER_PASSWORD" in env
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg) for arg in container["args"]]
    assert args[:3] == ["edgeship", "hub", "serve"]
    root: Any = typer.main.get_command(app)  # a click group (typer may bring its own click)
    context = root.commands["hub"].commands["serve"].make_context("serve", args[3:])  # raises on a bad option
    assert validate_hub_identity(context.params["broker_username"]) == "hub-edgeship-hub-0"
    assert context.params["port"] == container["ports"][0]["containerPort"]


def test_a_real_hub_answers_the_probes_path(tmp_path: Path, mosquitto: Any) -> None:
    paths = {hub_container()[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    ws, _world = make_hub_workspace(tmp_path / "ws", modules=0)
    with HubServer(HubConfig(workspace=ws.root, broker_url=mosquitto.url, port=0)) as hub:
        for path in paths:
            with urllib.request.urlopen(hub.api_url + path, timeout=10) as response:
                assert response.status == 200
