"""Serial provisioning: the operator sends a device its identity, broker credentials and trust root.

Layers, from the wire up (``docs/provisioning.md``)::

    frames.py       pure: frame encoding, CRC32, resynchronisation after garbage
    protocol.py     the sender and receiver state machines over a ByteStream
    bundle.py       the provisioning bundle (pydantic) and its all-or-nothing install
    serial_port.py  pyserial as a ByteStream (imported only when a port is opened)
"""

from __future__ import annotations

from edgeship.provisioning.bundle import BUNDLE_FILES, InstalledFiles, ProvisioningBundle, install_bundle
from edgeship.provisioning.frames import Frame, FrameDecoder, FrameType, encode_frame
from edgeship.provisioning.protocol import (
    MAX_BUNDLE,
    PROTOCOL_VERSION,
    ByteStream,
    LinkLimits,
    TransferReport,
    receive_bundle,
    send_bundle,
)

__all__ = [
    "BUNDLE_FILES",
    "MAX_BUNDLE",
    "PROTOCOL_VERSION",
    "ByteStream",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "InstalledFiles",
    "LinkLimits",
    "ProvisioningBundle",
    "TransferReport",
    "encode_frame",
    "install_bundle",
    "receive_bundle",
    "send_bundle",
]
