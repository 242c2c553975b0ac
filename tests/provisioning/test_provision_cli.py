"""Both CLI sides as real processes over a pseudo-terminal pair; the device side killed mid-transfer."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pty_noise import NoisyPtyPair

from edgeship.agent.config import load_config
from edgeship.errors import NoAnswerError
from edgeship.provisioning import LinkLimits, ProvisioningBundle, send_bundle
from edgeship.provisioning.serial_port import open_serial

EDGESHIP = [sys.executable, "-m", "edgeship"]


def _receiver(port: str, config: Path, *extra: str) -> subprocess.Popen[str]:
    """The device side, returned once it says it is waiting (Python's start-up is slower than the retries)."""
    process = subprocess.Popen(
        [*EDGESHIP, "agent", "provision", "--serial", port, "--config", str(config), "--timeout", "30", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    assert "Waiting for the operator" in process.stderr.readline()
    return process


def test_flash_and_receive_provision_a_device_end_to_end(
    ptys: NoisyPtyPair, tmp_path: Path, trust_root_json: str
) -> None:
    ptys.noise.flip = 0.001
    device = tmp_path / "device"
    receiver = _receiver(ptys.b_path, device / "agent.toml", "--data-dir", "state")
    (tmp_path / "trust-root.json").write_text(trust_root_json)
    (tmp_path / "pw").write_text("hunter2\n")
    flash = subprocess.run(
        [*EDGESHIP, "device", "flash", "dev-3", "--port", ptys.a_path, "--broker", "mqtt://127.0.0.1:1883",
         "--hub-url", "http://127.0.0.1:8000", "--trust-root", str(tmp_path / "trust-root.json"),
         "--password-file", str(tmp_path / "pw"), "--ack-timeout", "0.3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out, err = receiver.communicate(timeout=30)
    assert flash.returncode == 0, flash.stderr
    assert "Provisioned dev-3 over" in flash.stdout
    assert receiver.returncode == 0, err
    assert "Provisioned: wrote" in out
    config = load_config(device / "agent.toml")
    assert config.device_id == "dev-3" and config.broker.username == "dev-3"
    assert config.broker.password == "hunter2" and config.data_dir == device / "state"
    assert stat.S_IMODE((device / "broker-password").stat().st_mode) == 0o600
    assert (device / "trust-root.json").read_text() == trust_root_json


def test_a_receiver_killed_mid_transfer_leaves_nothing_written(
    ptys: NoisyPtyPair, tmp_path: Path, trust_root_json: str
) -> None:
    device = tmp_path / "device"
    device.mkdir()
    receiver = _receiver(ptys.b_path, device / "agent.toml")
    bundle = ProvisioningBundle.build(
        device_id="dev-4", broker_url="mqtt://127.0.0.1:1883", hub_url="http://127.0.0.1:8000",
        trust_root=trust_root_json, username="dev-4", password="pw",
    ).to_bytes()  # fmt: skip

    def kill_halfway(done: int, total: int) -> None:
        if done >= total // 2 and receiver.poll() is None:
            os.kill(receiver.pid, signal.SIGKILL)
            receiver.wait(10)

    with open_serial(ptys.a_path) as stream, pytest.raises(NoAnswerError, match="stopped answering at chunk"):
        send_bundle(stream, bundle, limits=LinkLimits(ack_timeout=0.2, retries=3, chunk=64), progress=kill_halfway)
    assert receiver.returncode == -signal.SIGKILL
    assert list(device.iterdir()) == []


def test_flash_to_a_silent_port_fails_with_one_sentence(
    ptys: NoisyPtyPair, tmp_path: Path, trust_root_json: str
) -> None:
    (tmp_path / "trust-root.json").write_text(trust_root_json)
    flash = subprocess.run(
        [*EDGESHIP, "device", "flash", "dev-5", "--port", ptys.a_path, "--broker", "mqtt://127.0.0.1:1883",
         "--hub-url", "http://127.0.0.1:8000", "--trust-root", str(tmp_path / "trust-root.json"),
         "--retries", "2", "--ack-timeout", "0.2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert flash.returncode == 1
    lines = [line for line in flash.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: No answer from the device on {ptys.a_path} after 2 tries; check the cable and that "
        "'edgeship agent provision' is running."
    ]


def test_flash_refuses_a_missing_port_and_a_bad_bundle_before_sending(tmp_path: Path, trust_root_json: str) -> None:
    (tmp_path / "trust-root.json").write_text(trust_root_json)
    base = [*EDGESHIP, "device", "flash", "dev-6", "--hub-url", "http://h:1", "--trust-root",
            str(tmp_path / "trust-root.json")]  # fmt: skip
    missing = subprocess.run([*base, "--port", "/dev/nonexistent-tty", "--broker", "mqtt://h:1"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 1 and "Cannot open the serial port /dev/nonexistent-tty" in missing.stderr
    bad = subprocess.run([*base, "--port", "/dev/nonexistent-tty", "--broker", "mqtt://u:p@h:1"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "broker_url: must not carry credentials" in bad.stderr
