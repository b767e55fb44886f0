"""IEC 60870-5-104 client (controlling station) on c104, the ``edgetwin[iec104]`` extra.

Event-driven: the controlled station reports changes itself (spontaneous transmission, with its
own CP56Time2a time tags and quality descriptors). The driver keeps the latest report of every
information object and, for states (``sp``, ``dp``, ``ep``, ``st``), every change not yet read,
in order; ``read`` returns what was reported since the last read, so a poll costs no request
on the wire and steady objects cost nothing.

On connect (``connect``): TCP to ``host`` (or, when that fails or was the one lost, the
``redundant_host``), STARTDT, a general interrogation whose answers are waited for, a counter
interrogation and, when ``clock_sync`` is on, clock synchronisation. Then, from ``read``: general
and counter interrogations again every ``interrogation_interval_s`` and
``counter_interrogation_interval_s``, and the clock every ``clock_sync_interval_s``, none of them
waited for (their answers arrive as reports). The standard timers t0-t3 and the k / w windows
are configuration. A lost connection is ``DeviceUnavailable``; the runtime backs off and calls
``connect`` again, which tries the other server address first.

Addresses are ``<kind>:<IOA>`` in the configured common address:

=========  ===============================================  ==================================
kind       ASDU types accepted                              value
=========  ===============================================  ==================================
``sp``     M_SP_NA_1, M_SP_TA_1, M_SP_TB_1 (single point)   bool
``dp``     M_DP_NA_1, M_DP_TA_1, M_DP_TB_1 (double point)   0 intermediate, 1 off, 2 on,
                                                            3 indeterminate
``st``     M_ST_NA_1, M_ST_TA_1, M_ST_TB_1 (step position)  int
``bo``     M_BO_NA_1, M_BO_TA_1, M_BO_TB_1 (bitstring)      int
``nva``    M_ME_NA_1, M_ME_TA_1, M_ME_TD_1, M_ME_ND_1       float in [-1, 1) (normalised)
``sva``    M_ME_NB_1, M_ME_TB_1, M_ME_TE_1                  int (scaled)
``float``  M_ME_NC_1, M_ME_TC_1, M_ME_TF_1                  float (short floating point)
``it``     M_IT_NA_1, M_IT_TA_1, M_IT_TB_1 (integrated      int
           totals, by counter interrogation)
``ep``     M_EP_TA_1, M_EP_TD_1 (protection event)          0..3 (event state)
``sc``     C_SC_NA_1 (single command; written)              bool
``dc``     C_DC_NA_1 (double command; written)              bool (true = on / close) or 1 / 2
``sesn``   C_SE_NA_1 / ``sess`` C_SE_NB_1 / ``sesf``        number (set-points; written)
           C_SE_NC_1
=========  ===============================================  ==================================

Commands go out select-before-execute unless ``command_mode = "direct"``; a negative
confirmation (or none within t1) is ``DeviceRejected``.

Quality (``quality_of``, IEC 61850-80-1): IV -> invalid; NT -> questionable, oldData; OV ->
questionable, overflow; SB -> source substituted; BL -> operatorBlocked; EI (protection events)
-> questionable, inaccurate; for integrated totals CY -> questionable, overflow, CA ->
questionable, inconsistent. An object the station did not report in the general interrogation is
invalid, badReference; one reported with an ASDU type of another kind is invalid, badReference
and logged once.

Time: the reading's source time is the object's time tag, or when its report arrived if the type
has none. c104 gives time tags as naive local times from UTC on the wire; ``time_tags = "local"``
is for stations that put local time on the wire (older European RTUs).

What it leaves to the runtime (``agent.runtime.running``): the poll schedule, timeouts, backoff,
availability and logging.
"""

# no `from __future__ import annotations`: c104 checks callback signatures by their real types
import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

import c104  # the extra edgetwin[iec104]: the registry names it when missing
from pydantic import Field, model_validator

from edgetwin.core.errors import DeviceRejected, DeviceUnavailable
from edgetwin.core.models import BAD_REFERENCE, GOOD, Quality, Reading, Validity, Value
from edgetwin.core.points import PointSpec
from edgetwin.drivers.base import DeviceConfig, Host, SourceTimestamps
from edgetwin.drivers.changes import Changes

log = logging.getLogger(__name__)

T = c104.Type
MONITOR: dict[str, frozenset[Any]] = {
    "sp": frozenset({T.M_SP_NA_1, T.M_SP_TA_1, T.M_SP_TB_1}),
    "dp": frozenset({T.M_DP_NA_1, T.M_DP_TA_1, T.M_DP_TB_1}),
    "st": frozenset({T.M_ST_NA_1, T.M_ST_TA_1, T.M_ST_TB_1}),
    "bo": frozenset({T.M_BO_NA_1, T.M_BO_TA_1, T.M_BO_TB_1}),
    "nva": frozenset({T.M_ME_NA_1, T.M_ME_TA_1, T.M_ME_TD_1, T.M_ME_ND_1}),
    "sva": frozenset({T.M_ME_NB_1, T.M_ME_TB_1, T.M_ME_TE_1}),
    "float": frozenset({T.M_ME_NC_1, T.M_ME_TC_1, T.M_ME_TF_1}),
    "it": frozenset({T.M_IT_NA_1, T.M_IT_TA_1, T.M_IT_TB_1}),
    "ep": frozenset({T.M_EP_TA_1, T.M_EP_TD_1}),
}
COMMAND: dict[str, Any] = {
    "sc": T.C_SC_NA_1,
    "dc": T.C_DC_NA_1,
    "sesn": T.C_SE_NA_1,
    "sess": T.C_SE_NB_1,
    "sesf": T.C_SE_NC_1,
}
ADDRESS = re.compile(r"^(" + "|".join([*MONITOR, *COMMAND]) + r"):(\d{1,8})$")
MAX_IOA = 16_777_215
EVENT_KINDS = frozenset({"sp", "dp", "ep", "st"})  # changes of state: each kept, in order
MAX_EVENTS_PER_POINT = 1000
NOT_REPORTED = BAD_REFERENCE  # not in the station's general interrogation
WRONG_TYPE = Quality(Validity.INVALID, frozenset({"badReference"}))


class Iec104Config(DeviceConfig):
    host: Host
    port: int = Field(2404, ge=1, le=65535)
    redundant_host: Host | None = Field(None, description="tried when host is lost or refuses")
    redundant_port: int | None = Field(None, ge=1, le=65535)
    common_address: int = Field(1, ge=1, le=65534)
    originator_address: int = Field(0, ge=0, le=255)
    t0_s: int = Field(30, ge=1, le=255, description="connection establishment")
    t1_s: int = Field(15, ge=1, le=255, description="an I-frame's acknowledgement")
    t2_s: int = Field(10, ge=1, le=255, description="acknowledging received I-frames")
    t3_s: int = Field(20, ge=1, le=172_800, description="test frame after silence")
    k: int = Field(12, ge=1, le=32_767, description="unacknowledged I-frames sent")
    w: int = Field(8, ge=1, le=32_767, description="I-frames received before acknowledging")
    interrogation_interval_s: float = Field(900.0, ge=0, le=86_400, description="0: on connect")
    counter_interrogation_interval_s: float = Field(900.0, ge=0, le=86_400)
    clock_sync: bool = True
    clock_sync_interval_s: float = Field(3600.0, ge=1, le=86_400)
    command_mode: Literal["select_and_execute", "direct"] = "select_and_execute"
    time_tags: Literal["utc", "local"] = "utc"

    @model_validator(mode="after")
    def _timers(self) -> "Iec104Config":
        if self.t2_s >= self.t1_s:
            raise ValueError("t2_s must be less than t1_s (IEC 60870-5-104, 5.1)")
        if self.w > self.k:
            raise ValueError("w must not exceed k (recommended: w = 2/3 k)")
        return self


def parse_address(address: int | str) -> tuple[str, int]:
    """``"dp:101"`` -> ("dp", 101); ValueError with the expected form otherwise."""
    m = ADDRESS.match(str(address))
    if m is None or int(m[2]) > MAX_IOA:
        kinds = ", ".join([*MONITOR, *COMMAND])
        raise ValueError(
            f"IEC 104 address must be KIND:IOA (kind one of {kinds}; IOA up to {MAX_IOA}), "
            f"got {address!r}"
        )
    return m[1], int(m[2])


#: quality descriptor bits (IEC 60870-5-101, 7.2.6.3) -> (validity, detail flag)
QDS = {
    0x80: (Validity.INVALID, None),  # IV
    0x40: (Validity.QUESTIONABLE, "oldData"),  # NT
    0x01: (Validity.QUESTIONABLE, "overflow"),  # OV
    0x08: (Validity.QUESTIONABLE, "inaccurate"),  # EI (protection events)
}
SB, BL = 0x20, 0x10
#: integrated totals' sequence-and-quality bits: IV, CY (carry), CA (adjusted)
BCR = {0x80: (Validity.INVALID, None), 0x40: (Validity.QUESTIONABLE, "overflow"),
       0x20: (Validity.QUESTIONABLE, "inconsistent")}  # fmt: skip


def quality_of(q: Any) -> Quality:
    """An IEC 104 quality descriptor (or a counter's sequence-and-quality flags) as IEC 61850."""
    if q is None or q.is_good():
        return GOOD
    counter = isinstance(q, c104.BinaryCounterQuality)
    return quality_bits(int(q.value), counter=counter)


def quality_bits(bits: int, *, counter: bool = False) -> Quality:
    """Quality from the raw bits: invalid wins over questionable, detail flags add up."""
    table = BCR if counter else QDS
    hits = [table[bit] for bit in table if bits & bit]
    validities = {v for v, _ in hits}
    validity = (Validity.INVALID if Validity.INVALID in validities
                else Validity.QUESTIONABLE if validities else Validity.GOOD)  # fmt: skip
    detail = frozenset(flag for _, flag in hits if flag is not None)
    if counter:
        return Quality(validity, detail)
    source = "substituted" if bits & SB else "process"
    return Quality(validity, detail, source=source, operator_blocked=bool(bits & BL))


def plain(value: Any) -> Value:
    """c104's value objects (Double, Step, NormalizedFloat, Int16, Byte32, ...) as numbers."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "value") and isinstance(value.value, int):  # the enums
        return int(value.value)
    try:
        return float(value) if "Float" in type(value).__name__ else int(value)
    except (TypeError, ValueError):
        return None


def source_time(recorded_at: datetime | None, arrived: float, time_tags: str) -> float:
    """Seconds since the epoch from a time tag (c104: naive local time of UTC on the wire)."""
    if recorded_at is None:
        return arrived
    ts = recorded_at.timestamp()
    if time_tags == "local":  # the wire held local time, which c104 took for UTC
        offset = datetime.fromtimestamp(ts).astimezone().utcoffset()
        ts -= offset.total_seconds() if offset else 0.0
    return ts


@dataclass(slots=True)
class _Report:
    kind: str
    value: Value
    quality: Quality
    ts: float


class Iec104Driver:
    """``iec104``: see the module docstring."""

    config_model: ClassVar[type[DeviceConfig]] = Iec104Config
    #: time tags say when a value changed: a steady breaker is not old data (NT says that)
    source_timestamps: ClassVar[SourceTimestamps] = "change"
    #: ``read`` returns what changed since the last read (``drivers.base``)
    reports_changes: ClassVar[bool] = True

    def __init__(
        self,
        config: Iec104Config,
        points: Sequence[PointSpec],
        shared: dict[str, Any] | None = None,
    ) -> None:
        if config.redundant_port is not None and config.redundant_host is None:
            raise ValueError("redundant_port needs redundant_host")
        self._config = config
        self._kinds = {p.key: parse_address(p.address) for p in points}
        self._changes = Changes(points, lambda spec: self._kinds[spec.key][1])  # by IOA
        self._wanted = self._changes.addresses
        self._lock = threading.Lock()
        self._reports: dict[int, _Report] = {}  # IOA -> latest report
        self._events: dict[int, list[_Report]] = {}  # IOA -> changes of state not yet read

        self._wrong_type: set[int] = set()
        self._client: Any = None
        self._connection: Any = None
        self._station: Any = None
        self._target = 0  # index into _targets() of the server in use
        self._dropped = threading.Event()  # set when the connection in use went down
        self._due: dict[str, float] = {}
        self._stats = {"spontaneous": 0, "interrogated": 0, "interrogations": 0,
                       "commands": 0, "switchovers": 0, "lost_events": 0}  # fmt: skip

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def _targets(self) -> list[tuple[str, int]]:
        c = self._config
        out = [(c.host, c.port)]
        if c.redundant_host is not None:
            out.append((c.redundant_host, c.redundant_port or c.port))
        return out

    async def connect(self) -> None:
        targets = self._targets()
        order = [self._target, *(i for i in range(len(targets)) if i != self._target)]
        problems = []
        for i in order:
            host, port = targets[i]
            try:
                await asyncio.to_thread(self._open, host, port)
            except DeviceUnavailable as err:
                problems.append(str(err))
                continue
            if i != self._target:
                self._stats["switchovers"] += 1
                log.warning("%s: using %s:%d", self._config.name, host, port)
            self._target = i
            return
        raise DeviceUnavailable("; ".join(problems))

    def _open(self, host: str, port: int) -> None:
        """Blocking: connect, STARTDT, general interrogation (waited for), counters, clock."""
        c = self._config
        try:
            ip = str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])
        except OSError as err:
            raise DeviceUnavailable(f"{host}:{port}: {err.strerror or err}") from None
        client = c104.Client(tick_rate_ms=50, command_timeout_ms=int(c.t1_s * 1000))
        client.originator_address = c.originator_address
        connection = client.add_connection(ip=ip, port=port, init=c104.Init.NONE)
        if connection is None:
            raise DeviceUnavailable(f"{host}:{port}: c104 refused the connection settings")
        pp = connection.protocol_parameters
        pp.connection_timeout, pp.message_timeout = c.t0_s, c.t1_s
        pp.confirm_interval, pp.keep_alive_interval = c.t2_s, c.t3_s
        pp.send_window_size, pp.receive_window_size = c.k, c.w
        station = connection.add_station(common_address=c.common_address)
        if station is None:
            raise DeviceUnavailable(f"{host}:{port}: c104 refused common address")
        for kind, ioa in self._kinds.values():
            if kind in COMMAND:
                mode = (c104.CommandMode.DIRECT if c.command_mode == "direct"
                        else c104.CommandMode.SELECT_AND_EXECUTE)  # fmt: skip
                station.add_point(io_address=ioa, type=COMMAND[kind], command_mode=mode)
        opened = threading.Event()
        self._dropped = threading.Event()

        def on_state(connection: c104.Connection, state: c104.ConnectionState) -> None:
            if state in (c104.ConnectionState.OPEN_MUTED, c104.ConnectionState.OPEN):
                opened.set()
            elif opened.is_set():  # c104 would reconnect by itself, muted and uninterrogated:
                self._dropped.set()  # the runtime reconnects instead (STARTDT, interrogation)

        connection.on_state_change(callable=on_state)
        client.on_new_point(callable=self._on_new_point)
        with self._lock:
            self._reports.clear()
            self._events.clear()
            self._changes.reset()
        client.start()
        self._client, self._connection, self._station = client, connection, station
        try:
            if not opened.wait(min(self._config.connect_timeout_s, c.t0_s)):
                raise DeviceUnavailable(f"{host}:{port}: no connection within t0")
            if not connection.unmute():  # STARTDT act / con
                raise DeviceUnavailable(f"{host}:{port}: STARTDT not confirmed")
            self._interrogate(wait=True)
        except BaseException:
            self._stop()
            raise
        now = time.monotonic()
        self._due = {"gi": now + c.interrogation_interval_s,
                     "ci": now + c.counter_interrogation_interval_s,
                     "cs": now + c.clock_sync_interval_s}  # fmt: skip

    def _interrogate(self, *, wait: bool) -> None:
        c, connection = self._config, self._connection
        self._stats["interrogations"] += 1
        if not connection.interrogation(common_address=c.common_address, wait_for_response=wait):
            if wait:
                raise DeviceUnavailable(f"{c.host}: general interrogation not confirmed")
        if not self._kinds or any(kind == "it" for kind, _ in self._kinds.values()):
            connection.counter_interrogation(common_address=c.common_address,
                                             wait_for_response=wait)  # fmt: skip
        if c.clock_sync:
            connection.clock_sync(common_address=c.common_address, wait_for_response=wait)

    def _on_new_point(
        self, client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type
    ) -> None:
        """c104's thread: the first report of an object; from now on its reports are kept."""
        if station.common_address != self._config.common_address:
            return
        point = station.add_point(io_address=io_address, type=point_type)
        if point is not None:
            point.on_receive(callable=self._on_receive)

    def _on_receive(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        """c104's thread: one report; its kind from its ASDU type."""
        kind = next((k for k, types in MONITOR.items() if point.type in types), None)
        if kind is not None:
            ts = source_time(point.recorded_at, time.time(), self._config.time_tags)
            report = _Report(kind, plain(point.value), quality_of(point.quality), ts)
            ioa = point.io_address
            with self._lock:
                old = self._reports.get(ioa)
                self._reports[ioa] = report
                if ioa in self._wanted:
                    self._changes.mark(ioa)
                    changed = old is None or (old.value, old.quality) != (
                        report.value,
                        report.quality,
                    )
                    if kind in EVENT_KINDS and changed:
                        queue = self._events.setdefault(ioa, [])
                        if len(queue) >= MAX_EVENTS_PER_POINT:
                            queue.pop(0)
                            self._stats["lost_events"] += 1
                        queue.append(report)
            spontaneous = message.cot == c104.Cot.SPONTANEOUS
            self._stats["spontaneous" if spontaneous else "interrogated"] += 1
        return c104.ResponseState.SUCCESS

    def reported(self) -> list[tuple[str, int, Value, Quality, float]]:
        """Every object the station reported, configured or not (for discovery): kind, IOA,
        value, quality, time; in IOA order."""
        with self._lock:
            reports = sorted(self._reports.items())
        return [(r.kind, ioa, r.value, r.quality, r.ts) for ioa, r in reports]

    async def read(self, points: Sequence[PointSpec]) -> list[Reading]:
        connection = self._connection
        if connection is None or self._dropped.is_set() or not connection.is_connected:
            host, port = self._targets()[self._target]
            raise DeviceUnavailable(f"{host}:{port}: connection lost")
        self._periodic()
        with self._lock:
            selected = self._changes.select(points)
            latest = {ioa: self._reports[ioa] for ioa in {self._kinds[s.key][1] for s in selected}
                      if ioa in self._reports}  # fmt: skip
            events = {ioa: self._events.pop(ioa) for ioa in latest if ioa in self._events}
        now = time.time()
        out = []
        for p in selected:
            kind, ioa = self._kinds[p.key]
            r = latest.get(ioa)
            if r is None:
                out.append(Reading(p.key, None, NOT_REPORTED, now))
            elif r.kind != kind:
                if ioa not in self._wrong_type:
                    self._wrong_type.add(ioa)
                    log.warning("%s: IOA %d is reported as %s, configured as %s",
                                self._config.name, ioa, r.kind, kind)  # fmt: skip
                out.append(Reading(p.key, None, WRONG_TYPE, now))
            else:
                for e in events.get(ioa) or [r]:
                    value = None if e.quality.validity is Validity.INVALID else e.value
                    out.append(Reading(p.key, value, e.quality, e.ts))
        return out

    def _periodic(self) -> None:
        """Interrogations and clock synchronisation that are due, not waited for."""
        c, now, connection = self._config, time.monotonic(), self._connection
        if c.interrogation_interval_s and now >= self._due.get("gi", now + 1):
            self._due["gi"] = now + c.interrogation_interval_s
            self._stats["interrogations"] += 1
            connection.interrogation(common_address=c.common_address, wait_for_response=False)
        if c.counter_interrogation_interval_s and now >= self._due.get("ci", now + 1):
            self._due["ci"] = now + c.counter_interrogation_interval_s
            connection.counter_interrogation(common_address=c.common_address,
                                             wait_for_response=False)  # fmt: skip
        if c.clock_sync and now >= self._due.get("cs", now + 1):
            self._due["cs"] = now + c.clock_sync_interval_s
            connection.clock_sync(common_address=c.common_address, wait_for_response=False)

    async def write(self, point: PointSpec, value: Value) -> None:
        kind, ioa = self._kinds[point.key]
        if kind not in COMMAND:
            raise DeviceRejected(f"{point.key}: {kind}:{ioa} is a monitored object; "
                                 "commands go to sc, dc or se* addresses")  # fmt: skip
        if self._station is None or self._connection is None:
            raise DeviceUnavailable("not connected")
        command = self._station.get_point(io_address=ioa)
        if kind == "dc":
            on = value is True or value == 2
            command.value = c104.Double.ON if on else c104.Double.OFF
        elif kind == "sc":
            command.value = bool(value)
        elif kind == "sess":
            command.value = c104.Int16(int(value or 0))
        elif kind == "sesn":
            command.value = c104.NormalizedFloat(float(value or 0))
        else:
            command.value = float(value or 0)
        self._stats["commands"] += 1
        confirmed = await asyncio.to_thread(command.transmit, cause=c104.Cot.ACTIVATION)
        if not confirmed:
            if not self._connection.is_connected:
                raise DeviceUnavailable(f"{point.key}: connection lost during the command")
            raise DeviceRejected(f"{point.key}: {kind}:{ioa} negative confirmation "
                                 f"({self._config.command_mode.replace('_', ' ')})",
                                 answer="negative confirmation")  # fmt: skip

    def _stop(self) -> None:
        client, self._client, self._connection, self._station = self._client, None, None, None
        if client is not None:
            client.disconnect_all()
            client.stop()

    async def close(self) -> None:
        if self._client is not None:
            lost = self._dropped.is_set() or (
                self._connection is not None and not self._connection.is_connected
            )
            await asyncio.to_thread(self._stop)
            if lost and len(self._targets()) > 1:  # next time, the other server first
                self._target = 1 - self._target
