"""A signing worker of :class:`edgeship.hub.signing_pool.SigningPool`: frames in on stdin, signatures out on stdout.

Request frame: ``u32 keys, (u32 length, PKCS#8 PEM) * keys, u32 count, (u32 length,
message) * count``. Answer: ``count * keys`` Ed25519 signatures of 64 bytes, message by
message. The worker ends at the end of its stdin (the hub closed it, or died).

    python -m edgeship.hub.signing_worker      # started by SigningPool, not by hand
"""

from __future__ import annotations

import struct
import sys
from typing import IO

__all__ = ["SIGNATURE_BYTES", "main", "read_exact", "read_frame", "write_frame"]

SIGNATURE_BYTES = 64  # every Ed25519 signature
_U32 = struct.Struct(">I")


def write_frame(out: IO[bytes], pems: list[bytes], messages: list[bytes]) -> None:
    parts = [_U32.pack(len(pems))]
    for item in pems:
        parts += [_U32.pack(len(item)), item]
    parts.append(_U32.pack(len(messages)))
    for item in messages:
        parts += [_U32.pack(len(item)), item]
    out.write(b"".join(parts))


def read_exact(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError(f"expected {size} bytes, the stream ended after {0 if data is None else len(data)}")
    return data


def _items(stream: IO[bytes]) -> list[bytes]:
    (count,) = _U32.unpack(read_exact(stream, 4))
    items = []
    for _ in range(count):
        (length,) = _U32.unpack(read_exact(stream, 4))
        items.append(read_exact(stream, length))
    return items


def read_frame(stream: IO[bytes]) -> tuple[list[bytes], list[bytes]] | None:
    """``(pems, messages)``, or None at the end of the stream."""
    head = stream.read(4)
    if not head:
        return None
    if len(head) != 4:
        raise EOFError("the stream ended inside a frame")
    (keys,) = _U32.unpack(head)
    pems = []
    for _ in range(keys):
        (length,) = _U32.unpack(read_exact(stream, 4))
        pems.append(read_exact(stream, length))
    return pems, _items(stream)


def main() -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    keys: dict[bytes, Ed25519PrivateKey] = {}
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (frame := read_frame(stdin)) is not None:
        pems, messages = frame
        signers = []
        for pem in pems:
            key = keys.get(pem)
            if key is None:
                loaded = load_pem_private_key(pem, password=None)
                if not isinstance(loaded, Ed25519PrivateKey):
                    return 2  # the pool sends Ed25519 keys only; the hub signs this batch itself
                key = keys[pem] = loaded
            signers.append(key.sign)
        stdout.write(b"".join(sign(message) for message in messages for sign in signers))
        stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
