"""IEC 62056-21 mode C readout (the optical probe / RS-485 protocol of meters without DLMS).

Each ``read`` is one readout over the serial line (pyserial, 7E1): the sign-on request
``/?<address>!CR LF`` at ``initial_baudrate`` (300 by the standard), the meter's identification
``/XXXZ<ident>CR LF`` -- ``Z`` names the baud rate it offers --, the acknowledgement
``ACK 0 Z 0 CR LF`` (protocol mode C, data readout) and, after both sides switched to that rate
(capped at ``max_baudrate``), the data block ``STX <data sets> ! CR LF ETX BCC``. The block check
character (XOR of every byte after STX up to and including ETX) must match, else the readout is
``DeviceUnavailable`` and the runtime retries with backoff. Data sets are ``OBIS(value*unit)``
lines (``1.8.0(012345.678*kWh)``, ``1-0:32.7.0(230.1*V)``); a point's address is its OBIS code,
with the ``A-B:`` medium and channel prefix or without (then it matches the code with any
prefix). A data set with
several values (``1.6.0(0012.34*kW)(24-11-30 14:15)``) gives its first value.

Quality: a configured code missing from the readout is ``invalid``, ``badReference``; a value
that is not a number (a date, a status word) is ``invalid``, ``badReference`` and logged once.
Source time: when the readout ended (mode C data carry no per-value time).

What it leaves to the runtime: the schedule (a readout every ``poll_interval_s``), timeouts,
backoff and availability; one line is one device (one meter per probe or address).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from edgetwin.core.errors import DeviceUnavailable
from edgetwin.core.models import BAD_REFERENCE, GOOD, Reading, Value
from edgetwin.core.points import PointSpec
from edgetwin.drivers.base import DeviceConfig

log = logging.getLogger(__name__)

STX, ETX, ACK = b"\x02", b"\x03", b"\x06"
BAUD = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
OBIS = re.compile(r"^(?:\d{1,3}-\d{1,3}:)?\d{1,3}\.\d{1,3}(?:\.\d{1,3}){0,2}(?:\*\d{1,3})?$")
DATA_SET = re.compile(r"([^()\s!]{1,32})\(([^()]{0,128})\)")
MAX_BLOCK = 64 * 1024  # a readout larger than this is not a meter's


def check_obis(code: str) -> str:
    if not OBIS.match(code):
        raise ValueError(
            f"IEC 62056-21 address must be an OBIS code like 1.8.0 or 1-0:1.8.0, got {code!r}"
        )
    return code


def bcc(data: bytes) -> int:
    out = 0
    for byte in data:
        out ^= byte
    return out


def parse_data_block(text: str) -> dict[str, tuple[str, str]]:
    """``{code: (value, unit)}`` of every data set in a data block (first value of each)."""
    out: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        if line.strip() == "!":
            break
        for code, body in DATA_SET.findall(line):
            value, _, unit = body.partition("*")
            out.setdefault(code, (value, unit))
            break  # the first value of the line's data set
    return out


def number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


class Iec6205621Config(DeviceConfig):
    serial_port: str = Field(pattern=r"^/[\w./-]+$")
    address: str = Field(
        "", pattern=r"^[0-9A-Za-z ]{0,32}$", description="device address; '' = any"
    )
    initial_baudrate: int = Field(300, ge=300, le=19200)
    max_baudrate: int = Field(9600, ge=300, le=19200)
    timeout_s: float = Field(5.0, ge=0.1, le=60)
    poll_interval_s: float = Field(60.0, ge=1, le=86_400)


class Iec6205621Driver:
    """``iec62056_21``: see the module docstring."""

    config_model: ClassVar[type[DeviceConfig]] = Iec6205621Config

    def __init__(
        self,
        config: Iec6205621Config,
        points: Sequence[PointSpec],
        shared: dict[str, Any] | None = None,
    ) -> None:
        self._config = config
        self._codes = {p.key: check_obis(str(p.address)) for p in points}
        self._line: Any = None
        self._not_numbers: set[str] = set()
        self._stats = {"readouts": 0, "bcc_errors": 0}
        self.identification = ""

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    async def connect(self) -> None:
        import serial  # pyserial, a core dependency

        c = self._config
        try:
            self._line = await asyncio.to_thread(
                serial.Serial, c.serial_port, c.initial_baudrate, bytesize=serial.SEVENBITS,
                parity=serial.PARITY_EVEN, stopbits=serial.STOPBITS_ONE, timeout=c.timeout_s,
            )  # fmt: skip
        except (serial.SerialException, ValueError) as err:
            raise DeviceUnavailable(f"{c.serial_port}: {err}") from None

    async def close(self) -> None:
        line, self._line = self._line, None
        if line is not None:
            await asyncio.to_thread(line.close)

    async def read(self, points: Sequence[PointSpec]) -> list[Reading]:
        if self._line is None:
            raise DeviceUnavailable("not connected")
        data = await asyncio.to_thread(self._readout)
        short = {code.split(":", 1)[-1]: found for code, found in data.items()}
        now = time.time()
        out = []
        for p in points:
            code = self._codes[p.key]
            found = data.get(code) or short.get(code.split(":", 1)[-1])
            value = number(found[0]) if found else None
            if found and value is None and code not in self._not_numbers:
                self._not_numbers.add(code)
                log.warning("%s: %s is %r, not a number", self._config.name, code, found[0])
            out.append(Reading(p.key, value, GOOD if value is not None else BAD_REFERENCE, now))
        return out

    def _readout(self) -> dict[str, tuple[str, str]]:
        """Blocking: one mode C readout; raises DeviceUnavailable."""
        c, line = self._config, self._line
        if line.baudrate != c.initial_baudrate:  # set only when it changes (a pty refuses a no-op)
            line.baudrate = c.initial_baudrate
        line.reset_input_buffer()
        line.write(f"/?{c.address}!\r\n".encode("ascii"))
        ident = line.readline()
        if not ident.startswith(b"/") or len(ident) < 7:
            raise DeviceUnavailable(f"{c.serial_port}: no identification ({ident!r})")
        self.identification = ident[1:].decode("ascii", "replace").strip()
        offered = BAUD.get(chr(ident[4]), c.initial_baudrate)
        rate = max((b for b in BAUD.values() if b <= min(offered, c.max_baudrate)), default=300)
        z = next(k for k, v in BAUD.items() if v == rate)
        line.write(ACK + f"0{z}0\r\n".encode("ascii"))
        line.flush()
        time.sleep(0.01)  # the meter switches after the acknowledgement
        if line.baudrate != rate:
            line.baudrate = rate
        block = line.read_until(ETX, MAX_BLOCK)
        check = line.read(1)
        start = block.find(STX)
        if start < 0 or not block.endswith(ETX) or len(check) != 1:
            raise DeviceUnavailable(f"{c.serial_port}: incomplete data block ({len(block)} bytes)")
        self._stats["readouts"] += 1
        if bcc(block[start + 1 :]) != check[0]:
            self._stats["bcc_errors"] += 1
            raise DeviceUnavailable(f"{c.serial_port}: block check character mismatch")
        return parse_data_block(block[start + 1 : -1].decode("ascii", "replace"))

    async def readout(self) -> dict[str, tuple[str, str]]:
        """Every data set of one readout, ``{code: (value, unit)}`` (for discovery)."""
        if self._line is None:
            raise DeviceUnavailable("not connected")
        return await asyncio.to_thread(self._readout)

    async def write(self, point: PointSpec, value: Value) -> None:
        from edgetwin.core.errors import DeviceRejected

        raise DeviceRejected(f"{point.key}: an IEC 62056-21 readout is read-only")
