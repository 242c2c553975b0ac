"""agent.toml: a good file becomes an AgentConfig; every mistake is one ConfigError naming the file and key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeship.agent.config import example_config, load_config
from edgeship.errors import ConfigError

GOOD = """
device_id = "dev-1"
hub_url = "http://hub.local:8000/"
trust_root = "trust-root.json"
data_dir = "data"
telemetry_interval = 10
port_range = [6000, 6009]

[broker]
url = "mqtt://broker.local:1883"
username = "dev-1"
password_file = "secret"
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "secret").write_text("s3cret\n")
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_a_good_config_resolves_paths_next_to_the_file(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert config.device_id == "dev-1"
    assert config.hub_url == "http://hub.local:8000"
    assert config.trust_root == (tmp_path / "trust-root.json").resolve()
    assert config.data_dir == (tmp_path / "data").resolve()
    assert config.port_range == (6000, 6009)
    assert config.telemetry_interval == 10.0
    assert config.runtime == "process"
    settings = config.broker_settings
    assert (settings.host, settings.port) == ("broker.local", 1883)
    assert (settings.username, settings.password) == ("dev-1", "s3cret")
    assert "s3cret" not in repr(config)


def test_download_limits_have_defaults_and_can_be_set(tmp_path: Path) -> None:
    default = load_config(_write(tmp_path, GOOD))
    assert (default.min_free_bytes, default.max_partial_bytes) == (256 * 2**20, 2**30)
    assert (default.download_min_rate, default.download_rate_window, default.download_deadline) == (1024, 30, 300)
    limits = "min_free_bytes = 0\nmax_partial_bytes = 1000\ndownload_min_rate = 10\n"
    limits += "download_rate_window = 2.5\ndownload_deadline = 60\n"
    config = load_config(_write(tmp_path, limits + GOOD))
    assert (config.min_free_bytes, config.max_partial_bytes) == (0, 1000)
    assert (config.download_min_rate, config.download_rate_window, config.download_deadline) == (10, 2.5, 60)


def test_the_example_config_loads(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, example_config("edge-7")))
    assert config.device_id == "edge-7"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda t: t.replace('device_id = "dev-1"\n', ""), "device_id is missing"),
        (lambda t: "colour = 'red'\n" + t, ": colour is not a known key"),
        (lambda t: t.replace('username = "dev-1"', 'user = "dev-1"'), "broker.user is not a known key"),
        (lambda t: t.replace("[6000, 6009]", "[6009, 6000]"), "port_range"),
        (lambda t: t.replace("telemetry_interval = 10", "telemetry_interval = -1"), "telemetry_interval"),
        (lambda t: t.replace('hub_url = "http://hub.local:8000/"', 'hub_url = "hub.local"'), "hub_url"),
        (lambda t: t.replace('"mqtt://broker.local:1883"', '"ftp://x"'), "[broker]"),
        (lambda t: t.replace('device_id = "dev-1"', 'device_id = "a/b"'), "device_id is not usable"),
        (lambda t: 'runtime = "vm"\n' + t, "runtime must be"),
        (lambda t: t.split("[broker]")[0], "[broker] is missing"),
        (lambda t: t.replace('password_file = "secret"', 'password_file = "nope"'), "broker.password_file"),
        (lambda t: t + "[broker\n", "not valid TOML"),
        (lambda t: "min_free_bytes = -1\n" + t, "min_free_bytes must be a whole number of bytes"),
        (lambda t: "max_partial_bytes = 1.5\n" + t, "max_partial_bytes must be a whole number of bytes"),
        (lambda t: "download_min_rate = 0\n" + t, "download_min_rate must be a positive number of bytes per second"),
        (lambda t: "download_rate_window = 'long'\n" + t, "download_rate_window must be a positive number of seconds"),
        (lambda t: "download_deadline = -5\n" + t, "download_deadline must be a positive number of seconds"),
    ],
)
def test_each_mistake_names_the_file_and_the_key(tmp_path: Path, change: object, key: str) -> None:
    path = _write(tmp_path, change(GOOD))  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert key in str(info.value)


def test_a_missing_file_says_where_to_look(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def _edgeship(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeship", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_init_config_writes_a_loadable_example_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "agent.toml"
    assert _edgeship("agent", "init-config", str(target), "--device-id", "edge-9").returncode == 0
    assert load_config(target).device_id == "edge-9"
    again = _edgeship("agent", "init-config", str(target))
    assert again.returncode == 1 and "--force" in again.stderr


def test_agent_run_with_a_bad_config_is_one_sentence_and_exit_1(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace('device_id = "dev-1"\n', ""))
    result = _edgeship("agent", "run", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "device_id is missing" in result.stderr
    assert "Traceback" not in result.stderr
