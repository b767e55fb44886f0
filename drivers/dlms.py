"""DLMS/COSEM client (IEC 62056-5-3, 6-2) over TCP (the IEC 62056-47 wrapper) or HDLC on a
serial line (IEC 62056-46, ``drivers.dlms_link``), on dlms-cosem.

Why dlms-cosem: it is MIT, pure Python, typed (attrs), and *sans-io*: ``DlmsConnection`` builds
and parses APDUs (AARQ/AARE, GET/SET/ACTION, release), ciphers them (general-glo-ciphering,
suite 0) and runs the HLS-GMAC state machine, while the bytes move through whatever transport
the caller owns -- here asyncio streams, so hundreds of meters share one event loop. (Its own
blocking client and a few encoders are bypassed where they fail: see docs/design-notes.md.)

One device is one meter (one logical device, server wPort ``server_address``). ``connect``
opens the link and associates:

* ``security = "none"`` -- no authentication (the public client, usually read-only);
* ``"lls"`` -- lowest level security: the password from ``password_file``;
* ``"hls-gmac"`` -- high level security, suite 0: AES-GCM-128 with the global unicast
  encryption key ``key_file`` and authentication key ``auth_key_file``; the challenge and
  response is checked both ways and every APDU is ciphered (authenticated and encrypted).

Secret files must be readable by their owner only (0600); they are read when the config is
loaded (a bad one is a config error naming the file) and never logged. With HLS the client
invocation counter goes on from the meter's own frame counter for this client (IDIS
``0.0.43.1.<client>.255``, read through the public client before each association,
``read_frame_counter``), so a restarted agent or a second DCU never reuses one; a meter
without that object gets one counted from the clock (16 a second since 2024).

Points (``address``): ``[class:]A.B.C.D.E.F[:attribute]`` -- a register (class 3, the default)
by OBIS code, value attribute 2 multiplied by the scaler of its ``scaler_unit`` (attribute 3,
read once per association); ``1:`` a data object, ``4:`` an extended register. A register the
meter refuses is ``invalid``, ``badReference``; a meter that does not answer is
``DeviceUnavailable`` (the runtime backs off).

As a ``MeterSource`` (``drivers.metering``) it reads the meter clock, sets it (a SET of
0.0.1.0.0.255 attribute 2) and reads profile generic buffers by date range (selective access
by ``range_descriptor`` on the clock column), with the capture objects (attribute 3) and the
capture period (attribute 4) read once per association.

What it leaves to others: what to read when and what to publish (``agent.runtime.ami``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import structlog
from dlms_cosem import cosem, enumerations, exceptions, security
from dlms_cosem import state as dlms_state
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.protocol import acse, xdlms
from pydantic import Field, model_validator

from edgetwin.core.errors import DeviceError, DeviceRejected, DeviceUnavailable
from edgetwin.core.files import read_secret
from edgetwin.core.models import BAD_REFERENCE, GOOD, Reading, Value
from edgetwin.core.points import PointSpec
from edgetwin.drivers.base import DeviceConfig, Host
from edgetwin.drivers.dlms_axdr import AxdrError, cosem_datetime, decode, octets_at
from edgetwin.drivers.dlms_link import HdlcTransport, Transport, WrapperTransport, hdlc_line
from edgetwin.drivers.metering import (
    OBIS_PATTERN,
    Column,
    MeteringSettings,
    Profile,
    ProfileRow,
    Push,
    Register,
)
from edgetwin.drivers.streams import SerialSettings

log = logging.getLogger(__name__)

# dlms-cosem logs every APDU through structlog at info level: far too much for a DCU, and a
# cost per request. Only its warnings and errors pass.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

ADDRESS = re.compile(r"^(?:(\d{1,3}):)?(\d{1,3}(?:\.\d{1,3}){5})(?::(\d{1,3}))?$")
CLOCK_OBIS = "0.0.1.0.0.255"
ASSOCIATION_OBIS = "0.0.40.0.0.255"
PUBLIC_CLIENT = 16
MAX_ANSWER = 8 * 1024 * 1024  # a profile read larger than this is refused (8 MiB)
IC_EPOCH = 1_704_067_200  # 2024-01-01: invocation counters count 16 a second from here
#: DLMS unit enumeration (IEC 62056-6-2 table 4) for the units meters use
UNITS = {1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "deg", 9: "degC",
         23: "Pa", 25: "m3", 27: "W", 28: "VA", 29: "var", 30: "Wh", 31: "VAh", 32: "varh",
         33: "A", 34: "C", 35: "V", 44: "Hz", 254: "other", 255: "count"}  # fmt: skip
STATUS_OBIS = re.compile(r"^0\.\d+\.96\.10\.\d+\.\d+$")  # AMR profile status (IDIS)


def parse_address(text: str) -> tuple[int, str, int]:
    """``(class_id, obis, attribute)`` of a point address; ``ValueError`` names the form."""
    m = ADDRESS.match(text)
    if not m or any(int(p) > 255 for p in m.group(2).split(".")):
        raise ValueError(
            f"DLMS address must be [class:]A.B.C.D.E.F[:attribute] like 1.0.1.8.0.255, got {text!r}"
        )
    class_id = int(m.group(1) or 3)
    if class_id not in enumerations.CosemInterface._value2member_map_:
        raise ValueError(f"DLMS address {text!r}: {class_id} is not a COSEM interface class")
    return class_id, m.group(2), int(m.group(3) or 2)


def obis(code: str) -> cosem.Obis:
    return cosem.Obis(*(int(p) for p in code.split(".")))


def obis_text(raw: Any) -> str:
    if not isinstance(raw, bytes) or len(raw) != 6:
        raise AxdrError(f"not a logical name: {raw!r}")
    return ".".join(str(b) for b in raw)


def scaled(value: Any, scaler: int) -> Any:
    """A register value times 10^scaler (ints stay ints for scaler >= 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if scaler >= 0:
        return value * 10**scaler
    return round(value * 10.0**scaler, -scaler)


class DlmsConfig(DeviceConfig, MeteringSettings):
    """A meter's link, association and (``MeteringSettings``) what is collected. TCP (``host``,
    ``port``) or HDLC on ``serial_port`` (``physical_address`` tells the meter on the bus)."""

    host: Host | None = None
    port: int = Field(4059, ge=1, le=65535)
    serial_port: str | None = Field(None, pattern=r"^/[\w./-]+$")
    baudrate: int = Field(9600, ge=300, le=115_200)
    physical_address: int | None = Field(None, ge=16, le=16383, description="HDLC lower address")
    client_address: int = Field(1, ge=1, le=127, description="client wPort / SAP")
    server_address: int = Field(1, ge=1, le=16383, description="server wPort (logical device)")
    security: Literal["none", "lls", "hls-gmac"] = "lls"
    password_file: Path | None = None
    key_file: Path | None = Field(None, description="global unicast encryption key (16 octets)")
    auth_key_file: Path | None = Field(None, description="authentication key (16 octets)")
    system_title: str = Field("4544475457494e00", pattern=r"^[0-9A-Fa-f]{16}$")
    read_frame_counter: bool = Field(
        True, description="hls-gmac: go on from the meter's frame counter (public client)"
    )
    max_pdu: int = Field(1024, ge=64, le=65535, description="client max receive PDU size")
    timeout_s: float = Field(5.0, ge=0.1, le=120)
    poll_interval_s: float = Field(900.0, ge=1, le=86_400)

    @model_validator(mode="after")
    def _secrets_named(self) -> DlmsConfig:
        if (self.host is None) == (self.serial_port is None):
            raise ValueError("give host (TCP) or serial_port (HDLC), one of them")
        if self.security == "lls" and self.password_file is None:
            raise ValueError("security 'lls' needs password_file")
        if self.security == "hls-gmac" and (self.key_file is None or self.auth_key_file is None):
            raise ValueError("security 'hls-gmac' needs key_file and auth_key_file")
        for log_obis in self.event_logs:
            if not re.fullmatch(OBIS_PATTERN, log_obis):
                raise ValueError(f"event_logs: {log_obis!r} is not an OBIS code A.B.C.D.E.F")
        load_secrets(self)  # a missing, readable-by-others or malformed one: named here
        return self


def load_secrets(c: DlmsConfig) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(password, encryption key, authentication key) the config's security needs, from
    their files; ``ValueError`` naming the setting and the file otherwise."""
    password = ek = ak = None
    name, path = "", None
    try:
        if c.security == "lls" and c.password_file is not None:
            name, path = "password_file", c.password_file
            password = read_secret(path).rstrip(b"\r\n")
        if c.security == "hls-gmac" and c.key_file is not None and c.auth_key_file is not None:
            name, path = "key_file", c.key_file
            ek = _key(path)
            name, path = "auth_key_file", c.auth_key_file
            ak = _key(path)
    except OSError as err:
        raise ValueError(f"{name}: {path}: {err.strerror}") from None
    return password, ek, ak


def _key(path: Path) -> bytes:
    raw = read_secret(path).strip()
    text = raw.decode("ascii", "replace")
    if re.fullmatch(r"[0-9A-Fa-f]{32}", text):
        return bytes.fromhex(text)
    if len(raw) == 16:
        return raw
    raise ValueError(f"{path}: a key must be 16 octets (or 32 hex digits)")


class DlmsDriver:
    """``dlms``: see the module docstring."""

    config_model: ClassVar[type[DeviceConfig]] = DlmsConfig
    source_timestamps = "sample"

    def __init__(
        self, config: DlmsConfig, points: Sequence[PointSpec], shared: dict[str, Any] | None = None
    ) -> None:
        self._config = c = config
        self._points = {p.key: parse_address(str(p.address)) for p in points}
        self._password, self._ek, self._ak = load_secrets(c)  # read again: it may have changed
        self._title = bytes.fromhex(c.system_title)
        self._ic = 0
        self._transport: Transport
        if c.serial_port is not None:
            line = hdlc_line(shared if shared is not None else {},
                             SerialSettings(c.serial_port, c.baudrate))  # fmt: skip
            self._transport = HdlcTransport(line, c.server_address, c.physical_address,
                                            c.client_address)  # fmt: skip
        else:
            assert c.host is not None
            self._transport = WrapperTransport(c.host, c.port, c.client_address, c.server_address)
        self._linked = False
        self._meter_title: bytes | None = None  # learned at association (HLS)
        self._counter_warned = False
        self._push_ic = -1  # the last invocation counter of a ciphered push
        self._conn: DlmsConnection | None = None
        self._scalers: dict[tuple[int, str], tuple[int, str | None]] = {}
        self._shapes: dict[str, tuple[int, list[tuple[int, str, int]]]] = {}
        self._stats = {"requests": 0, "associations": 0, "rows": 0}
        self.offset_s: float | None = None  # meter clock - agent clock at the last association

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    # -- link and association ------------------------------------------------------------------
    def _authentication(self) -> Any:
        if self._config.security == "lls":
            return security.LowLevelSecurityAuthentication(secret=self._password)
        if self._config.security == "hls-gmac":
            return security.HighLevelSecurityGmacAuthentication(challenge_length=16)
        return security.NoSecurityAuthentication()

    async def connect(self) -> None:
        c = self._config
        await self.close()  # a reconnect never leaves the old link open
        counter = int((time.time() - IC_EPOCH) * 16)
        if c.security == "hls-gmac" and c.read_frame_counter:
            counter = await self._frame_counter() + 1
        self._ic = max(self._ic + 1, counter) & 0xFFFFFFFF
        await self._transport.open(c.connect_timeout_s)
        self._linked = True
        self._conn = DlmsConnection(
            authentication=self._authentication(),
            client_system_title=self._title,
            global_encryption_key=self._ek,
            global_authentication_key=self._ak,
            client_invocation_counter=self._ic,
            max_pdu_size=c.max_pdu,
        )
        self._scalers.clear()
        self._shapes.clear()
        await self._associate()
        self._stats["associations"] += 1

    def _public_transport(self) -> Transport:
        c = self._config
        if isinstance(self._transport, HdlcTransport):
            return HdlcTransport(self._transport.line, c.server_address, c.physical_address,
                                 PUBLIC_CLIENT)  # fmt: skip
        assert c.host is not None
        return WrapperTransport(c.host, c.port, PUBLIC_CLIENT, c.server_address)

    async def _frame_counter(self) -> int:
        """The meter's frame counter for our client (``0.0.43.1.<client>.255``, IDIS), read
        through the public client: the invocation counter to go on from, so that the meter
        never sees one it has seen (a restarted agent, another DCU before us). A meter
        without it: the counter comes from the clock (16 a second since 2024)."""
        c = self._config
        own = self._transport, self._conn, self._linked
        self._transport = self._public_transport()
        self._conn = DlmsConnection(
            authentication=security.NoSecurityAuthentication(),
            client_system_title=self._title,
            max_pdu_size=c.max_pdu,
        )
        try:
            await self._transport.open(c.connect_timeout_s)
            self._linked = True
            aare = await self._request(self._conn.get_aarq())
            if getattr(aare, "result", None) is not enumerations.AssociationResult.ACCEPTED:
                raise DeviceRejected("the public client is not accepted")
            value = await self.get_value(1, f"0.0.43.1.{c.client_address}.255", 2)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DeviceRejected(f"frame counter {value!r} is not a counter")
            return value
        except DeviceRejected as err:
            if not self._counter_warned:
                log.warning("%s: frame counter not readable (%s); counting from the clock",
                            c.name, err)  # fmt: skip
                self._counter_warned = True
            return int((time.time() - IC_EPOCH) * 16)
        finally:
            public_conn = self._conn
            if public_conn.state.current_state == dlms_state.READY:
                try:
                    await self._request(public_conn.get_rlrq())
                except DeviceError:
                    pass
            await self._transport.close()
            self._transport, self._conn, self._linked = own

    async def _associate(self) -> None:
        conn = self._conn
        assert conn is not None
        aare = await self._request(conn.get_aarq())
        if not isinstance(aare, acse.ApplicationAssociationResponse):
            raise DeviceUnavailable(f"no AARE to the association request ({type(aare).__name__})")
        if aare.result is not enumerations.AssociationResult.ACCEPTED:
            why = getattr(aare.result_source_diagnostics, "name", aare.result_source_diagnostics)
            raise DeviceRejected(f"association refused: {why}", answer=str(why))
        if conn.state.current_state == dlms_state.SHOULD_SEND_HLS_SEVER_CHALLENGE_RESULT:
            reply = conn.authentication.hls_generate_reply_data(conn)
            method = cosem.CosemMethod(enumerations.CosemInterface.ASSOCIATION_LN,
                                       obis(ASSOCIATION_OBIS), 1)  # fmt: skip
            answer = await self._request(xdlms.ActionRequestNormal(
                cosem_method=method, data=b"\x09" + bytes([len(reply)]) + reply))  # fmt: skip
            if not isinstance(answer, xdlms.ActionResponseNormalWithData):
                raise DeviceRejected("HLS: the meter refused our response to its challenge",
                                     answer="authentication failure")  # fmt: skip
            self._meter_title = conn.meter_system_title
            if conn.state.current_state != dlms_state.READY:  # it checked the meter's answer
                raise DeviceRejected("HLS: the meter's answer to our challenge is wrong",
                                     answer="authentication failure")  # fmt: skip

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if not self._linked:
            return
        if conn is not None and conn.state.current_state == dlms_state.READY:
            try:
                async with asyncio.timeout(min(self._config.timeout_s, 2)):
                    await self._request(conn.get_rlrq(), conn=conn)
            except Exception:
                pass  # releasing is a courtesy; the link closes anyway
        self._linked = False
        await self._transport.close()

    async def _request(self, apdu: Any, *, conn: DlmsConnection | None = None) -> Any:
        """Send one APDU and return the parsed (deciphered) answer."""
        conn = conn or self._conn
        if conn is None or not self._linked:
            raise DeviceUnavailable("not connected")
        try:
            data = conn.send(apdu)
        except (exceptions.LocalDlmsProtocolError, ValueError) as err:
            raise DeviceUnavailable(f"request refused by the DLMS state machine: {err}") from None
        self._stats["requests"] += 1
        body = await self._transport.exchange(data, self._config.timeout_s)
        try:
            conn.receive_data(body)
            return conn.next_event()
        except Exception as err:  # a garbled, forged or replayed answer: never trusted
            conn.clear_buffer()
            raise DeviceUnavailable(f"unreadable answer: {type(err).__name__}: {err}") from None

    async def _get(
        self, class_id: int, code: str, attribute: int, access: Any = None
    ) -> bytes | None:
        """The raw data of one attribute (blocks reassembled); ``None`` when the meter refuses
        it (object undefined, access denied)."""
        attr = cosem.CosemAttribute(enumerations.CosemInterface(class_id), obis(code), attribute)
        answer = await self._request(
            xdlms.GetRequestNormal(cosem_attribute=attr, access_selection=access)
        )
        data = bytearray()
        while True:
            if isinstance(answer, xdlms.GetResponseNormal):
                return bytes(answer.data)
            if isinstance(
                answer, xdlms.GetResponseNormalWithError | xdlms.GetResponseLastBlockWithError
            ):
                return None
            if isinstance(answer, xdlms.GetResponseLastBlock):
                return bytes(data + answer.data)
            if isinstance(answer, xdlms.GetResponseWithBlock):
                data += answer.data
                if len(data) > MAX_ANSWER:
                    raise DeviceUnavailable(f"answer larger than {MAX_ANSWER // 1024} KiB")
                answer = await self._request(xdlms.GetRequestNext(
                    block_number=answer.block_number,
                    invoke_id_and_priority=answer.invoke_id_and_priority))  # fmt: skip
                continue
            if isinstance(answer, xdlms.ExceptionResponse):
                raise DeviceRejected(f"exception response: {answer.state_error.name}")
            raise DeviceUnavailable(f"unexpected answer {type(answer).__name__}")

    async def get_value(self, class_id: int, code: str, attribute: int = 2) -> Any:
        """One attribute decoded (A-XDR); ``DeviceRejected`` when the meter refuses it."""
        raw = await self._get(class_id, code, attribute)
        if raw is None:
            raise DeviceRejected(f"{class_id}/{code}/{attribute}: refused by the meter")
        try:
            return decode(raw)
        except AxdrError as err:
            raise DeviceUnavailable(f"{code}: {err}") from None

    async def scaler_unit(self, class_id: int, code: str) -> tuple[int, str | None]:
        key = (class_id, code)
        if key not in self._scalers:
            found: tuple[int, str | None] = (0, None)
            if class_id in (3, 4, 5):
                try:
                    su = await self.get_value(class_id, code, 3)
                    if isinstance(su, list) and len(su) == 2 and isinstance(su[0], int):
                        found = (max(-20, min(20, su[0])), UNITS.get(su[1], str(su[1])))
                except DeviceRejected:
                    pass
            self._scalers[key] = found
        return self._scalers[key]

    # -- points ---------------------------------------------------------------------------------
    async def read(self, points: Sequence[PointSpec]) -> list[Reading]:
        out = []
        for p in points:
            class_id, code, attribute = self._points[p.key]
            try:
                value = await self.get_value(class_id, code, attribute)
            except DeviceRejected:
                out.append(Reading(p.key, None, BAD_REFERENCE, time.time()))
                continue
            scaler, _unit = await self.scaler_unit(class_id, code)
            if isinstance(value, bytes) and class_id == 8:
                when, _status = cosem_datetime(value)
                value = None if when is None else when.timestamp()
            elif isinstance(value, bytes | list | str):
                value = None
            ok = value is not None
            out.append(Reading(p.key, scaled(value, scaler) if ok else None,
                               GOOD if ok else BAD_REFERENCE, time.time()))  # fmt: skip
        return out

    async def write(self, point: PointSpec, value: Value) -> None:
        raise DeviceRejected(f"{point.key}: DLMS points are read-only here")

    async def registers(self, codes: Sequence[str]) -> list[Register]:
        out = []
        for code in codes:
            class_id, o, attribute = parse_address(code)
            try:
                value = await self.get_value(class_id, o, attribute)
            except DeviceRejected:
                out.append(Register(code, None))
                continue
            scaler, unit = await self.scaler_unit(class_id, o)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            out.append(Register(code, scaled(value, scaler) if ok else None, unit))
        return out

    # -- MeterSource ---------------------------------------------------------------------------
    async def meter_time(self) -> dt.datetime:
        sent = time.time()
        raw = await self.get_value(8, CLOCK_OBIS, 2)
        when, _status = cosem_datetime(raw)
        if when is None:
            raise DeviceRejected("the meter's clock is not set (unspecified date-time)")
        self.offset_s = when.timestamp() - (sent + time.time()) / 2
        return when

    async def set_meter_time(self, when: dt.datetime) -> None:
        from edgetwin.drivers.dlms_axdr import datetime_octets, octet_string

        attr = cosem.CosemAttribute(enumerations.CosemInterface.CLOCK, obis(CLOCK_OBIS), 2)
        answer = await self._request(xdlms.SetRequestNormal(
            cosem_attribute=attr, data=octet_string(datetime_octets(when))))  # fmt: skip
        result = getattr(answer, "result", None)
        if result is not enumerations.DataAccessResult.SUCCESS:
            raise DeviceRejected(f"clock set refused: {getattr(result, 'name', answer)}")

    async def shape(self, code: str) -> tuple[int, list[tuple[int, str, int]]]:
        if code not in self._shapes:
            objects = await self.get_value(7, code, 3)
            columns = []
            for item in objects if isinstance(objects, list) else []:
                if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], int)):
                    raise DeviceUnavailable(f"{code}: capture object {item!r} is not one")
                columns.append((item[0], obis_text(item[1]), int(item[2])))
            try:
                period = await self.get_value(7, code, 4)
            except DeviceRejected:
                period = 0
            self._shapes[code] = (period if isinstance(period, int) else 0, columns)
        return self._shapes[code]

    async def profile(self, code: str, start: dt.datetime, end: dt.datetime) -> Profile:
        period, columns = await self.shape(code)
        clock_at = next((i for i, (c, _o, _a) in enumerate(columns) if c == 8), None)
        if clock_at is None:
            raise DeviceRejected(f"{code}: no clock among its capture objects")
        status_at = next((i for i, (c, o, _a) in enumerate(columns)
                          if c == 1 and STATUS_OBIS.match(o)), None)  # fmt: skip
        kept = [i for i in range(len(columns)) if i not in (clock_at, status_at)]
        described = []
        for i in kept:
            class_id, o, a = columns[i]
            scaler, unit = await self.scaler_unit(class_id, o)
            described.append(Column(class_id, o, a, unit, scaler))
        ck = columns[clock_at]
        rng = RangeDescriptor(
            restricting_object=CaptureObject(
                cosem.CosemAttribute(enumerations.CosemInterface(ck[0]), obis(ck[1]), ck[2])
            ),
            from_value=start.astimezone(dt.UTC),
            to_value=end.astimezone(dt.UTC),
        )
        raw = await self._get(7, code, 2, rng)
        if raw is None:
            raise DeviceRejected(f"{code}: buffer refused by the meter")
        try:
            entries = decode(raw)
        except AxdrError as err:
            raise DeviceUnavailable(f"{code}: {err}") from None
        rows: list[ProfileRow] = []
        last: dt.datetime | None = None
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, list) or len(entry) != len(columns):
                raise DeviceUnavailable(f"{code}: an entry does not match its capture objects")
            when, _ = cosem_datetime(entry[clock_at])
            if when is None and entry[clock_at] is None and last is not None and period:
                when = last + dt.timedelta(seconds=period)  # IDIS: null = previous + period
            if when is None:
                continue  # an entry without a usable time cannot be placed; skipped
            last = when
            status = entry[status_at] if status_at is not None else None
            values = tuple(scaled(entry[i], d.scaler) for i, d in zip(kept, described, strict=True))
            rows.append(ProfileRow(when, values, status if isinstance(status, int) else None))
        self._stats["rows"] += len(rows)
        rows.sort(key=lambda r: r.time)
        return Profile(code, period, tuple(described), rows)

    # -- PushSource ---------------------------------------------------------------------------
    def open_push(self, peer: str, apdu: bytes) -> Push | None:
        """A data-notification from this meter: plain from its ``host`` (security ``none`` /
        ``lls``), or general-glo-ciphered with its system title (``hls-gmac``: deciphered
        and authenticated with its keys, invocation counter above the last push's)."""
        c = self._config
        if apdu[:1] == b"\x0f":
            if c.host is None or peer != c.host:
                return None
            if c.security == "hls-gmac":
                raise ValueError("a plain push from a meter whose security is hls-gmac")
            return parse_notification(apdu)
        if apdu[:1] != b"\xdb" or c.security != "hls-gmac" or self._meter_title is None:
            return None
        try:
            title, pos = octets_at(apdu, 1)
            content, _ = octets_at(apdu, pos)
        except AxdrError:
            return None
        if title != self._meter_title:
            return None
        if len(content) < 5 + 12:
            raise ValueError("a ciphered push too short to hold its tag")
        ic = int.from_bytes(content[1:5], "big")
        # pushes are ordered among pushes: one the meter sent before an answer may arrive
        # after it (another connection); a replayed answer would not open as a notification
        if ic <= self._push_ic:
            raise ValueError(f"a replayed push (invocation counter {ic}, last {self._push_ic})")
        assert self._ek is not None and self._ak is not None
        try:
            sc = security.SecurityControlField.from_bytes(content[0:1])
            plain = security.decrypt(sc, title, ic, self._ek, content[5:], self._ak)
        except Exception as err:  # a wrong tag: forged, or another key
            raise ValueError(f"a push that fails authentication ({type(err).__name__})") from None
        self._push_ic = ic
        return parse_notification(plain)

    async def object_list(self) -> list[tuple[int, str]]:
        """``(class_id, obis)`` of every object the association lists (for discovery)."""
        items = await self.get_value(15, ASSOCIATION_OBIS, 2)
        out = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, list) and len(item) >= 3 and isinstance(item[0], int):
                out.append((item[0], obis_text(item[2])))
        return out


def parse_notification(apdu: bytes) -> Push:
    """A data-notification APDU: tag 15, long-invoke-id-and-priority, date-time (an octet
    string, empty or 12 octets), notification body (one Data); ``ValueError`` otherwise."""
    try:
        if apdu[:1] != b"\x0f" or len(apdu) < 6:
            raise AxdrError("not a data-notification")
        stamp, pos = octets_at(apdu, 5)
        when = cosem_datetime(stamp)[0] if len(stamp) == 12 else None
        return Push(when, decode(apdu[pos:]))
    except AxdrError as err:
        raise ValueError(f"malformed data-notification: {err}") from None
