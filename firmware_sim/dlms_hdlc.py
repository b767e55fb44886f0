"""Simulated DLMS meters on one serial line (an RS-485 bus, a socat pty end), HDLC framed
(IEC 62056-46), each meter answering its own physical address.

``HdlcMeterBus(port, {physical_address: DlmsMeter})`` runs in a thread (pyserial): SNRM opens a
meter's HDLC connection (UA, a fresh association state), I-frames carry the LLC header and an
APDU that the meter's session answers (``firmware_sim.dlms_meter``), answers longer than 128
octets go out in segments, each after the client's RR; DISC closes (UA). Frames for addresses
not on the bus, or with a bad HCS/FCS, are ignored -- as on a real bus. A meter that is not
powered, or ``silent``, never answers; ``drop`` answers nothing and forgets the connection.

Written from IEC 62056-46 itself, never with the driver's code.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from types import TracebackType

import serial

from edgetwin.firmware_sim.dlms_meter import DlmsMeter, _Session

log = logging.getLogger(__name__)

SEGMENT = 128


def _fcs(data: bytes) -> bytes:
    value = 0xFFFF
    for octet in data:
        value ^= octet
        for _ in range(8):
            value = (value >> 1) ^ 0x8408 if value & 1 else value >> 1
    return (value ^ 0xFFFF).to_bytes(2, "little")


def _frame(dest: bytes, src: bytes, control: int, info: bytes = b"", more: bool = False) -> bytes:
    size = 2 + len(dest) + len(src) + 1 + 2 + (len(info) + 2 if info else 0)
    head = (0xA000 | (0x800 if more else 0) | size).to_bytes(2, "big") + dest + src
    head += bytes([control])
    body = head + (_fcs(head) + info if info else b"")
    return b"\x7e" + body + _fcs(body) + b"\x7e"


def _take(pending: bytearray) -> bytes | None:
    """One frame out of ``pending``, delimited by the length in its format field (IEC
    62056-46 has no transparency: 0x7E may occur inside a frame)."""
    while (start := pending.find(0x7E)) >= 0:
        del pending[:start]
        if len(pending) < 3:
            return None
        length = int.from_bytes(pending[1:3], "big") & 0x7FF
        if (
            pending[1] >> 4 != 0xA
            or length < 7
            or (len(pending) >= length + 2 and pending[length + 1] != 0x7E)
        ):
            del pending[:1]
            continue
        if len(pending) < length + 2:
            return None
        frame = bytes(pending[1 : length + 1])
        del pending[: length + 1]
        return frame
    pending.clear()
    return None


@dataclass
class _Link:
    session: _Session
    vs: int = 0
    vr: int = 0
    received: bytearray = field(default_factory=bytearray)
    outgoing: list[bytes] = field(default_factory=list)


class HdlcMeterBus:
    def __init__(self, port: str, meters: dict[int, DlmsMeter], *, baudrate: int = 9600) -> None:
        self.port, self.meters, self.baudrate = port, meters, baudrate
        self.links: dict[int, _Link] = {}
        self.frames = 0
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HdlcMeterBus:
        self._thread = threading.Thread(target=self._serve, name="dlms-hdlc-bus", daemon=True)
        self._thread.start()
        # pyserial flushes the input when it opens the port: a client's first frame sent
        # before that would be lost, so the bus is ready only once it is open
        if not self._open.wait(10):
            raise RuntimeError(f"{self.port}: the simulated bus could not open it")
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _serve(self) -> None:
        with serial.Serial(self.port, self.baudrate, timeout=0.05) as line:
            self._open.set()
            pending = bytearray()
            while not self._stop.is_set():
                pending += line.read(max(1, line.in_waiting))
                while (raw := _take(pending)) is not None:
                    try:
                        for answer in self._handle(raw):
                            line.write(answer)
                    except Exception:
                        log.exception("simulated HDLC bus: frame failed")

    def _handle(self, raw: bytes) -> list[bytes]:
        if len(raw) < 7 or _fcs(raw[:-2]) != raw[-2:]:
            return []
        fmt = int.from_bytes(raw[0:2], "big")
        if (fmt & 0x7FF) != len(raw):
            return []
        pos = 2
        while pos < len(raw) and not raw[pos] & 1:
            pos += 1
        dest = raw[2 : pos + 1]
        client_at = pos + 1
        src = raw[client_at : client_at + 1]
        control = raw[client_at + 1]
        physical = ((dest[2] >> 1) << 7 | dest[3] >> 1) if len(dest) == 4 else 0
        meter = self.meters.get(physical)
        if meter is None or not meter.powered or meter.fault == "silent":
            return []
        self.frames += 1
        info = raw[client_at + 4 : -2] if len(raw) > client_at + 4 else b""
        if control == 0x93:  # SNRM
            self.links[physical] = _Link(_Session(meter, client=src[0] >> 1))
            return [_frame(src, dest, 0x73)]
        if control == 0x53:  # DISC
            known = self.links.pop(physical, None) is not None
            return [_frame(src, dest, 0x73 if known else 0x1F)]
        link = self.links.get(physical)
        if link is None:
            return [_frame(src, dest, 0x1F)]  # DM: not connected
        if control & 0x0F == 0x01:  # RR: the next segment
            return [self._segment(link, src, dest)] if link.outgoing else []
        if control & 1:
            return []
        if (control >> 1) & 7 != link.vr:
            return []  # out of sequence: ignored (the client times out)
        link.vr = (link.vr + 1) % 8
        link.received += info
        if fmt & 0x800:  # a segment: acknowledge, wait for the rest
            return [_frame(src, dest, 0x11 | link.vr << 5)]
        apdu, link.received = bytes(link.received), bytearray()
        if meter.fault == "drop" or not apdu.startswith(b"\xe6\xe6\x00"):
            self.links.pop(physical, None)
            return []
        meter.requests += 1
        answer = link.session.handle(apdu[3:])
        if answer is None:
            self.links.pop(physical, None)
            return []
        data = b"\xe6\xe7\x00" + answer
        link.outgoing = [data[i : i + SEGMENT] for i in range(0, len(data), SEGMENT)]
        return [self._segment(link, src, dest)]

    def _segment(self, link: _Link, client: bytes, server: bytes) -> bytes:
        chunk = link.outgoing.pop(0)
        control = (link.vr << 5) | 0x10 | (link.vs << 1)
        link.vs = (link.vs + 1) % 8
        return _frame(client, server, control, chunk, more=bool(link.outgoing))
