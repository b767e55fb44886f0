"""A simulated DLMS/COSEM smart meter (IEC 62056-5-3 / 6-2, IDIS-like objects) on TCP.

Why it exists: no Python library serves a DLMS meter (gurux's Python server is broken inside
the library), so this implements the server side of the subset a data concentrator uses, from
the standard: the IEC 62056-47 TCP wrapper, association (AARQ/AARE) with no security, lowest
level security (password) or high level security suite 0 (HLS-GMAC: AES-GCM-128 challenge and
response, every APDU ciphered as general-glo-ciphering), GET (normal, with block transfer when
the answer exceeds the client's PDU size, with selective access by range on profile buffers),
SET (the clock) and release. The APDU *parsers* come from dlms-cosem; every answer is encoded
here (``_Enc``). Tests prove it with an independent client library (gurux-dlms).

Objects (logical name: class, attributes)::

    0.0.40.0.0.255   Association LN (15): 2 object list
    0.0.1.0.0.255    Clock (8): 2 time, 3 time zone, 4 status
    0.0.96.1.0.255   Data (1): 2 meter serial number
    1.0.1.8.0.255    Register (3): +A active energy import, Wh (scaler 0)
    1.0.2.8.0.255    Register (3): -A active energy export, Wh
    1.0.32.7.0.255   Register (3): voltage L1, V (scaler -1)
    1.0.31.7.0.255   Register (3): current L1, A (scaler -2)
    1.0.1.7.0.255    Register (3): active power import, W
    1.0.99.1.0.255   Profile generic (7): load profile 1, 15 min: clock, AMR status, +A, -A
    0.0.98.1.0.255   Profile generic (7): daily billing values at 00:00: clock, +A, -A
    0.0.99.98.0.255  Profile generic (7): standard event log: clock, event code
    0.0.99.98.1.255  Profile generic (7): fraud detection log: clock, event code

The meter's own clock is ``now() + offset`` plus a drift (``drift_s_per_day``); intervals are
captured at every period boundary of *meter* time since ``history_days`` ago. Energy values
follow a closed form of the interval index, so a client can check any entry it reads.

Scenario controls: ``power_outage(start, end)`` (meter time; intervals inside are not captured,
the first one after is flagged power down, the event log gets power down / up, and the meter
does not answer while ``powered`` is False), ``mark_invalid(end)`` (that entry flagged data not
valid), ``tamper(when)``, ``advance(seconds)`` (moves the meter's time, as hours passing), and
faults: ``fault = "drop"`` (closes the connection on the next request), ``"silent"`` (reads,
never answers), ``password`` changed (a client's LLS password is then wrong), ``reboot()``
(connections dropped, event log power down / up, invocation counter kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dlms_cosem import enumerations as en
from dlms_cosem import security
from dlms_cosem.connection import XDlmsApduFactory
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.conformance import Conformance

log = logging.getLogger(__name__)

UTC = dt.UTC
LOAD_PROFILE = "1.0.99.1.0.255"
BILLING_PROFILE = "0.0.98.1.0.255"
EVENT_LOG = "0.0.99.98.0.255"
FRAUD_LOG = "0.0.99.98.1.255"
CLOCK = "0.0.1.0.0.255"
ASSOCIATION = "0.0.40.0.0.255"
SERIAL = "0.0.96.1.0.255"
STATUS_OBIS = "0.0.96.10.1.255"
EVENT_CODE = "0.0.96.11.0.255"
FRAUD_CODE = "0.0.96.11.1.255"
#: AMR profile status bits (IDIS): power down, clock adjusted, data not valid
PDN, CAD, DNV = 0x80, 0x20, 0x04
#: IDIS standard event codes
POWER_DOWN, POWER_UP, CLOCK_OLD, CLOCK_NEW = 1, 2, 4, 5
COVER_REMOVED = 40
UNIT_WH, UNIT_W, UNIT_V, UNIT_A = 30, 27, 35, 33
MAX_APDU = 64 * 1024


def obis_bytes(code: str) -> bytes:
    return bytes(int(p) for p in code.split("."))


def obis_text(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


class _Enc:
    """A-XDR encoders for the meter's answers (written here, not shared with the driver)."""

    @staticmethod
    def length(n: int) -> bytes:
        if n < 0x80:
            return bytes([n])
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([0x80 | len(raw)]) + raw

    @classmethod
    def array(cls, items: list[bytes]) -> bytes:
        return b"\x01" + cls.length(len(items)) + b"".join(items)

    @classmethod
    def struct(cls, *items: bytes) -> bytes:
        return b"\x02" + cls.length(len(items)) + b"".join(items)

    @classmethod
    def octets(cls, raw: bytes) -> bytes:
        return b"\x09" + cls.length(len(raw)) + raw

    @staticmethod
    def u32(v: int) -> bytes:
        return b"\x06" + v.to_bytes(4, "big")

    @staticmethod
    def u16(v: int) -> bytes:
        return b"\x12" + v.to_bytes(2, "big")

    @staticmethod
    def u8(v: int) -> bytes:
        return b"\x11" + bytes([v])

    @staticmethod
    def i8(v: int) -> bytes:
        return b"\x0f" + v.to_bytes(1, "big", signed=True)

    @staticmethod
    def i16(v: int) -> bytes:
        return b"\x10" + v.to_bytes(2, "big", signed=True)

    @staticmethod
    def enum(v: int) -> bytes:
        return b"\x16" + bytes([v])

    @classmethod
    def datetime(cls, when: dt.datetime, status: int = 0) -> bytes:
        u = when.astimezone(UTC)
        raw = u.year.to_bytes(2, "big") + bytes(
            [u.month, u.day, u.isoweekday(), u.hour, u.minute, u.second, u.microsecond // 10_000]
        )
        return cls.octets(raw + b"\x00\x00" + bytes([status]))


def parse_datetime(raw: bytes) -> dt.datetime:
    year = int.from_bytes(raw[0:2], "big")
    deviation = int.from_bytes(raw[9:11], "big", signed=True)
    local = dt.datetime(year, raw[2], raw[3], raw[5], raw[6], raw[7], tzinfo=UTC)
    return local if deviation == -0x8000 else local + dt.timedelta(minutes=deviation)


@dataclass
class MeterState:
    """What the meter holds: its clock, profiles, logs (all in meter time, UTC)."""

    serial: str = "EDG0000001"
    period_s: int = 900
    history_days: float = 35
    drift_s_per_day: float = 0.0
    now: Callable[[], float] = time.time
    offset_s: float = 0.0
    outages: list[tuple[float, float]] = field(default_factory=list)
    invalid: set[int] = field(default_factory=set)  # interval end (epoch s) flagged DNV
    adjusted: set[int] = field(default_factory=set)  # interval ends flagged CAD
    events: list[tuple[float, int]] = field(default_factory=list)
    fraud: list[tuple[float, int]] = field(default_factory=list)
    born: float = field(init=False)

    def __post_init__(self) -> None:
        self.born = self.now()
        self.first_end = self._end_at(self.born - self.history_days * 86400)

    def time(self) -> float:
        """The meter's clock (epoch seconds)."""
        real = self.now()
        return real + self.offset_s + self.drift_s_per_day * (real - self.born) / 86400

    def set_time(self, when: float) -> None:
        old = self.time()
        self.offset_s += when - old
        self.events.append((old, CLOCK_OLD))
        self.events.append((when, CLOCK_NEW))
        self.adjusted.add(self._end_at(when) + self.period_s)

    def advance(self, seconds: float) -> None:
        """Hours pass for the meter (a test's way to let it record intervals)."""
        self.offset_s += seconds

    def _end_at(self, t: float) -> int:
        return int(t // self.period_s) * self.period_s

    def powered_at(self, t: float) -> bool:
        return not any(a < t <= b for a, b in self.outages)

    def power_outage(self, start: float, end: float) -> None:
        self.outages.append((start, end))
        self.events += [(start, POWER_DOWN), (end, POWER_UP)]

    def energy(self, end: int) -> tuple[int, int]:
        """(+A, -A) in Wh at an interval end: a closed form a test can check."""
        k = end // self.period_s
        return 1_000_000 + 250 * k % 10**9 + (k * k) % 97, 50 * k % 10**9 + k % 13

    def load_profile(self, start: float, stop: float) -> list[tuple[int, int, int, int]]:
        """(end, status, +A, -A) of every captured interval with start <= end <= stop."""
        now_end = self._end_at(self.time())
        first = max(self.first_end, -(-int(start) // self.period_s) * self.period_s)
        rows = []
        after_outage = False
        for end in range(first, min(int(stop), now_end) + 1, self.period_s):
            if not self.powered_at(end):
                after_outage = True
                continue
            status = 0
            if after_outage or not self.powered_at(end - self.period_s):
                status |= PDN
            after_outage = False
            if end in self.invalid:
                status |= DNV
            if end in self.adjusted:
                status |= CAD
            rows.append((end, status, *self.energy(end)))
        return rows

    def billing(self, start: float, stop: float) -> list[tuple[int, int, int]]:
        day = 86400
        now = self.time()
        first = max(int(self.first_end // day + 1) * day, -(-int(start) // day) * day)
        return [(t, *self.energy(t)) for t in range(first, int(min(stop, now)) + 1, day)]

    def log(self, which: str, start: float, stop: float) -> list[tuple[float, int]]:
        entries = self.events if which == EVENT_LOG else self.fraud
        now = self.time()
        # the meter keeps event times to the second, as it sends them
        return sorted((int(t), c) for t, c in entries if start <= int(t) <= min(stop, now))

    def registers(self) -> dict[str, tuple[int, int, int]]:
        """obis -> (value, scaler, unit) now."""
        t = self.time()
        plus, minus = self.energy(self._end_at(t))
        frac = int((t % self.period_s) / self.period_s * 250)
        k = int(t // 60)
        return {
            "1.0.1.8.0.255": (plus + frac, 0, UNIT_WH),
            "1.0.2.8.0.255": (minus, 0, UNIT_WH),
            "1.0.32.7.0.255": (2300 + k % 17, -1, UNIT_V),
            "1.0.31.7.0.255": (520 + k % 31, -2, UNIT_A),
            "1.0.1.7.0.255": (1000 + 13 * (k % 11), 0, UNIT_W),
        }


@dataclass
class _Profile:
    columns: list[tuple[int, str, int]]  # (class, obis, attribute) of the capture objects
    period_s: int


class DlmsMeter:
    """One meter served on ``127.0.0.1:port`` (server wPort 1; any client wPort).

    ``security``: ``"none"``, ``"lls"`` (``password``) or ``"hls-gmac"`` (``ek``/``ak``, 16
    octets each; the client must cipher every APDU)."""

    def __init__(
        self,
        port: int = 0,
        *,
        state: MeterState | None = None,
        security: str = "lls",
        password: bytes = b"12345678",
        ek: bytes | None = None,
        ak: bytes | None = None,
        system_title: bytes = b"EDG\x00\x00\x00\x00\x01",
        host: str = "127.0.0.1",
    ) -> None:
        self.host, self.port = host, port
        self.state = state or MeterState()
        self.security, self.password = security, password
        self.ek, self.ak, self.system_title = ek, ak, system_title
        self.invocation_counter = 1
        #: the highest invocation counter received from each client SAP (kept across
        #: associations; readable as 0.0.43.1.<client>.255 by the public client)
        self.client_ics: dict[int, int] = {}
        self.fault: str | None = None
        self.delay_s = 0.0  # every answer this late (a slow meter, a slow line)
        self.powered = True
        self._down_at = 0.0
        self.requests = 0
        self.associations = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        p = self.state.period_s
        self.profiles = {
            LOAD_PROFILE: _Profile(
                [
                    (8, CLOCK, 2),
                    (1, STATUS_OBIS, 2),
                    (3, "1.0.1.8.0.255", 2),
                    (3, "1.0.2.8.0.255", 2),
                ],
                p,
            ),
            BILLING_PROFILE: _Profile(
                [(8, CLOCK, 2), (3, "1.0.1.8.0.255", 2), (3, "1.0.2.8.0.255", 2)], 86400
            ),
            EVENT_LOG: _Profile([(8, CLOCK, 2), (1, EVENT_CODE, 2)], 0),
            FRAUD_LOG: _Profile([(8, CLOCK, 2), (1, FRAUD_CODE, 2)], 0),
        }

    async def start(self) -> DlmsMeter:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> DlmsMeter:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def drop_connections(self) -> None:
        for w in list(self._writers):
            w.close()

    def power_down(self) -> None:
        """The meter loses its supply: it stops answering and logs the power failure."""
        self.powered = False
        self._down_at = self.state.time()
        self.state.events.append((self._down_at, POWER_DOWN))
        self.drop_connections()

    def power_up(self) -> None:
        """Supply back: the intervals in between were not captured, the restore is logged."""
        if self.powered:
            return
        self.powered = True
        now = self.state.time()
        self.state.outages.append((self._down_at, now))
        self.state.events.append((now, POWER_UP))

    def reboot(self) -> None:
        t = self.state.time()
        self.state.events += [(t, POWER_DOWN), (t + 1, POWER_UP)]
        self.drop_connections()

    def notification(self, body: bytes) -> bytes:
        """A data-notification APDU with ``body`` (one encoded Data), ciphered with the global
        key when the meter's security is HLS (general-glo-ciphering, its system title)."""
        now = dt.datetime.fromtimestamp(self.state.time(), UTC)
        plain = b"\x0f\x00\x00\x00\x01" + _Enc.datetime(now)[1:] + body
        return self.cipher(plain) if self.security == "hls-gmac" else plain

    def cipher(self, plain: bytes) -> bytes:
        """``plain`` as general-glo-ciphering (suite 0, authenticated and encrypted): the
        system title, then SC, the invocation counter and the ciphertext as an octet string."""
        assert self.ek is not None and self.ak is not None
        sc = security.SecurityControlField(0, authenticated=True, encrypted=True)
        ic = self.invocation_counter
        self.invocation_counter += 1
        text = sc.to_bytes() + ic.to_bytes(4, "big")
        text += security.encrypt(sc, self.system_title, ic, self.ek, plain, self.ak)
        return (b"\xdb" + _Enc.length(len(self.system_title)) + self.system_title
                + _Enc.length(len(text)) + text)  # fmt: skip

    async def push(self, host: str, port: int, apdu: bytes | None = None) -> None:
        """Call the data concentrator and send one push (default: a last gasp -- the meter's
        serial number and the power-down event code)."""
        if apdu is None:
            e = _Enc
            apdu = self.notification(e.struct(e.octets(self.state.serial.encode()),
                                              e.u16(POWER_DOWN)))  # fmt: skip
        _reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x00\x01\x00\x01\x00\x66" + len(apdu).to_bytes(2, "big") + apdu)
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    def tamper(self, when: float | None = None) -> None:
        self.state.fraud.append((self.state.time() if when is None else when, COVER_REMOVED))

    # -- the session -------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        session: _Session | None = None
        try:
            while True:
                header = await reader.readexactly(8)
                size = int.from_bytes(header[6:8], "big")
                apdu = await reader.readexactly(size)
                if not self.powered or self.fault == "silent":
                    continue
                if self.fault == "drop":
                    break
                self.requests += 1
                if session is None:  # the client's wPort: 16 is the public client
                    session = _Session(self, client=int.from_bytes(header[2:4], "big"))
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                answer = session.handle(apdu)
                if answer is None:
                    break
                writer.write(header[0:2] + header[4:6] + header[2:4]
                             + len(answer).to_bytes(2, "big") + answer)  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("simulated DLMS meter: request failed")
        finally:
            self._writers.discard(writer)
            writer.close()

    # -- attribute access ---------------------------------------------------------------------
    def get(self, cls: int, obis: str, attr: int, rng: RangeDescriptor | None) -> bytes | None:
        st, e = self.state, _Enc
        if obis == CLOCK and cls == 8:
            if attr == 2:
                return e.datetime(dt.datetime.fromtimestamp(st.time(), UTC))
            if attr == 3:
                return e.i16(0)
            if attr == 4:
                return e.u8(0)
        if obis == SERIAL and attr == 2:
            return e.octets(st.serial.encode())
        if obis.startswith("0.0.43.1.") and cls == 1 and attr == 2:  # frame counters
            return e.u32(max(0, self.client_ics.get(int(obis.split(".")[4]), 0)))
        regs = st.registers()
        if obis in regs and cls == 3:
            value, scaler, unit = regs[obis]
            if attr == 2:
                return e.u32(value)
            if attr == 3:
                return e.struct(e.i8(scaler), e.enum(unit))
        if obis == ASSOCIATION and attr == 2:
            return self._object_list()
        if obis in self.profiles and cls == 7:
            return self._profile(obis, attr, rng)
        return None

    def _object_list(self) -> bytes:
        e = _Enc
        objects = [(15, ASSOCIATION), (8, CLOCK), (1, SERIAL)]
        objects += [(3, code) for code in self.state.registers()]
        objects += [(7, code) for code in self.profiles]
        rights = e.struct(e.array([]), e.array([]))
        return e.array(
            [e.struct(e.u16(c), e.u8(0), e.octets(obis_bytes(o)), rights) for c, o in objects]
        )

    def _profile(self, obis: str, attr: int, rng: RangeDescriptor | None) -> bytes | None:
        e, _st, prof = _Enc, self.state, self.profiles[obis]
        if attr == 3:
            return e.array([e.struct(e.u16(c), e.octets(obis_bytes(o)), e.i8(a), e.u16(0))
                            for c, o, a in prof.columns])  # fmt: skip
        if attr == 4:
            return e.u32(prof.period_s)
        start, stop = -1e12, 1e12
        if rng is not None:
            start, stop = rng.from_value.timestamp(), rng.to_value.timestamp()
        rows = self._rows(obis, start, stop)
        if attr == 2:
            return e.array(rows)
        if attr == 7:
            return e.u32(len(rows))
        if attr == 8:
            return e.u32(len(rows) + 1000)
        return None

    def _rows(self, obis: str, start: float, stop: float) -> list[bytes]:
        e, st = _Enc, self.state
        at = lambda t: e.datetime(dt.datetime.fromtimestamp(t, UTC))  # noqa: E731
        if obis == LOAD_PROFILE:
            return [e.struct(at(t), e.u8(s), e.u32(p), e.u32(m))
                    for t, s, p, m in st.load_profile(start, stop)]  # fmt: skip
        if obis == BILLING_PROFILE:
            return [e.struct(at(t), e.u32(p), e.u32(m)) for t, p, m in st.billing(start, stop)]
        return [e.struct(at(t), e.u16(c)) for t, c in st.log(obis, start, stop)]


class _Session:
    """One client connection: association state, ciphering, pending block transfer."""

    def __init__(self, meter: DlmsMeter, *, client: int = 1) -> None:
        self.m = meter
        self.client = client
        self.public = client == 16  # the public client: no security, reads only
        self.associated = False
        self.hls_pending = False
        self.ciphered = False
        self.client_title = b""
        self.challenge = b""  # server to client (StoC)
        self.c2s = b""
        self.max_pdu = 65535
        self.blocks: list[bytes] = []
        self.invoke = xdlms.InvokeIdAndPriority(1, True, True)

    def handle(self, apdu: bytes) -> bytes | None:
        if len(apdu) > MAX_APDU or not apdu:
            return None
        tag = apdu[0]
        if tag == 0x60:
            return self._associate(apdu)
        if tag == 0x62:  # RLRQ
            self.associated = self.hls_pending = False
            return acse.ReleaseResponse(reason=en.ReleaseResponseReason.NORMAL).to_bytes()
        if tag == 219:
            if not self.ciphered:
                return None
            return self._deciphered(apdu)
        if self.ciphered or not self.associated:
            return xdlms.ExceptionResponse(
                state_error=en.StateException.SERVICE_NOT_ALLOWED,
                service_error=en.ServiceException.OPERATION_NOT_POSSIBLE,
            ).to_bytes()
        return self._service(XDlmsApduFactory.apdu_from_bytes(apdu))

    def _deciphered(self, apdu: bytes) -> bytes | None:
        m = self.m
        g = xdlms.GeneralGlobalCipher.from_bytes(apdu)
        if g.invocation_counter <= self.m.client_ics.get(self.client, -1):
            return None  # a replayed or old counter: the meter refuses (drops the link)
        self.m.client_ics[self.client] = g.invocation_counter
        assert m.ek is not None and m.ak is not None
        plain = security.decrypt(g.security_control, self.client_title, g.invocation_counter,
                                 m.ek, g.ciphered_text, m.ak)  # fmt: skip
        answer = self._service(XDlmsApduFactory.apdu_from_bytes(plain))
        return None if answer is None else m.cipher(answer)

    def _associate(self, apdu: bytes) -> bytes:
        m = self.m
        aarq = acse.ApplicationAssociationRequest.from_bytes(apdu)
        mech = aarq.authentication
        content = aarq.user_information.content if aarq.user_information else None
        ok = False
        if m.security == "none" or self.public:
            ok = mech in (None, en.AuthenticationMechanism.NONE)
        elif m.security == "lls":
            ok = mech == en.AuthenticationMechanism.LLS and aarq.authentication_value == m.password
        elif m.security == "hls-gmac" and mech == en.AuthenticationMechanism.HLS_GMAC:
            ok = isinstance(content, xdlms.GlobalCipherInitiateRequest) and bool(aarq.system_title)
        if ok and isinstance(content, xdlms.GlobalCipherInitiateRequest):
            assert m.ek is not None and m.ak is not None
            self.client_title = aarq.system_title or b""
            try:
                plain = security.decrypt(content.security_control, self.client_title,
                                         content.invocation_counter, m.ek, content.ciphered_text,
                                         m.ak)  # fmt: skip
                request = xdlms.InitiateRequest.from_bytes(plain)
            except Exception:
                ok = False
            # the client's frame counter must rise across associations, as the meter keeps it
            if ok and content.invocation_counter <= m.client_ics.get(self.client, -1):
                ok = False
            if ok:
                m.client_ics[self.client] = content.invocation_counter
        elif ok and isinstance(content, xdlms.InitiateRequest):
            request = content
        else:
            ok = False
        if not ok:
            return acse.ApplicationAssociationResponse(
                result=en.AssociationResult.REJECTED_PERMANENT,
                result_source_diagnostics=en.AcseServiceUserDiagnostics.AUTHENTICATION_FAILED,
            ).to_bytes()
        self.max_pdu = max(64, min(request.client_max_receive_pdu_size, 65535))
        initiate = xdlms.InitiateResponse(
            negotiated_conformance=Conformance(
                general_protection=m.security == "hls-gmac", block_transfer_with_get_or_read=True,
                get=True, set=True, action=True, selective_access=True,
                multiple_references=False, priority_management_supported=True),
            server_max_receive_pdu_size=1024,
        )  # fmt: skip
        self.m.associations += 1
        if m.security != "hls-gmac" or self.public:
            self.associated = True
            return acse.ApplicationAssociationResponse(
                result=en.AssociationResult.ACCEPTED,
                result_source_diagnostics=en.AcseServiceUserDiagnostics.NULL,
                authentication=en.AuthenticationMechanism.LLS
                if m.security == "lls" and not self.public
                else None,
                user_information=acse.UserInformation(content=initiate),
            ).to_bytes()
        self.ciphered = self.hls_pending = True
        self.c2s = aarq.authentication_value or b""
        self.challenge = os.urandom(16)
        sc = security.SecurityControlField(0, authenticated=True, encrypted=True)
        ic = m.invocation_counter
        m.invocation_counter += 1
        assert m.ek is not None and m.ak is not None
        text = security.encrypt(sc, m.system_title, ic, m.ek, initiate.to_bytes(), m.ak)
        return acse.ApplicationAssociationResponse(
            result=en.AssociationResult.ACCEPTED,
            result_source_diagnostics=en.AcseServiceUserDiagnostics.AUTHENTICATION_REQUIRED,
            ciphered=True,
            authentication=en.AuthenticationMechanism.HLS_GMAC,
            system_title=m.system_title,
            authentication_value=self.challenge,
            user_information=acse.UserInformation(
                content=xdlms.GlobalCipherInitiateResponse(
                    security_control=sc, invocation_counter=ic, ciphered_text=text)),
        ).to_bytes()  # fmt: skip

    def _service(self, request: object) -> bytes | None:
        if self.hls_pending:
            return self._hls_reply(request)
        if not self.associated:
            return None
        if isinstance(request, xdlms.GetRequestNormal):
            return self._get(request)
        if isinstance(request, xdlms.GetRequestNext):
            return self._next_block(request.block_number)
        if isinstance(request, xdlms.SetRequestNormal):
            return self._set(request)
        return None

    def _hls_reply(self, request: object) -> bytes | None:
        m = self.m
        if not isinstance(request, xdlms.ActionRequestNormal) or not request.data:
            return None
        assert m.ek is not None and m.ak is not None
        reply = request.data[2:]  # octet-string tag and length (17 octets < 0x80)
        sc = security.SecurityControlField.from_bytes(reply[0:1])
        ic = int.from_bytes(reply[1:5], "big")
        expected = security.gmac(sc, self.client_title, ic, m.ek, m.ak, self.challenge)
        if reply[5:] != expected:
            return xdlms.ActionResponseNormal(
                status=en.ActionResultStatus.READ_WRITE_DENIED,
                invoke_id_and_priority=request.invoke_id_and_priority,
            ).to_bytes()
        self.hls_pending, self.associated = False, True
        auth = security.SecurityControlField(0, authenticated=True, encrypted=False)
        ic = m.invocation_counter
        m.invocation_counter += 1
        tag = security.gmac(auth, m.system_title, ic, m.ek, m.ak, self.c2s)
        return xdlms.ActionResponseNormalWithData(
            status=en.ActionResultStatus.SUCCESS,
            data=_Enc.octets(auth.to_bytes() + ic.to_bytes(4, "big") + tag),
            invoke_id_and_priority=request.invoke_id_and_priority,
        ).to_bytes()

    def _get(self, request: xdlms.GetRequestNormal) -> bytes:
        a = request.cosem_attribute
        self.invoke = request.invoke_id_and_priority
        rng = request.access_selection if isinstance(request.access_selection,
                                                     RangeDescriptor) else None  # fmt: skip
        data = self.m.get(int(a.interface), obis_text(a.instance.to_bytes()), a.attribute, rng)
        invoke = self.invoke.to_bytes()
        if data is None:  # get-response-normal, data-access-result object-undefined
            return b"\xc4\x01" + invoke + b"\x01" + bytes([en.DataAccessResult.OBJECT_UNDEFINED])
        if len(data) + 8 <= self.max_pdu:
            return b"\xc4\x01" + invoke + b"\x00" + data
        room = self.max_pdu - 16
        self.blocks = [data[i : i + room] for i in range(0, len(data), room)]
        return self._next_block(0) or b""

    def _next_block(self, acked: int) -> bytes | None:
        """get-response-with-datablock: last-block, block-number, raw-data (octet string)."""
        if acked >= len(self.blocks):
            return None
        number = acked + 1
        chunk = self.blocks[acked]
        last = number == len(self.blocks)
        if last:
            self.blocks = []
        return (b"\xc4\x02" + self.invoke.to_bytes() + bytes([last]) + number.to_bytes(4, "big")
                + b"\x00" + _Enc.length(len(chunk)) + chunk)  # fmt: skip

    def _set(self, request: xdlms.SetRequestNormal) -> bytes:
        a = request.cosem_attribute
        ok = obis_text(a.instance.to_bytes()) == CLOCK and a.attribute == 2 and not self.public
        if ok and request.data[:2] == b"\x09\x0c":
            self.m.state.set_time(parse_datetime(request.data[2:14]).timestamp())
            result = en.DataAccessResult.SUCCESS
        else:
            result = en.DataAccessResult.READ_WRITE_DENIED
        return xdlms.SetResponseNormal(result=result,
                                       invoke_id_and_priority=request.invoke_id_and_priority
                                       ).to_bytes()  # fmt: skip
