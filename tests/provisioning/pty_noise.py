"""Two real pseudo-terminals joined by a relay thread that can flip and drop bytes.

The sender opens ``a_path``, the receiver ``b_path`` (both with pyserial, as on real
hardware); the relay copies master A <-> master B and, with the seeded rates given,
flips one bit of a byte or drops it. Noise is counted, so a test can prove it hit.
The test keeps both slave ends open so a master never reads EIO between sessions.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import tty
from dataclasses import dataclass


@dataclass
class Noise:
    flip: float = 0.0  # probability per byte
    drop: float = 0.0  # probability per byte
    flipped: int = 0
    dropped: int = 0


class NoisyPtyPair:
    def __init__(self, *, flip: float = 0.0, drop: float = 0.0, seed: int = 6) -> None:
        self.noise = Noise(flip, drop)
        self._rng = random.Random(seed)
        self._a_master, self._a_slave = os.openpty()
        self._b_master, self._b_slave = os.openpty()
        for fd in (self._a_slave, self._b_slave):
            tty.setraw(fd)
        for fd in (self._a_master, self._b_master):
            os.set_blocking(fd, False)
        self.a_path = os.ttyname(self._a_slave)
        self.b_path = os.ttyname(self._b_slave)
        self.relayed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, name="pty-noise", daemon=True)
        self._thread.start()

    def _mangle(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self.noise.drop and self._rng.random() < self.noise.drop:
                self.noise.dropped += 1
                continue
            if self.noise.flip and self._rng.random() < self.noise.flip:
                self.noise.flipped += 1
                byte ^= 1 << self._rng.randrange(8)
            out.append(byte)
        return bytes(out)

    def _relay(self) -> None:
        peer = {self._a_master: self._b_master, self._b_master: self._a_master}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peer), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                self.relayed += len(data)
                out = self._mangle(data)
                with contextlib.suppress(OSError):  # a full buffer loses bytes, as a real line would
                    os.write(peer[fd], out)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self._a_master, self._a_slave, self._b_master, self._b_slave):
            os.close(fd)
