"""A pyserial port as the provisioning link's :class:`~edgeship.provisioning.protocol.ByteStream`.

8 data bits, no parity, one stop bit, no flow control: what a USB-serial adapter
and a board's UART agree on without configuration. ``pyserial`` is imported here
only; the ``agent`` and ``hub`` extras install it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from edgeship.errors import InputError, TransportError

__all__ = ["DEFAULT_BAUD", "SerialStream", "open_serial"]

DEFAULT_BAUD = 115200


class SerialStream:
    """An open serial port; close it with :meth:`close` or use it as a context manager."""

    def __init__(self, port: Any, name: str) -> None:
        self._port = port
        self.name = name

    def read(self, n: int, timeout: float) -> bytes:
        import serial

        try:
            self._port.timeout = max(timeout, 0.0)
            first = bytes(self._port.read(1))
            if not first:
                return b""
            self._port.timeout = 0
            waiting = min(self._port.in_waiting, n - 1)
            return first + (bytes(self._port.read(waiting)) if waiting > 0 else b"")
        except serial.SerialException as exc:
            raise TransportError(f"Reading the serial port {self.name} failed ({exc}); check the cable.") from exc

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._port.write(data)
            self._port.flush()
        except serial.SerialException as exc:
            raise TransportError(f"Writing the serial port {self.name} failed ({exc}); check the cable.") from exc

    def discard_input(self) -> None:
        """Drop bytes that arrived before this session (an earlier session's tail)."""
        self._port.reset_input_buffer()

    def close(self) -> None:
        self._port.close()

    def __enter__(self) -> SerialStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_serial(port: str, baud: int = DEFAULT_BAUD) -> SerialStream:
    """Open ``port`` (``/dev/ttyUSB0``, ``COM3``) at ``baud``, 8N1, no flow control."""
    try:
        import serial
    except ModuleNotFoundError as exc:
        raise InputError(
            "Serial provisioning needs the 'pyserial' package; install it with pip install 'edgeship[agent]'."
        ) from exc
    if baud <= 0:
        raise InputError(f"Baud rate {baud} is not valid; use e.g. 115200.")
    try:
        handle = serial.Serial(
            port, baudrate=baud, bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE, xonxoff=False, rtscts=False, timeout=0.1, exclusive=True,
        )  # fmt: skip
    except (serial.SerialException, ValueError) as exc:
        raise TransportError(
            f"Cannot open the serial port {port} ({exc}); check the path and that you may use it "
            "(on Linux: the dialout group)."
        ) from exc
    return SerialStream(handle, port)
