"""Target artifacts: ACI YAML shape, Kubernetes manifests (kubernetes-validate, strict) and IoT Edge
manifests checked against the real IoT Edge JSON schemas with local $ref resolution."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from edgeship.errors import InputError
from edgeship.packager.config import load_deployment_config, load_inference_config
from edgeship.packager.targets import (
    CREATE_OPTIONS_CHUNK,
    KEY_ENV_PRIMARY,
    KEY_ENV_SECONDARY,
    KUBERNETES_VERSION,
    Autoscale,
    Probe,
    Resources,
    TargetSpec,
    aci_container_group,
    aks_manifests,
    iotedge_manifest,
    iotedge_template,
    join_create_options,
    render_target,
    split_create_options,
    target_spec,
    write_target,
)

SCHEMAS = Path(__file__).parents[1] / "data" / "iotedge-schemas"
DATA = Path(__file__).parent / "data"
DIGEST = "sha256:" + "ab" * 32


def full_spec(**overrides: Any) -> TargetSpec:
    values: dict[str, Any] = {
        "name": "digits",
        "version": "3",
        "image": "edgeship/digits@" + DIGEST,
        "env": {"AZUREML_MODEL_DIR": "/var/azureml-app/azureml-models", "WORKERS": "1"},
        "resources": Resources(cpu=0.5, memory_gb=1.0, cpu_limit=1.0, memory_gb_limit=2.0),
        "primary_key": "primary-0123456789",
        "secondary_key": "secondary-0123456789",
        "autoscale": Autoscale(min_replicas=1, max_replicas=3, target_utilization=70),
        "module_digest": DIGEST,
    }
    values.update(overrides)
    return TargetSpec(**values)


def schema_validator(name: str) -> jsonschema.Draft4Validator:
    """A draft-04 validator whose $refs resolve to the schema files beside it, never the network."""
    resources = []
    for path in SCHEMAS.glob("*.json"):
        contents = json.loads(path.read_text())
        resources.append((contents["id"], Resource.from_contents(contents, default_specification=DRAFT4)))
    registry: Registry[Any] = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def errors(validator: jsonschema.Draft4Validator, doc: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


# ----- spec -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Digits", "-digits", "digits_model", "a" * 64, ""])
def test_module_name_must_be_a_dns_label(name: str) -> None:
    with pytest.raises(InputError, match="DNS label"):
        full_spec(name=name)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"env": {"BAD-NAME": "x"}}, "environment variable name"),
        ({"env": {KEY_ENV_PRIMARY: "x"}}, "reserved"),
        ({"primary_key": None}, "secondary key needs a primary key"),
        ({"port": 70000}, "between 1 and 65535"),
        ({"image": "has space"}, "image reference"),
        ({"readiness_path": "ready"}, "must start with '/'"),
    ],
)
def test_inconsistent_specs_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        full_spec(**overrides)


def test_autoscale_bounds_are_checked() -> None:
    with pytest.raises(InputError, match="below min_replicas"):
        Autoscale(min_replicas=4, max_replicas=2)
    with pytest.raises(InputError, match=r"1\.\.100"):
        Autoscale(target_utilization=0)


def test_resource_limits_below_requests_are_refused() -> None:
    with pytest.raises(InputError, match="cpu_limit"):
        Resources(cpu=2, cpu_limit=1)
    with pytest.raises(InputError, match="memory_gb_limit"):
        Resources(memory_gb=2, memory_gb_limit=1)
    with pytest.raises(InputError, match="above 0"):
        Resources(cpu=0)


# ----- ACI --------------------------------------------------------------------------------------


def test_aci_container_group_has_the_arm_shape_az_container_create_reads() -> None:
    doc = yaml.safe_load(render_target("aci", full_spec(dns_name_label="digits-demo"))["aci.yaml"])
    assert doc["apiVersion"] == "2021-10-01"  # a string, not a YAML date
    assert doc["type"] == "Microsoft.ContainerInstance/containerGroups"
    assert doc["name"] == "digits"
    props = doc["properties"]
    assert props["osType"] == "Linux" and props["restartPolicy"] == "Always"
    assert props["ipAddress"] == {
        "type": "Public",
        "ports": [{"port": 5001, "protocol": "TCP"}],
        "dnsNameLabel": "digits-demo",
    }
    (container,) = props["containers"]
    c = container["properties"]
    assert c["image"] == "edgeship/digits@" + DIGEST
    assert c["ports"] == [{"port": 5001, "protocol": "TCP"}]
    assert c["resources"] == {
        "requests": {"cpu": 0.5, "memoryInGB": 1},
        "limits": {"cpu": 1, "memoryInGB": 2},
    }
    env = {e["name"]: e for e in c["environmentVariables"]}
    assert env[KEY_ENV_PRIMARY] == {"name": KEY_ENV_PRIMARY, "secureValue": "primary-0123456789"}
    assert env[KEY_ENV_SECONDARY] == {"name": KEY_ENV_SECONDARY, "secureValue": "secondary-0123456789"}
    assert env["WORKERS"] == {"name": "WORKERS", "value": "1"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/", "port": 5001, "scheme": "http"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert all("/" not in tag for tag in doc["tags"])  # ARM tag names may not contain '/'


def test_aci_uses_az_defaults_without_resources_and_omits_limits() -> None:
    doc = aci_container_group(TargetSpec(name="m", version="1", image="m:1"), location="westeurope")
    c = doc["properties"]["containers"][0]["properties"]
    assert c["resources"] == {"requests": {"cpu": 1, "memoryInGB": 1.5}}
    assert doc["location"] == "westeurope"
    assert all("secureValue" not in e for e in c["environmentVariables"])


# ----- Kubernetes -------------------------------------------------------------------------------


def test_aks_manifests_are_valid_kubernetes_in_strict_mode() -> None:
    docs = aks_manifests(full_spec(namespace="models"), service_type="LoadBalancer")
    assert [d["kind"] for d in docs] == ["Secret", "Deployment", "Service", "HorizontalPodAutoscaler"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "models"


def test_aks_keys_live_only_in_the_secret() -> None:
    secret, deployment, _service, _hpa = aks_manifests(full_spec())
    assert secret["stringData"] == {
        KEY_ENV_PRIMARY: "primary-0123456789",
        KEY_ENV_SECONDARY: "secondary-0123456789",
    }
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs[KEY_ENV_PRIMARY] == {"name": "digits-keys", "key": KEY_ENV_PRIMARY}
    assert "primary-0123456789" not in json.dumps(deployment)


def test_aks_resources_probes_labels_and_hpa() -> None:
    _secret, deployment, service, hpa = aks_manifests(full_spec(liveness=Probe(initial_delay_seconds=60)))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1G"},
        "limits": {"cpu": "1", "memory": "2G"},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/", "port": "http"}
    assert container["livenessProbe"]["initialDelaySeconds"] == 60
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["edgeship.io/module-digest"] == DIGEST.split(":")[1][:63]
    assert service["spec"]["type"] == "ClusterIP"
    assert set(deployment["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 3
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 70,
    }


def test_aks_without_keys_or_autoscaler_has_fixed_replicas_and_no_secret() -> None:
    spec = TargetSpec(
        name="m", version="1.0+local", image="m:1", replicas=3, liveness=Probe(success_threshold=2)
    )
    docs = aks_manifests(spec)
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    deployment = docs[0]
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "500M"}
    assert container["livenessProbe"]["successThreshold"] == 1  # Kubernetes allows nothing else
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0-local"


def test_a_broken_manifest_is_caught_by_the_validator() -> None:
    """Guards the guard: strict validation must reject an unknown field."""
    deployment = aks_manifests(full_spec())[1]
    deployment["spec"]["template"]["spec"]["containers"][0]["cpuLimit"] = "1"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# ----- IoT Edge ---------------------------------------------------------------------------------


def test_iotedge_manifest_validates_against_deployment_schema_2_0() -> None:
    manifest = iotedge_manifest(full_spec(host_port=8080))
    assert errors(schema_validator("azure-iot-edge-deployment-2.0.json"), manifest) == []
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert desired["schemaVersion"] == "1.1"
    assert manifest["modulesContent"]["$edgeHub"]["properties.desired"]["schemaVersion"] == "1.2"
    system = desired["systemModules"]
    assert system["edgeAgent"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-agent:1.5"
    assert system["edgeHub"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-hub:1.5"
    module = desired["modules"]["digits"]
    assert (module["type"], module["status"], module["restartPolicy"], module["version"]) == (
        "docker",
        "running",
        "always",
        "3",
    )
    assert module["env"][KEY_ENV_PRIMARY] == {"value": "primary-0123456789"}
    options = json.loads(join_create_options(module["settings"]))
    assert options["HostConfig"]["PortBindings"] == {"5001/tcp": [{"HostPort": "8080"}]}
    assert options["HostConfig"]["Memory"] == 2_000_000_000
    assert options["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert options["ExposedPorts"] == {"5001/tcp": {}}


def test_every_create_options_value_is_a_string_of_at_most_512_characters() -> None:
    manifest = iotedge_manifest(full_spec())
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    settings = [
        desired["modules"]["digits"]["settings"],
        *(m["settings"] for m in desired["systemModules"].values()),
    ]
    for s in settings:
        for key, value in s.items():
            if key.startswith("createOptions"):
                assert isinstance(value, str) and len(value) <= CREATE_OPTIONS_CHUNK


def test_long_create_options_are_split_into_numbered_chunks_and_still_validate() -> None:
    labels = {f"example.com/label-{i}": "v" * 40 for i in range(12)}
    manifest = iotedge_manifest(full_spec(labels=labels))
    settings = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["digits"]["settings"]
    chunk_keys = sorted(k for k in settings if k.startswith("createOptions"))
    assert chunk_keys[:3] == ["createOptions", "createOptions01", "createOptions02"]
    assert all(len(settings[k]) == CREATE_OPTIONS_CHUNK for k in chunk_keys[:-1])
    assert json.loads(join_create_options(settings))["Labels"]["example.com/label-0"] == "v" * 40
    assert errors(schema_validator("azure-iot-edge-deployment-2.0.json"), manifest) == []


def test_create_options_over_4_kb_are_refused() -> None:
    assert list(split_create_options("x" * 4096, "m")) == ["createOptions"] + [
        f"createOptions0{i}" for i in range(1, 8)
    ]
    with pytest.raises(InputError, match="at most 4096"):
        split_create_options("x" * 4097, "m")


def test_iotedge_template_keeps_create_options_as_objects_and_validates_against_4_0() -> None:
    template = iotedge_template(full_spec())
    assert errors(schema_validator("azure-iot-edge-deployment-template-4.0.json"), template) == []
    settings = template["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["digits"]["settings"]
    assert isinstance(settings["createOptions"], dict)
    # The string form is not a valid *manifest* with objects in it: the 2.0 schema says so.
    assert errors(schema_validator("azure-iot-edge-deployment-2.0.json"), template) != []


def test_iotedge_manifest_without_resources_or_keys_validates() -> None:
    manifest = iotedge_manifest(TargetSpec(name="m", version="1", image="m:1"))
    assert errors(schema_validator("azure-iot-edge-deployment-2.0.json"), manifest) == []
    module = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["m"]
    assert "env" not in module and "HostConfig" not in json.loads(module["settings"]["createOptions"])


# ----- writing and configs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "files"),
    [
        ("aci", ["aci.yaml"]),
        ("aks", ["kubernetes.yaml"]),
        ("iotedge", ["deployment.json", "deployment.template.json"]),
        ("local", []),
    ],
)
def test_write_target_writes_parseable_private_files(tmp_path: Path, target: str, files: list[str]) -> None:
    written = write_target(target, full_spec(), tmp_path / "out")
    assert [p.name for p in written] == files
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the files carry the auth keys
        text = path.read_text()
        docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
        assert docs and all(isinstance(d, dict) for d in docs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(files)  # no temp files left


def test_rendering_is_deterministic_and_json_is_sorted() -> None:
    first = render_target("iotedge", full_spec())
    assert first == render_target("iotedge", full_spec())
    manifest = json.loads(first["deployment.json"])
    assert first["deployment.json"] == json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def test_unknown_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown target 'ecs'"):
        write_target("ecs", full_spec(), tmp_path)


def test_target_spec_from_azure_configs_feeds_valid_kubernetes() -> None:
    dc = load_deployment_config(DATA / "aks-deploymentconfig.json")
    ic = load_inference_config(DATA / "project" / "inferenceconfig-environment.json", target_python="3.11")
    spec = target_spec("digits", "3", "edgeship/digits:3", dc, ic, module_digest=DIGEST)
    assert spec.resources == Resources(cpu=0.5, memory_gb=1.0, cpu_limit=1.0, memory_gb_limit=2.0)
    assert spec.autoscale == Autoscale(1, 3, 70) and spec.namespace == "models"
    assert spec.liveness.period_seconds == 15 and spec.env == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}
    for doc in aks_manifests(spec):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_target_spec_from_aci_and_iot_configs() -> None:
    aci = target_spec("digits", "3", "d:3", load_deployment_config(DATA / "aci-deploymentconfig.json"))
    assert aci.primary_key == "primary-key-0123456789" and aci.dns_name_label == "digits-demo"
    iot = target_spec("digits", "3", "d:3", load_deployment_config(DATA / "iot-deploymentconfig.yml"))
    assert iot.host_port == 8080 and iot.primary_key is None
    assert errors(schema_validator("azure-iot-edge-deployment-2.0.json"), iotedge_manifest(iot)) == []
