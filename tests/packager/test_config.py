"""Azure ML v1 inference/deployment configs: real-shaped files, every warning and every error path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgeship.errors import ConfigError
from edgeship.packager.config import (
    AZURE_SERVING_PACKAGES,
    load_deployment_config,
    load_inference_config,
    parse_conda,
)

DATA = Path(__file__).parent / "data"
PROJECT = DATA / "project"


def write(tmp_path: Path, doc: dict[str, Any], name: str = "deploymentconfig.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def deploy(tmp_path: Path, **doc: Any) -> Any:
    return load_deployment_config(write(tmp_path, doc))


def deploy_error(tmp_path: Path, **doc: Any) -> str:
    with pytest.raises(ConfigError) as info:
        deploy(tmp_path, **doc)
    return str(info.value)


# ----- inference config -------------------------------------------------------------------------


def test_tutorial_inferenceconfig_resolves_paths_against_source_directory() -> None:
    ic = load_inference_config(PROJECT / "inferenceconfig.json", target_python="3.11")
    assert ic.entry_script == (PROJECT / "src" / "score.py").resolve()
    assert ic.source_directory == (PROJECT / "src").resolve()
    assert ic.conda_file == (PROJECT / "src" / "myenv.yml").resolve()
    assert ic.runtime == "python"
    assert ic.requirements == ("inference-schema[numpy-support]==1.3.0", "scikit-learn==0.22.1", "joblib")
    assert ic.python_version == "3.6.2"


def test_tutorial_conda_file_gives_one_warning_per_problem() -> None:
    ic = load_inference_config(PROJECT / "inferenceconfig.json", target_python="3.11")
    assert len(ic.warnings) == 3
    python, serving, conda_only = ic.warnings
    assert "pins python 3.6.2" in python and "Python 3.11" in python
    assert "azureml-defaults" in serving and "scoring runtime replaces" in serving
    assert "numpy" in conda_only and "pandas=1.1.5" in conda_only and "pip:" in conda_only
    assert all("\n" not in w for w in ic.warnings)


def test_yaml_form_without_source_directory_resolves_against_config_folder() -> None:
    ic = load_inference_config(PROJECT / "inferenceconfig.yml", target_python="3.11")
    assert ic.entry_script == (PROJECT / "src" / "score.py").resolve()
    assert ic.source_directory is None
    assert "joblib" in ic.requirements


def test_inline_environment_block_gives_requirements_env_and_base_image() -> None:
    ic = load_inference_config(PROJECT / "inferenceconfig-environment.json", target_python="3.11")
    assert ic.requirements == ("scikit-learn==1.3.2",)
    assert ic.env == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}
    assert ic.base_image == "mcr.microsoft.com/azureml/intelmpi2018.3-ubuntu18.04"
    assert ic.environment_name == "my-deploy-env"
    assert len(ic.warnings) == 1 and "azureml-defaults" in ic.warnings[0]


def test_matching_python_pin_gives_no_python_warning() -> None:
    env = parse_conda({"dependencies": ["python=3.11.4", {"pip": ["numpy"]}]}, "3.11", source="c")
    assert env.warnings == () and env.requirements == ("numpy",) and env.python == "3.11.4"


def test_inference_schema_is_kept_and_serving_packages_are_dropped() -> None:
    pips = ["azureml-defaults==1.38.0", "azureml_core", "azureml-inference-server-http", "inference-schema"]
    env = parse_conda({"dependencies": [{"pip": pips}]}, "3.11", source="c")
    assert env.requirements == ("inference-schema",)
    assert "azureml-core" in AZURE_SERVING_PACKAGES
    assert "azureml_core" in env.warnings[0]


def test_conda_variables_become_environment() -> None:
    env = parse_conda({"dependencies": [], "variables": {"OMP_NUM_THREADS": 1}}, "3.11", source="c")
    assert env.variables == {"OMP_NUM_THREADS": "1"}


def test_environment_plus_conda_file_warns_that_azure_ignores_them(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(d): return d\n")
    doc = {
        "entryScript": "score.py",
        "condaFile": "nope.yml",
        "runtime": "python",
        "environment": {"name": "e"},
    }
    ic = load_inference_config(write(tmp_path, doc, "ic.json"))
    assert ic.warnings == (
        "ic.json: runtime, condaFile ignored because 'environment' is set (as Azure ML does)",
    )


def test_enable_gpu_and_cuda_version_warn(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("")
    ic = load_inference_config(
        write(tmp_path, {"entryScript": "score.py", "enableGpu": True, "cudaVersion": "10.0"})
    )
    assert [w.split(": ", 1)[1] for w in ic.warnings] == [
        "enableGpu ignored: edgeship modules run on CPU",
        "cudaVersion ignored: edgeship modules run on CPU",
    ]


def test_docs_spelling_extra_docker_file_steps_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("")
    (tmp_path / "steps.dockerfile").write_text("RUN true\n")
    ic = load_inference_config(
        write(tmp_path, {"entryScript": "score.py", "extraDockerFileSteps": "steps.dockerfile"})
    )
    assert ic.extra_dockerfile_steps == (tmp_path / "steps.dockerfile").resolve()


def test_unknown_inference_key_names_key_file_and_suggestion(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("")
    path = write(tmp_path, {"entryScript": "score.py", "sourceDirectroy": "."}, "ic.json")
    with pytest.raises(
        ConfigError, match=r"ic.json: unknown key 'sourceDirectroy'; did you mean 'sourceDirectory'\?"
    ):
        load_inference_config(path)


def test_unknown_key_inside_environment_block_names_its_path(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("")
    path = write(tmp_path, {"entryScript": "score.py", "environment": {"docker": {"baseImag": "x"}}})
    with pytest.raises(ConfigError, match=r"'environment.docker.baseImag'; did you mean 'baseImage'"):
        load_inference_config(path)


def test_sdk_parameter_name_points_to_file_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"entry_script": "score.py"})
    with pytest.raises(ConfigError, match="did you mean 'entryScript'"):
        load_inference_config(path)


def test_missing_entry_script_names_key_and_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"entryScript 'score.py' not found at .*score.py"):
        load_inference_config(write(tmp_path, {"entryScript": "score.py"}))


def test_entry_script_beside_config_but_not_in_source_directory_gets_a_hint(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "score.py").write_text("")
    with pytest.raises(ConfigError, match=r"relative to sourceDirectory.*a file exists at"):
        load_inference_config(write(tmp_path, {"entryScript": "score.py", "sourceDirectory": "src"}))


def test_missing_conda_file_and_source_directory_are_errors(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("")
    with pytest.raises(ConfigError, match=r"condaFile 'env\.yml' not found"):
        load_inference_config(write(tmp_path, {"entryScript": "score.py", "condaFile": "env.yml"}))
    with pytest.raises(ConfigError, match="sourceDirectory 'code' is not a folder"):
        load_inference_config(write(tmp_path, {"entryScript": "score.py", "sourceDirectory": "code"}))


def test_entry_script_is_required_and_must_be_python(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'entryScript' is required"):
        load_inference_config(write(tmp_path, {"runtime": "python"}))
    (tmp_path / "score.R").write_text("")
    with pytest.raises(ConfigError, match="must be a Python file"):
        load_inference_config(write(tmp_path, {"entryScript": "score.R"}))


def test_spark_runtime_is_refused(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("")
    with pytest.raises(ConfigError, match="runtime 'spark-py' is not supported"):
        load_inference_config(write(tmp_path, {"entryScript": "score.py", "runtime": "spark-py"}))


def test_conda_file_with_unknown_section_or_bad_yaml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("")
    (tmp_path / "env.yml").write_text("dependencies:\n- conda:\n  - x\n")
    with pytest.raises(ConfigError, match="unknown dependencies section 'conda:'"):
        load_inference_config(write(tmp_path, {"entryScript": "score.py", "condaFile": "env.yml"}))
    (tmp_path / "env.yml").write_text("dependencies: [unclosed\n")
    with pytest.raises(ConfigError, match=r"condaFile .*env\.yml is not valid YAML"):
        load_inference_config(write(tmp_path, {"entryScript": "score.py", "condaFile": "env.yml"}))


def test_unreadable_or_non_mapping_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_inference_config(tmp_path / "absent.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a mapping of keys, not a list"):
        load_inference_config(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text('{"entryScript": ')
    with pytest.raises(ConfigError, match="neither valid YAML nor valid JSON"):
        load_inference_config(tmp_path / "bad.json")
    (tmp_path / "empty.yml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_inference_config(tmp_path / "empty.yml")


def test_wrong_value_type_names_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'enableGpu': .*got 'sometimes'"):
        load_inference_config(write(tmp_path, {"entryScript": "s.py", "enableGpu": "sometimes"}))


# ----- deployment config ------------------------------------------------------------------------


def test_aci_sample_normalises_and_warns_for_azure_only_keys() -> None:
    dc = load_deployment_config(DATA / "aci-deploymentconfig.json")
    assert dc.compute_type == "aci"
    assert (dc.cpu, dc.memory_gb, dc.cpu_limit, dc.memory_gb_limit) == (0.5, 1.0, None, None)
    assert dc.auth_enabled and dc.primary_key == "primary-key-0123456789"
    assert dc.secondary_key == "secondary-key-0123456789"
    assert dc.dns_name_label == "digits-demo" and dc.autoscaler is None
    assert [w.split(": ")[1] for w in dc.warnings] == ["appInsightsEnabled ignored", "location ignored"]


def test_aks_sample_gives_autoscaler_limits_probe_and_warnings() -> None:
    dc = load_deployment_config(DATA / "aks-deploymentconfig.json")
    assert dc.compute_type == "aks"
    assert dc.autoscaler is not None and (dc.autoscaler.min_replicas, dc.autoscaler.max_replicas) == (1, 3)
    assert dc.autoscaler.target_utilization == 70 and dc.replicas is None
    assert (dc.cpu, dc.memory_gb, dc.cpu_limit, dc.memory_gb_limit) == (0.5, 1.0, 1.0, 2.0)
    assert dc.liveness is not None and dc.liveness.period_seconds == 15 and dc.liveness.success_threshold == 1
    assert (dc.scoring_timeout_ms, dc.max_concurrent_requests, dc.max_queue_wait_ms) == (5000, 2, 500)
    assert dc.namespace == "models" and dc.auth_enabled
    assert [w.split(": ")[1] for w in dc.warnings] == ["dataCollection.storageEnabled ignored"]


def test_aks_yaml_sample_in_upper_case_warns_about_refresh_period() -> None:
    dc = load_deployment_config(DATA / "aks-deploymentconfig.yml")
    assert dc.compute_type == "aks" and dc.autoscaler is not None
    assert [w.split(": ")[1] for w in dc.warnings] == [
        "appInsightsEnabled ignored",
        "autoScaler.refreshPeriodInSeconds ignored",
    ]


def test_local_sample_keeps_port_and_sets_no_resources() -> None:
    dc = load_deployment_config(DATA / "local-deploymentconfig.json")
    assert (dc.compute_type, dc.port, dc.cpu, dc.auth_enabled, dc.warnings) == (
        "local",
        32267,
        None,
        False,
        (),
    )


def test_iot_compute_type_maps_to_iotedge() -> None:
    dc = load_deployment_config(DATA / "iot-deploymentconfig.yml")
    assert (dc.compute_type, dc.port, dc.memory_gb) == ("iotedge", 8080, 0.25)


@pytest.mark.parametrize("value", ["ACI", "aci", "Aci", " aci "])
def test_compute_type_in_any_case(tmp_path: Path, value: str) -> None:
    assert deploy(tmp_path, computeType=value).compute_type == "aci"


def test_aks_defaults_follow_azure_ml(tmp_path: Path) -> None:
    dc = deploy(tmp_path, computeType="AKS")
    assert dc.auth_enabled and (dc.cpu, dc.memory_gb) == (0.1, 0.5)
    assert dc.autoscaler is not None and (dc.autoscaler.min_replicas, dc.autoscaler.max_replicas) == (1, 10)
    fixed = deploy(tmp_path, computeType="AKS", numReplicas=3)
    assert fixed.autoscaler is None and fixed.replicas == 3


def test_null_values_mean_unset(tmp_path: Path) -> None:
    dc = deploy(tmp_path, computeType="aks", autoScaler=None, numReplicas=None, keys=None, authEnabled=None)
    assert dc.autoscaler is not None and dc.auth_enabled


def test_target_argument_overrides_missing_compute_type(tmp_path: Path) -> None:
    path = write(tmp_path, {"containerResourceRequirements": {"cpu": 1}})
    assert load_deployment_config(path, target="aks").compute_type == "aks"
    with pytest.raises(ConfigError, match="'computeType' is required"):
        load_deployment_config(path)
    overridden = load_deployment_config(write(tmp_path, {"computeType": "ACI"}), target="aks")
    assert overridden.compute_type == "aks"
    assert any("overridden by --target aks" in w for w in overridden.warnings)


def test_snake_case_cpu_limit_and_top_level_keys_are_accepted(tmp_path: Path) -> None:
    dc = deploy(
        tmp_path,
        computeType="aks",
        containerResourceRequirements={"cpu": 0.5, "cpu_limit": 2},
        primaryKey="a",
        secondaryKey="b",
    )
    assert (dc.cpu_limit, dc.primary_key, dc.secondary_key) == (2, "a", "b")


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"sslCname": "x.example.com"}, "sslCname ignored"),
        ({"cname": "x.example.com"}, "cname ignored"),
        ({"vnetName": "v", "subnetName": "s"}, "vnetName ignored"),
        ({"computeTarget": "aks-prod"}, "computeTarget ignored"),
        ({"computeTargetName": "aks-prod"}, "computeTargetName ignored"),
        (
            {"vaultBaseUrl": "https://v", "keyName": "k", "keyVersion": "1"},
            "vaultBaseUrl, keyName, keyVersion ignored",
        ),
        ({"cmkVaultBaseUrl": "https://v"}, "cmkVaultBaseUrl ignored"),
        ({"gpuCores": 1}, "gpuCores/containerResourceRequirements.gpu ignored"),
        ({"containerResourceRequirements": {"fpga": 2}}, "containerResourceRequirements.fpga ignored"),
        ({"versionName": "v2", "trafficPercentile": 20}, "versionName, trafficPercentile ignored"),
        ({"dnsNameLabel": "x"}, "dnsNameLabel ignored"),
        ({"port": 8000}, "port ignored"),
        ({"authEnabled": False, "keys": {"primaryKey": "k"}}, "keys ignored"),
        ({"sslEnabled": True, "sslCertificate": "c.pem", "sslKey": "k.pem"}, "sslEnabled ignored"),
    ],
)
def test_azure_only_keys_warn_on_aks(tmp_path: Path, doc: dict[str, Any], expected: str) -> None:
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    dc = deploy(tmp_path, computeType="aks", **doc)
    assert next(w.split(": ", 1)[1].split(":")[0] for w in dc.warnings) == expected


@pytest.mark.parametrize(
    ("compute", "doc", "expected"),
    [
        ("iotedge", {"autoScaler": {"autoscaleEnabled": True}}, "autoScaler ignored"),
        ("local", {"numReplicas": 3}, "numReplicas ignored"),
        ("aci", {"namespace": "ml"}, "namespace ignored"),
        ("local", {"livenessProbeRequirements": {"periodSeconds": 3}}, "livenessProbeRequirements ignored"),
    ],
)
def test_keys_for_another_compute_type_warn(
    tmp_path: Path, compute: str, doc: dict[str, Any], expected: str
) -> None:
    dc = deploy(tmp_path, computeType=compute, **doc)
    assert dc.warnings[0].split(": ", 1)[1].startswith(expected)


@pytest.mark.parametrize(
    ("doc", "keys"),
    [
        (
            {"computeType": "aks", "autoScaler": {"autoscaleEnabled": True}, "numReplicas": 2},
            ["autoscaleEnabled", "numReplicas"],
        ),
        (
            {"computeType": "aks", "autoScaler": {"minReplicas": 5, "maxReplicas": 2}},
            ["minReplicas", "maxReplicas"],
        ),
        ({"computeType": "aks", "autoScaler": {"targetUtilization": 150}}, ["targetUtilization"]),
        ({"computeType": "aks", "autoScaler": {"minReplicas": 0}}, ["minReplicas"]),
        (
            {"computeType": "aks", "containerResourceRequirements": {"cpu": 2, "cpuLimit": 1}},
            ["cpuLimit", "cpu"],
        ),
        (
            {"computeType": "aks", "containerResourceRequirements": {"cpu": 2, "cpu_limit": 1}},
            ["cpuLimit", "cpu"],
        ),
        (
            {"computeType": "aks", "containerResourceRequirements": {"cpuLimit": 2, "cpu_limit": 1}},
            ["cpu_limit"],
        ),
        (
            {"computeType": "aks", "containerResourceRequirements": {"memoryInGB": 2, "memoryInGBLimit": 1}},
            ["memoryInGBLimit"],
        ),
        ({"computeType": "aks", "sslEnabled": True}, ["sslEnabled", "sslCertificate", "sslKey"]),
        ({"computeType": "aks", "sslEnabled": True, "sslCertificate": "c.pem"}, ["sslKey"]),
        ({"computeType": "aks", "sslCertificate": "missing.pem"}, ["sslCertificate", "missing.pem"]),
        (
            {"computeType": "ACI", "autoScaler": {"autoscaleEnabled": True, "maxReplicas": 3}},
            ["autoScaler", "ACI"],
        ),
        ({"computeType": "ACI", "numReplicas": 2}, ["numReplicas", "ACI"]),
        (
            {"computeType": "aks", "authEnabled": True, "tokenAuthEnabled": True},
            ["authEnabled", "tokenAuthEnabled"],
        ),
        ({"computeType": "aks", "tokenAuthEnabled": True}, ["tokenAuthEnabled", "authEnabled"]),
        (
            {"computeType": "aks", "keys": {"primaryKey": "a"}, "primaryKey": "b"},
            ["keys.primaryKey", "primaryKey"],
        ),
        ({"computeType": "aks", "cname": "a", "sslCname": "b"}, ["cname", "sslCname"]),
        ({"computeType": "mir"}, ["computeType 'mir'"]),
        ({"computeType": "aks", "namespace": "Not_Valid"}, ["namespace"]),
        (
            {"computeType": "aks", "containerResourceRequirements": {"cpu": -1}},
            ["containerResourceRequirements.cpu"],
        ),
    ],
)
def test_contradictions_and_bad_values_name_the_keys(
    tmp_path: Path, doc: dict[str, Any], keys: list[str]
) -> None:
    (tmp_path / "c.pem").write_text("cert")
    message = deploy_error(tmp_path, **doc)
    assert "deploymentconfig.json" in message
    for key in keys:
        assert key in message


@pytest.mark.parametrize(
    ("doc", "suggestion"),
    [
        ({"computeType": "aks", "autoscaler": {}}, "autoScaler"),
        ({"computeType": "aks", "containerResourceRequirements": {"memoryInGb": 1}}, "memoryInGB"),
        ({"computeType": "aks", "autoScaler": {"maxReplica": 3}}, "maxReplicas"),
        ({"computeType": "aks", "replicaMaxConcurrentRequests": 3}, "maxConcurrentRequestsPerContainer"),
        ({"computeType": "aks", "maxRequestWaitTime": 3}, "maxQueueWaitMs"),
        ({"computeType": "aks", "cpu_cores": 1}, "containerResourceRequirements.cpu"),
        ({"computeType": "aks", "authenabled": True}, "authEnabled"),
    ],
)
def test_unknown_deployment_keys_suggest_the_closest_azure_key(
    tmp_path: Path, doc: dict[str, Any], suggestion: str
) -> None:
    message = deploy_error(tmp_path, **doc)
    assert "unknown key" in message and f"did you mean '{suggestion}'" in message


def test_unknown_key_without_close_match_lists_the_defined_keys(tmp_path: Path) -> None:
    message = deploy_error(tmp_path, computeType="aks", keys={"zzz": "1"})
    assert "unknown key 'keys.zzz'" in message and "primaryKey, secondaryKey" in message
