"""How DLMS APDUs travel: the IEC 62056-47 TCP wrapper, or HDLC (IEC 62056-46) on a serial line
shared by the meters of one RS-485 bus or optical probe.

``Transport`` is what the DLMS driver needs: ``open``, ``exchange(apdu) -> apdu``, ``close``.

* ``WrapperTransport``: one TCP connection per meter; each APDU behind an 8-octet header
  (version 1, source and destination wPort, length).
* ``HdlcTransport``: one HDLC connection per meter (SNRM/UA, I-frames with send and receive
  sequence numbers, RR for segmented answers, DISC) on an ``HdlcLine`` that several meters
  share (one per serial port, kept in the driver's ``shared`` map). The line carries one
  exchange at a time (``HdlcLine.lock``, half duplex), so a back-fill of one meter and the reads
  of the others take turns frame by frame and none waits for another's whole read. Frames are
  checked (HCS, FCS: CRC-16/X.25) and a frame not addressed to this client, garbled or
  incomplete is dropped; a line that brings nothing valid within the timeout is
  ``DeviceUnavailable``.

Both bound what they accept: a wrapper longer than ``MAX_APDU`` or an HDLC answer of more than
``MAX_SEGMENTS`` segments ends the link. Written from IEC 62056-46/-47; dlms-cosem's own HDLC
client is not used (its frame search never gives up on a garbled frame).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from edgetwin.core.errors import DeviceUnavailable
from edgetwin.drivers.streams import SerialSettings, Stream, open_serial, open_tcp

MAX_APDU = 65_535
MAX_SEGMENTS = 4096
MAX_BUFFER = 16 * 1024  # octets of a line's input kept while looking for a frame
FLAG = 0x7E
SNRM, UA, DISC, DM, RR_BASE = 0x93, 0x73, 0x53, 0x1F, 0x11
LLC_REQUEST, LLC_RESPONSE = b"\xe6\xe6\x00", b"\xe6\xe7\x00"
MAX_INFO = 128  # the default maximum information field length (no negotiation)


class Transport(Protocol):
    async def open(self, limit_s: float) -> None: ...

    async def exchange(self, apdu: bytes, timeout_s: float) -> bytes: ...

    async def close(self) -> None: ...


class _Input:
    """A stream's bytes, buffered for ``take`` (exactly n octets)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def more(self) -> None:
        data = await self.stream.read()
        if not data:
            raise DeviceUnavailable("link lost (closed by the peer)")
        self.buf += data

    async def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self.more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class WrapperTransport:
    def __init__(self, host: str, port: int, client: int, server: int) -> None:
        self.host, self.port, self.client, self.server = host, port, client, server
        self._input: _Input | None = None

    async def open(self, limit_s: float) -> None:
        self._input = _Input(await open_tcp(self.host, self.port, limit_s))

    async def exchange(self, apdu: bytes, timeout_s: float) -> bytes:
        if self._input is None:
            raise DeviceUnavailable("not connected")
        head = (b"\x00\x01" + self.client.to_bytes(2, "big") + self.server.to_bytes(2, "big")
                + len(apdu).to_bytes(2, "big"))  # fmt: skip
        try:
            async with asyncio.timeout(timeout_s):
                await self._input.stream.write(head + apdu)
                answer = await self._input.take(8)
                if answer[0:2] != b"\x00\x01":
                    raise DeviceUnavailable(f"not a DLMS wrapper (version {answer[0:2].hex()})")
                return await self._input.take(int.from_bytes(answer[6:8], "big"))
        except TimeoutError:
            raise DeviceUnavailable(f"no answer within {timeout_s:g} s") from None
        except (ConnectionError, OSError) as err:
            raise DeviceUnavailable(f"link lost ({type(err).__name__})") from None

    async def close(self) -> None:
        inp, self._input = self._input, None
        if inp is not None:
            inp.stream.close()


# -- HDLC frames ----------------------------------------------------------------------------------
def crc16(data: bytes) -> int:
    """CRC-16/X.25 (HDLC HCS and FCS)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def server_address(logical: int, physical: int | None) -> bytes:
    """The HDLC server address: one octet (logical only) or four (upper = logical device,
    lower = physical address), 7 bits per octet, the last octet's low bit set."""
    if physical is None:
        return bytes([(logical & 0x7F) << 1 | 1])
    return bytes([(logical >> 7) << 1, (logical & 0x7F) << 1,
                  (physical >> 7) << 1, (physical & 0x7F) << 1 | 1])  # fmt: skip


def client_address(sap: int) -> bytes:
    return bytes([(sap & 0x7F) << 1 | 1])


@dataclass(frozen=True, slots=True)
class Frame:
    dest: bytes
    src: bytes
    control: int
    info: bytes = b""
    segmented: bool = False


class HdlcError(ValueError):
    """Not a valid HDLC frame."""


def encode_frame(frame: Frame) -> bytes:
    header_len = 2 + len(frame.dest) + len(frame.src) + 1
    length = header_len + 2 + (len(frame.info) + 2 if frame.info else 0)
    fmt = 0xA000 | (0x0800 if frame.segmented else 0) | length
    header = fmt.to_bytes(2, "big") + frame.dest + frame.src + bytes([frame.control])
    body = header
    if frame.info:
        body += crc16(header).to_bytes(2, "little") + frame.info
    return bytes([FLAG]) + body + crc16(body).to_bytes(2, "little") + bytes([FLAG])


def _address(data: bytes, pos: int) -> tuple[bytes, int]:
    for end in range(pos, min(pos + 4, len(data))):
        if data[end] & 1:
            if end - pos + 1 == 3:
                break
            return data[pos : end + 1], end + 1
    raise HdlcError("bad address field")


def decode_frame(raw: bytes) -> Frame:
    """One frame between flags (flags excluded); ``HdlcError`` unless it is valid."""
    if len(raw) < 7:
        raise HdlcError("too short")
    fmt = int.from_bytes(raw[0:2], "big")
    if fmt >> 12 != 0xA or (fmt & 0x7FF) != len(raw):
        raise HdlcError("bad frame format or length")
    if crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        raise HdlcError("bad FCS")
    dest, pos = _address(raw, 2)
    src, pos = _address(raw, pos)
    control = raw[pos]
    pos += 1
    info = b""
    if len(raw) > pos + 2:
        if crc16(raw[:pos]) != int.from_bytes(raw[pos : pos + 2], "little"):
            raise HdlcError("bad HCS")
        info = raw[pos + 2 : -2]
    return Frame(dest, src, control, info, bool(fmt & 0x0800))


def next_frame(buf: bytearray) -> bytes | None:
    """Take the next frame (between its flags) out of ``buf``; ``None`` until one is complete.
    DLMS HDLC has no byte stuffing -- a frame's data and check sequences may hold 0x7E -- so a
    frame is delimited by its format field's length, and must end with a flag. Octets that
    cannot start a frame are dropped; the closing flag stays, it may open the next frame."""
    while True:
        start = buf.find(FLAG)
        if start < 0:
            buf.clear()
            return None
        del buf[:start]
        if len(buf) < 3:
            return None
        fmt = int.from_bytes(buf[1:3], "big")
        size = fmt & 0x7FF
        if fmt >> 12 != 0xA or size < 7:  # a flag that opens nothing (back-to-back flags)
            del buf[:1]
            continue
        if len(buf) < size + 2:
            return None
        if buf[size + 1] != FLAG:
            del buf[:1]
            continue
        raw = bytes(buf[1 : size + 1])
        del buf[: size + 1]
        return raw


class HdlcLine:
    """One serial line (an RS-485 bus, an optical probe) shared by its meters."""

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.lock = asyncio.Lock()  # one exchange on the line at a time
        self.users = 0
        self._input: _Input | None = None
        self.dropped = 0  # frames garbled or for someone else

    async def ensure_open(self) -> None:
        if self._input is None:
            self._input = _Input(await open_serial(self.settings))

    async def write(self, data: bytes) -> None:
        if self._input is None:
            raise DeviceUnavailable(f"{self.settings.port}: closed")
        await self._input.stream.write(data)

    async def frame(self, to: bytes) -> Frame:
        """The next valid frame addressed to ``to`` (flags and garbage between frames are
        skipped; the caller bounds the wait)."""
        if self._input is None:
            raise DeviceUnavailable(f"{self.settings.port}: closed")
        inp = self._input
        while True:
            raw = next_frame(inp.buf)
            if raw is None:
                if len(inp.buf) > MAX_BUFFER:
                    inp.buf.clear()
                await inp.more()
                continue
            try:
                frame = decode_frame(raw)
            except HdlcError:
                self.dropped += 1
                continue
            if frame.dest == to:
                return frame
            self.dropped += 1

    def discard_input(self) -> None:
        if self._input is not None:
            self._input.buf.clear()

    def close(self) -> None:
        inp, self._input = self._input, None
        if inp is not None:
            inp.stream.close()


class HdlcTransport:
    def __init__(self, line: HdlcLine, logical: int, physical: int | None, client: int) -> None:
        self.line = line
        self.server = server_address(logical, physical)
        self.client = client_address(client)
        self.ns = self.nr = 0
        self._open = False

    def _frame(self, control: int, info: bytes = b"", segmented: bool = False) -> bytes:
        return encode_frame(Frame(self.server, self.client, control, info, segmented))

    async def _ask(self, data: bytes, timeout_s: float) -> Frame:
        await self.line.write(data)
        try:
            async with asyncio.timeout(timeout_s):
                frame = await self.line.frame(self.client)
        except TimeoutError:
            raise DeviceUnavailable(f"{self.line.settings.port}: no answer within "
                                    f"{timeout_s:g} s") from None  # fmt: skip
        if frame.src != self.server:
            raise DeviceUnavailable("an answer from another station")
        return frame

    async def open(self, limit_s: float) -> None:
        if not self._open:  # a reconnect is not a new user of the line
            self.line.users += 1
            self._open = True
        async with self.line.lock:
            await self.line.ensure_open()
            self.line.discard_input()
            answer = await self._ask(self._frame(SNRM), limit_s)
        if answer.control != UA:
            raise DeviceUnavailable(f"SNRM answered with control {answer.control:#04x}, not UA")
        self.ns = self.nr = 0

    async def exchange(self, apdu: bytes, timeout_s: float) -> bytes:
        data = LLC_REQUEST + apdu
        async with self.line.lock:
            chunks = [data[i : i + MAX_INFO] for i in range(0, len(data), MAX_INFO)]
            for n, chunk in enumerate(chunks):
                last = n == len(chunks) - 1
                answer = await self._ask(self._iframe(chunk, not last), timeout_s)
                if not last and not _is_rr(answer.control):
                    raise DeviceUnavailable("a segment was not acknowledged with RR")
            out = bytearray()
            for _ in range(MAX_SEGMENTS):
                if answer.control & 1:  # not an I-frame
                    raise DeviceUnavailable(f"answer with control {answer.control:#04x}")
                self._received(answer.control)
                out += answer.info
                if not answer.segmented:
                    break
                answer = await self._ask(self._frame(RR_BASE | self.nr << 5), timeout_s)
            else:
                raise DeviceUnavailable(f"an answer of more than {MAX_SEGMENTS} segments")
        if not out.startswith(LLC_RESPONSE):
            raise DeviceUnavailable("the answer has no LLC response header")
        return bytes(out[3:])

    def _iframe(self, info: bytes, segmented: bool) -> bytes:
        control = (self.nr << 5) | 0x10 | (self.ns << 1)
        self.ns = (self.ns + 1) % 8
        return self._frame(control, info, segmented)

    def _received(self, control: int) -> None:
        ns = (control >> 1) & 7
        if ns != self.nr:
            raise DeviceUnavailable(f"out of sequence: N(S) {ns}, expected {self.nr}")
        self.nr = (self.nr + 1) % 8

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(DeviceUnavailable, OSError, TimeoutError):
            async with self.line.lock:
                await self._ask(self._frame(DISC), 0.5)
        self.line.users -= 1
        if self.line.users <= 0:
            self.line.close()


def _is_rr(control: int) -> bool:
    return control & 0x0F == 0x01


def hdlc_line(shared: dict[str, Any], settings: SerialSettings) -> HdlcLine:
    """The line for ``settings.port`` from the agent-owned ``shared`` map (made once);
    ``ValueError`` when another meter configured the same port with other line settings."""
    key = f"dlms:serial:{settings.port}"
    line = shared.get(key)
    if line is None:
        line = shared[key] = HdlcLine(settings)
    elif line.settings != settings:
        raise ValueError(f"{settings.port} is configured with other line settings by another "
                         "meter")  # fmt: skip
    assert isinstance(line, HdlcLine)
    return line
