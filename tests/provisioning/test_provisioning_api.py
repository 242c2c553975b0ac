"""Pin the public provisioning API, and keep pyserial out of imports that do not open a port."""

from __future__ import annotations

import subprocess
import sys

import edgeship.provisioning


def test_public_api_is_pinned() -> None:
    assert sorted(edgeship.provisioning.__all__) == sorted([
        "BUNDLE_FILES", "MAX_BUNDLE", "PROTOCOL_VERSION", "ByteStream", "Frame", "FrameDecoder", "FrameType",
        "InstalledFiles", "LinkLimits", "ProvisioningBundle", "TransferReport", "encode_frame", "install_bundle",
        "receive_bundle", "send_bundle",
    ])  # fmt: skip
    for name in edgeship.provisioning.__all__:
        assert hasattr(edgeship.provisioning, name), name
    assert edgeship.provisioning.PROTOCOL_VERSION == 1


def test_neither_the_cli_nor_the_protocol_imports_pyserial_or_cryptography_until_needed() -> None:
    code = (
        "import sys, edgeship.cli, edgeship.provisioning.protocol, edgeship.provisioning.frames; "
        "print('serial' in sys.modules, 'cryptography' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False False"
