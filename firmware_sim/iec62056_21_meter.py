"""A simulated IEC 62056-21 meter answering mode C readouts on a serial line (a socat pty end).

Sign-on ``/?<address>!`` (any address, or ``address`` when set) -> identification
``/EDG5ETWIN21`` (9600 baud offered) -> acknowledgement ``ACK 0 Z 0`` -> the data block
``STX`` data sets ``!`` ``ETX`` BCC, with the energy register advancing at every readout::

    0.0.0(12345678)          meter number
    0.9.1(14:15:00)          time (not a number)
    1.8.0(001234.567*kWh)    active energy import
    2.8.0(000012.345*kWh)    active energy export
    1-0:32.7.0(230.1*V)      voltage L1
    1-0:31.7.0(012.34*A)     current L1

Faults: ``fault = "silent"`` (no answer), ``"bad_bcc"`` (a wrong block check character),
``None`` (answers). Written from IEC 62056-21 itself, never with the driver's code.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import serial

STX, ETX, ACK = b"\x02", b"\x03", b"\x06"


class Iec6205621Meter:
    def __init__(self, port: str, *, address: str = "") -> None:
        self.port, self.address = port, address
        self.fault: str | None = None
        self.energy = 1234.567
        self.readouts = 0
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread: threading.Thread | None = None

    def data_block(self) -> bytes:
        lines = [
            "0.0.0(12345678)",
            f"0.9.1({time.strftime('%H:%M:%S')})",
            f"1.8.0({self.energy:010.3f}*kWh)",
            "2.8.0(000012.345*kWh)",
            "1-0:32.7.0(230.1*V)",
            "1-0:31.7.0(012.34*A)",
            "!",
        ]
        body = ("\r\n".join(lines) + "\r\n").encode("ascii") + ETX
        check = 0
        for byte in body:
            check ^= byte
        if self.fault == "bad_bcc":
            check ^= 0x55
        return STX + body + bytes([check])

    def _serve(self) -> None:
        line = serial.Serial(self.port, 300, bytesize=serial.SEVENBITS, parity=serial.PARITY_EVEN,
                             timeout=0.2)  # fmt: skip
        with line:
            self._open.set()
            while not self._stop.is_set():
                request = line.readline()
                if not request or self.fault == "silent":
                    continue
                text = request.decode("ascii", "replace").strip()
                if not (text.startswith("/?") and text.endswith("!")):
                    continue
                if self.address and text[2:-1] not in ("", self.address):
                    continue
                line.write(b"/EDG5ETWIN21\r\n")
                ack = line.readline()
                if not ack.startswith(ACK) or len(ack) < 4:
                    continue
                rate = {"0": 300, "5": 9600, "6": 19200}.get(chr(ack[2]), 300)
                if rate != line.baudrate:
                    line.baudrate = rate
                self.energy += 0.125
                self.readouts += 1
                line.write(self.data_block())
                line.flush()
                if line.baudrate != 300:
                    line.baudrate = 300

    def __enter__(self) -> Iec6205621Meter:
        self._thread = threading.Thread(target=self._serve, name="iec62056-21-meter", daemon=True)
        self._thread.start()
        # pyserial flushes the input when it opens the port: a sign-on sent before that would
        # be lost, so the meter is ready only once its end is open
        if not self._open.wait(10):
            raise RuntimeError(f"{self.port}: the simulated meter could not open it")
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
