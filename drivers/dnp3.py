"""DNP3 master (IEEE 1815-2012) on dnp3py, for RTUs, protection relays and IEDs over TCP or serial.

Event-driven: the outstation reports changes itself, with its own flags and times, in
unsolicited responses or in answers to event (class 1/2/3) polls; the driver keeps them and
``read`` hands them to the runtime, so a poll costs no request on the wire.

The session (one task per outstation, started by ``connect``) follows the usual master start-up
(IEEE 1815-2012 5.1.4): DISABLE_UNSOLICITED, an integrity poll (class 1, 2, 3 then 0) whose
answer ``connect`` waits for, the restart indication cleared and the clock set when the
outstation asks, then ENABLE_UNSOLICITED (when ``unsolicited`` is on). Afterwards it runs an
integrity poll every ``integrity_interval_s`` and whenever the outstation says it restarted
(IIN1.7) or lost events (IIN2.3, event buffer overflow), an event poll every
``event_poll_interval_s`` and when the outstation reports events waiting while unsolicited
reporting is off, and time synchronisation (the LAN procedure: RECORD_CURRENT_TIME, then g50v3)
whenever it sets IIN1.4. Between requests it listens for unsolicited responses and confirms
them. One request is outstanding per channel at a time.

Channels (``drivers.dnp3_link``): ``host``/``port`` (TCP, default 20000) or ``serial`` (a
serial line with ``baudrate``, ``parity``, ...). Several devices on one channel, each its own
``outstation`` link address, share it; they must agree on the master address and line settings.

Addresses are ``<kind>:<index>``:

=========  ===================================================  ================================
kind       objects                                              value
=========  ===================================================  ================================
``bi``     binary input (g1, events g2)                         bool
``dbi``    double-bit binary input (g3, events g4)              0 intermediate, 1 off (open),
                                                                2 on (closed), 3 indeterminate
``bo``     binary output status (g10, events g11); written:     bool; true = close / on
           CROB (g12v1) on the same index
``ai``     analog input (g30, events g32)                       float
``ao``     analog output status (g40); written: analog output   float; written as 32-bit
           (g41v1) on the same index                            integer (dnp3py builds g41v1)
``c``      counter (g20, events g22)                            int
``fc``     frozen counter (g21, events g23)                     int
=========  ===================================================  ================================

Binary kinds (``bi``, ``dbi``, ``bo``) are events: every change the outstation reports between two
reads is kept in order (up to ``MAX_EVENTS_PER_POINT``) and returned, oldest first; measurements
(``ai``, ``ao``, ``c``, ``fc``) give their latest value.

Control: a CROB on ``bo:N``, select-before-operate unless ``command_mode = "direct_operate"``,
coded as CLOSE / TRIP pulses (``crob = "trip_close"``, breakers) or LATCH_ON / LATCH_OFF
(``"latch"``). Any CommandStatus other than SUCCESS is ``DeviceRejected`` with the status's name
as the device's answer (e.g. ``LOCAL``); no answer within ``timeout_s`` is ``DeviceUnavailable``.

Quality (``quality_of``, to IEC 61850): ONLINE clear -> invalid; COMM_LOST -> invalid, oldData;
RESTART -> invalid, oldData; REMOTE_FORCED -> source substituted; LOCAL_FORCED -> source
substituted, operatorBlocked; CHATTER_FILTER -> questionable, oscillatory; OVER_RANGE ->
questionable, overflow; REFERENCE_ERR -> questionable, badReference; for counters ROLLOVER ->
questionable, overflow and DISCONTINUITY -> questionable, inconsistent. A point the outstation
has not reported is invalid, badReference.

Time: an event's own time (absolute, or relative to a common time of occurrence) is the reading's
source time; a static value without one takes its arrival time when it changes.

What it leaves to the runtime (``agent.runtime.running``): the read schedule, timeouts, backoff,
availability and logging; to ``drivers.dnp3_link``: the shared stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from dnp3.application.builder import build_write_request
from dnp3.application.fragment import ObjectBlock, RequestFragment
from dnp3.application.header import RequestHeader
from dnp3.application.parser import ParseError, parse_response
from dnp3.application.qualifiers import ObjectHeader
from dnp3.core.enums import CommandStatus, ControlCode, FunctionCode
from dnp3.core.flags import IIN
from dnp3.master.commands import CommandBuilder
from dnp3.master.config import MasterConfig
from dnp3.master.handler import ResponseInfo
from dnp3.master.master import Master
from dnp3.master.tcp_runner import LinkResetPolicy, MasterRunnerError, MasterTcpRunner
from pydantic import Field, model_validator

from edgetwin.core.errors import DeviceRejected, DeviceUnavailable
from edgetwin.core.models import BAD_REFERENCE, GOOD, Quality, Reading, Validity, Value
from edgetwin.core.points import PointSpec
from edgetwin.drivers.base import DeviceConfig, Host, SourceTimestamps
from edgetwin.drivers.changes import Changes
from edgetwin.drivers.dnp3_link import (
    Dnp3Link,
    OutstationChannel,
    SerialSettings,
    open_serial,
    open_tcp,
)

log = logging.getLogger(__name__)

KINDS = ("bi", "dbi", "bo", "ai", "ao", "c", "fc")
EVENT_KINDS = frozenset({"bi", "dbi", "bo"})
WRITABLE = frozenset({"bo", "ao"})
ADDRESS = re.compile(r"^(" + "|".join(KINDS) + r"):(\d{1,5})$")
MAX_INDEX = 65_535
MAX_EVENTS_PER_POINT = 1000

#: DNP3 flag bits (IEEE 1815-2012 A.1-A.30), common to every point type
ONLINE, RESTART, COMM_LOST, REMOTE_FORCED, LOCAL_FORCED = 0x01, 0x02, 0x04, 0x08, 0x10
#: bits 5 and 6 mean different things per type: (kind family) -> bit -> (validity, detail)
SPECIFIC: dict[str, dict[int, tuple[Validity, str]]] = {
    "binary": {0x20: (Validity.QUESTIONABLE, "oscillatory")},  # CHATTER_FILTER
    "analog": {0x20: (Validity.QUESTIONABLE, "overflow"),  # OVER_RANGE
               0x40: (Validity.QUESTIONABLE, "badReference")},  # REFERENCE_ERR
    "counter": {0x20: (Validity.QUESTIONABLE, "overflow"),  # ROLLOVER
                0x40: (Validity.QUESTIONABLE, "inconsistent")},  # DISCONTINUITY
}  # fmt: skip
FAMILY = {"bi": "binary", "dbi": "binary", "bo": "binary", "ai": "analog", "ao": "analog",
          "c": "counter", "fc": "counter"}  # fmt: skip


def quality_bits(flags: int, family: str) -> Quality:
    """DNP3 flags as IEC 61850 quality: invalid wins over questionable, details add up."""
    if flags & 0x7F == ONLINE:
        return GOOD
    hits: list[tuple[Validity, str | None]] = []
    if not flags & ONLINE:
        hits.append((Validity.INVALID, None))
    if flags & (COMM_LOST | RESTART):
        hits.append((Validity.INVALID, "oldData"))
    hits += [hit for bit, hit in SPECIFIC[family].items() if flags & bit]
    validities = {v for v, _ in hits}
    validity = (Validity.INVALID if Validity.INVALID in validities
                else Validity.QUESTIONABLE if validities else Validity.GOOD)  # fmt: skip
    detail = frozenset(d for _, d in hits if d is not None)
    forced = bool(flags & (REMOTE_FORCED | LOCAL_FORCED))
    return Quality(validity, detail, source="substituted" if forced else "process",
                   operator_blocked=bool(flags & LOCAL_FORCED))  # fmt: skip


def parse_address(address: int | str) -> tuple[str, int]:
    """``"dbi:1"`` -> ("dbi", 1); ValueError with the expected form otherwise."""
    m = ADDRESS.match(str(address))
    if m is None or int(m[2]) > MAX_INDEX:
        raise ValueError(
            f"DNP3 address must be KIND:INDEX (kind one of {', '.join(KINDS)}; index up to "
            f"{MAX_INDEX}), got {address!r}"
        )
    return m[1], int(m[2])


class Dnp3Config(DeviceConfig):
    host: Host | None = None
    port: int = Field(20000, ge=1, le=65535)
    serial: str | None = Field(None, pattern=r"^/[\w./-]+$", description="serial device path")
    baudrate: int = Field(9600, ge=300, le=921_600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    outstation: int = Field(description="the outstation's link address", ge=0, le=65519)
    master: int = Field(1, ge=0, le=65519, description="this master's link address")
    integrity_interval_s: float = Field(3600.0, ge=0, le=86_400, description="0: when needed")
    event_poll_interval_s: float = Field(
        5.0, ge=0, le=86_400, description="class 1/2/3 polls; 0: unsolicited only"
    )
    unsolicited: bool = True
    time_sync: bool = Field(True, description="set the outstation's clock when it asks (IIN1.4)")
    command_mode: Literal["select_before_operate", "direct_operate"] = "select_before_operate"
    crob: Literal["trip_close", "latch"] = "trip_close"
    timeout_s: float = Field(5.0, ge=0.01, le=60, description="one request's answer")

    @model_validator(mode="after")
    def _one_channel(self) -> Dnp3Config:
        if (self.host is None) == (self.serial is None):
            raise ValueError("give host (TCP) or serial (a serial line), not both")
        if self.master == self.outstation:
            raise ValueError("master and outstation need different link addresses")
        return self


@dataclass(slots=True)
class _Report:
    value: Value
    flags: int
    ts: float


@dataclass
class _Points:
    """What the outstation reported: the latest per point, and the events not yet read."""

    changes: Changes
    latest: dict[tuple[str, int], _Report] = field(default_factory=dict)
    events: dict[tuple[str, int], list[_Report]] = field(default_factory=dict)
    lost_events: int = 0
    values: int = 0

    def put(self, kind: str, index: int, value: Value, flags: int, ts: Any) -> None:
        self.values += 1
        key = (kind, index)
        old = self.latest.get(key)
        if old is not None and old.value == value and old.flags == flags and ts is None:
            return  # a static value that did not change keeps its time
        report = _Report(value, flags, ts.timestamp() if ts is not None else time.time())
        self.latest[key] = report
        self.changes.mark(key)
        changed = old is None or old.value != value or old.flags != flags
        if kind in EVENT_KINDS and changed and key in self.changes.addresses:
            queue = self.events.setdefault(key, [])
            if len(queue) >= MAX_EVENTS_PER_POINT:
                queue.pop(0)
                self.lost_events += 1
            queue.append(report)


class _Handler:
    """dnp3py's SOE handler: every value into ``_Points``, in fragment order."""

    def __init__(self, points: _Points) -> None:
        self._p = points

    def _put(self, kind: str, values: list[Any]) -> None:
        for v in values:
            self._p.put(kind, v.index, v.value, v.quality | 0, v.timestamp)

    def on_binary_input(self, values: list[Any], info: ResponseInfo) -> None:
        self._put("bi", values)

    def on_binary_output(self, values: list[Any], info: ResponseInfo) -> None:
        self._put("bo", values)

    def on_analog_input(self, values: list[Any], info: ResponseInfo) -> None:
        self._put("ai", values)

    def on_analog_output(self, values: list[Any], info: ResponseInfo) -> None:
        self._put("ao", values)

    def on_counter(self, values: list[Any], info: ResponseInfo) -> None:
        self._put("c", values)

    def on_frozen_counter(self, values: list[Any], info: ResponseInfo) -> None:
        self._put("fc", values)

    def on_double_bit_input(self, values: list[Any], info: ResponseInfo) -> None:
        for v in values:
            self._p.put("dbi", v.index, int(v.state), v.quality, v.timestamp)


class _Master(Master):
    """dnp3py's master, telling the session every response's IIN and keeping the last
    solicited fragment (the library does not deliver command status)."""

    def __init__(
        self, config: MasterConfig, handler: _Handler, on_iin: Callable[[IIN, bool], None]
    ) -> None:
        super().__init__(config=config, handler=handler)
        self._on_iin = on_iin
        self.last_solicited = b""
        self.unsolicited = 0

    def process_response(self, data: bytes) -> ResponseInfo | None:
        info = super().process_response(data)
        if info is not None:
            if info.is_unsolicited:
                self.unsolicited += 1
            else:
                self.last_solicited = data
            self._on_iin(info.iin, info.is_unsolicited)
        return info


def command_statuses(fragment: bytes) -> list[CommandStatus]:
    """The status of every control object (g12 CROB, g41 analog output) echoed in a response:
    the last octet of each object (IEEE 1815-2012 A.8.1, A.12)."""
    try:
        response = parse_response(fragment)
    except (ParseError, ValueError, IndexError):
        return []
    out = []
    for block in response.objects:
        if block.header.group in (12, 41) and block.data:
            code = block.data[-1] & 0x7F
            try:
                out.append(CommandStatus(code))
            except ValueError:
                out.append(CommandStatus.UNDEFINED)
    return out


def _g50v3(ts: float) -> ObjectBlock:
    return ObjectBlock(ObjectHeader(group=50, variation=3, qualifier=0x07),
                       bytes([1]) + int(ts * 1000).to_bytes(6, "little"))  # fmt: skip


def _clear_restart() -> ObjectBlock:
    """WRITE g80v1 index 7 = 0 (IIN1.7 DEVICE_RESTART cleared)."""
    return ObjectBlock(ObjectHeader(group=80, variation=1, qualifier=0x00), bytes([7, 7, 0]))


REFUSING_IIN = IIN.NO_FUNC_CODE_SUPPORT | IIN.OBJECT_UNKNOWN | IIN.PARAMETER_ERROR


class Dnp3Driver:
    """``dnp3``: see the module docstring."""

    config_model: ClassVar[type[DeviceConfig]] = Dnp3Config
    #: event times say when a value changed: a steady breaker is not old data
    source_timestamps: ClassVar[SourceTimestamps] = "change"
    #: ``read`` returns what changed since the last read (``drivers.base``)
    reports_changes: ClassVar[bool] = True

    def __init__(
        self, config: Dnp3Config, points: Sequence[PointSpec], shared: dict[str, Any] | None = None
    ) -> None:
        self._config = config
        self._kinds = {p.key: parse_address(p.address) for p in points}
        self._changes = Changes(points, lambda spec: self._kinds[spec.key])
        self._points = _Points(self._changes)
        self._link = self._shared_link(config, {} if shared is None else shared)
        self._channel: OutstationChannel | None = None
        self._runner: MasterTcpRunner | None = None
        self._master: _Master | None = None
        self._session: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._jobs: asyncio.Queue[
            tuple[Callable[[], Coroutine[Any, Any, Any]], asyncio.Future[Any]]
        ]
        self._jobs = asyncio.Queue()
        self._wake = asyncio.Event()
        self._needs: set[str] = set()
        self._syncing = False  # a time synchronisation is under way (its answers say NEED_TIME)
        self._closing = False
        self._due: dict[str, float] = {}
        self._stats = {"requests": 0, "integrity_polls": 0, "event_polls": 0, "unsolicited": 0,
                       "time_syncs": 0, "restarts": 0, "overflows": 0, "commands": 0}  # fmt: skip

    @staticmethod
    def _shared_link(c: Dnp3Config, shared: dict[str, Any]) -> Dnp3Link:
        settings: tuple[SerialSettings | None, int]
        if c.serial is not None:
            serial = SerialSettings(c.serial, c.baudrate, c.bytesize, c.parity, c.stopbits)
            key, settings = f"dnp3:serial:{c.serial}", (serial, c.master)

            async def opener() -> Any:
                return await open_serial(serial)
        else:
            host, port, timeout = c.host or "", c.port, c.connect_timeout_s
            key, settings = f"dnp3:tcp:{host}:{port}", (None, c.master)

            async def opener() -> Any:
                return await open_tcp(host, port, timeout)

        link = shared.get(key)
        if link is None:
            link = shared[key] = Dnp3Link(key.removeprefix("dnp3:"), opener, settings=settings)
        elif link.settings != settings:
            raise ValueError(
                f"devices on {link.name} disagree on the master address or line settings"
            )
        return link

    @property
    def stats(self) -> dict[str, int]:
        master = self._master
        return {**self._stats, "unsolicited": master.unsolicited if master else 0,
                "values": self._points.values, "lost_events": self._points.lost_events}  # fmt: skip

    # -- connect / close ----------------------------------------------------------------------

    async def connect(self) -> None:
        c = self._config
        self._failure = None
        self._changes.reset()
        self._closing = False
        self._channel = await self._link.attach(c.outstation)
        config = MasterConfig(address=c.master, outstation_address=c.outstation)
        self._master = _Master(config, _Handler(self._points), self._on_iin)
        self._runner = MasterTcpRunner(master=self._master, response_timeout=c.timeout_s,
                                       channel=self._channel,  # type: ignore[arg-type]
                                       link_reset=LinkResetPolicy.ON_OPEN)  # fmt: skip
        try:
            await self._runner.open()
            async with self._link.exchange:
                await self._request(self._master.build_disable_unsolicited())
                self._needs.add("integrity")
                await self._housekeeping()
                if c.unsolicited:
                    await self._request(self._master.build_enable_unsolicited())
        except (MasterRunnerError, ConnectionError, OSError) as err:
            await self.close()
            raise DeviceUnavailable(
                f"outstation {c.outstation} on {self._link.name}: {err}"
            ) from None
        now = time.monotonic()
        self._due = {
            "integrity": now + c.integrity_interval_s,
            "events": now + c.event_poll_interval_s,
        }
        self._session = asyncio.create_task(self._run(), name=f"dnp3 {c.name}")

    async def close(self) -> None:
        session, self._session = self._session, None
        self._closing = True  # the session ends at its next turn even if a cancel is lost
        if session is not None:
            # Python 3.11's wait_for (inside dnp3py) can swallow a cancellation that races
            # its inner read finishing: cancel again until the session has ended
            while not session.done():
                session.cancel()
                await asyncio.wait({session}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                session.result()
        while not self._jobs.empty():
            _, future = self._jobs.get_nowait()
            if not future.done():
                future.set_exception(DeviceUnavailable("connection closed"))
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.close()
            self._runner = None
        if self._channel is not None:
            self._link.detach(self._channel)
            self._channel = None

    # -- the session --------------------------------------------------------------------------

    def _on_iin(self, iin: IIN, unsolicited: bool) -> None:
        if iin & IIN.DEVICE_RESTART:
            if "restart" not in self._needs:
                self._stats["restarts"] += 1
            self._needs |= {"restart", "integrity"}
        if iin & IIN.EVENT_BUFFER_OVERFLOW:
            if "integrity" not in self._needs:
                self._stats["overflows"] += 1
            self._needs.add("integrity")
        if iin & IIN.NEED_TIME and self._config.time_sync and not self._syncing:
            self._needs.add("time")
        waiting = iin & (IIN.CLASS_1_EVENTS | IIN.CLASS_2_EVENTS | IIN.CLASS_3_EVENTS)
        if waiting and not unsolicited and not self._config.unsolicited:
            self._needs.add("events")
        if self._needs:
            self._wake.set()

    async def _request(self, request: RequestFragment) -> list[ResponseInfo]:
        assert self._runner is not None
        self._stats["requests"] += 1
        return await self._runner.request(request)

    async def _integrity(self) -> None:
        assert self._master is not None
        self._needs.discard("integrity")
        self._stats["integrity_polls"] += 1
        await self._request(self._master.build_integrity_poll())

    async def _housekeeping(self) -> None:
        """What the outstation asked for: restart cleared, integrity poll, clock, events."""
        assert self._master is not None
        master = self._master
        if "restart" in self._needs:
            self._needs.discard("restart")
            await self._request(
                build_write_request((_clear_restart(),), seq=master.next_request_sequence())
            )
        if "integrity" in self._needs:
            await self._integrity()
        if "time" in self._needs:
            self._needs.discard("time")
            self._stats["time_syncs"] += 1
            self._syncing = True
            try:
                recorded = time.time()
                header = RequestHeader.build(function=FunctionCode.RECORD_CURRENT_TIME,
                                             seq=master.next_request_sequence())  # fmt: skip
                await self._request(RequestFragment(header=header))
                write = build_write_request((_g50v3(recorded),), seq=master.next_request_sequence())
                await self._request(write)
            finally:
                self._syncing = False
        if "events" in self._needs:
            self._needs.discard("events")
            self._stats["event_polls"] += 1
            await self._request(master.build_class_poll())

    def _periodic(self) -> float:
        """Mark the polls that are due; seconds until the next one."""
        c, now = self._config, time.monotonic()
        for name, interval in (
            ("integrity", c.integrity_interval_s),
            ("events", c.event_poll_interval_s),
        ):
            if interval and now >= self._due[name]:
                self._due[name] = now + interval
                self._needs.add(name)
        waits = [
            self._due[n] - now
            for n, i in (("integrity", c.integrity_interval_s), ("events", c.event_poll_interval_s))
            if i
        ]
        return max(0.01, min(waits, default=3600.0))

    async def _run(self) -> None:
        assert self._runner is not None and self._channel is not None
        runner, channel = self._runner, self._channel
        try:
            while not self._closing:
                wait = self._periodic()
                if not self._jobs.empty():
                    job, future = self._jobs.get_nowait()
                    async with self._link.exchange:
                        try:
                            future.set_result(await job())
                        except (MasterRunnerError, ConnectionError, OSError) as err:
                            future.set_exception(DeviceUnavailable(f"no answer: {err}"))
                            raise
                        except Exception as err:  # an answer that refuses: the caller's error
                            future.set_exception(err)
                    continue
                if self._needs:
                    async with self._link.exchange:
                        await self._housekeeping()
                    continue
                if not channel.readable.is_set():
                    self._wake.clear()
                    waiters = [asyncio.ensure_future(channel.readable.wait()),
                               asyncio.ensure_future(self._wake.wait())]  # fmt: skip
                    try:
                        await asyncio.wait(
                            waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        for w in waiters:
                            w.cancel()
                if channel.readable.is_set():
                    await runner.listen_unsolicited(timeout=self._config.timeout_s)
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            self._failure = err
            while not self._jobs.empty():
                _, future = self._jobs.get_nowait()
                future.set_exception(DeviceUnavailable(f"link failed: {err}"))

    async def _submit(self, job: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        self._check_alive()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((job, future))
        self._wake.set()
        return await future

    def _check_alive(self) -> None:
        session = self._session
        if session is None or session.done() or self._failure is not None or not self._link.is_open:
            why = f": {self._failure}" if self._failure else ""
            raise DeviceUnavailable(
                f"outstation {self._config.outstation} on {self._link.name} lost{why}"
            )

    def reported(self) -> list[tuple[str, int, Value, Quality, float]]:
        """Every point the outstation reported, configured or not (for discovery): kind,
        index, value, quality, time; in kind and index order."""
        return [(kind, index, r.value, quality_bits(r.flags, FAMILY[kind]), r.ts)
                for (kind, index), r in sorted(self._points.latest.items())]  # fmt: skip

    # -- read / write -------------------------------------------------------------------------

    async def read(self, points: Sequence[PointSpec]) -> list[Reading]:
        """The points reported since the last read (``reports_changes``): every point at the
        first read after ``connect``, and a point asked for alone always."""
        self._check_alive()
        p = self._points
        selected = self._changes.select(points)
        now, out = time.time(), []
        for spec in selected:
            key = self._kinds[spec.key]
            queued = p.events.pop(key, None)
            reports = queued or ([p.latest[key]] if key in p.latest else [])
            if not reports:
                out.append(Reading(spec.key, None, BAD_REFERENCE, now))
            for r in reports:
                quality = quality_bits(r.flags, FAMILY[key[0]])
                value = None if quality.validity is Validity.INVALID else r.value
                out.append(Reading(spec.key, value, quality, r.ts))
        return out

    async def write(self, point: PointSpec, value: Value) -> None:
        kind, index = self._kinds[point.key]
        if kind not in WRITABLE:
            raise DeviceRejected(f"{point.key}: {kind}:{index} is an input; CROBs go to bo:N, "
                                 "analog outputs to ao:N")  # fmt: skip
        builder = CommandBuilder()
        if kind == "bo":
            on = bool(value)
            if self._config.crob == "latch":
                code = ControlCode.LATCH_ON if on else ControlCode.LATCH_OFF
            else:
                code = ControlCode.CLOSE_PULSE_ON if on else ControlCode.TRIP_PULSE_ON
            builder.add_crob(index, code)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DeviceRejected(f"{point.key}: an analog output needs a number")
            builder.add_analog(index, round(value))
        self._stats["commands"] += 1
        await self._submit(lambda: self._operate(builder))

    async def _operate(self, builder: CommandBuilder) -> None:
        assert self._master is not None
        master = self._master
        if self._config.command_mode == "direct_operate":
            steps = [
                ("DIRECT_OPERATE", master.build_direct_operate(builder.build_direct_operate()))
            ]
        else:
            steps = [("SELECT", master.build_select(builder.build_select())),
                     ("OPERATE", master.build_operate(builder.build_operate()))]  # fmt: skip
        for name, request in steps:
            infos = await self._request(request)
            iin = infos[-1].iin if infos else IIN(0)
            if iin & REFUSING_IIN:
                raise DeviceRejected(f"{name} refused: IIN {iin!r}", code=int(iin), answer=str(iin))
            statuses = command_statuses(master.last_solicited)
            bad = next((s for s in statuses if s is not CommandStatus.SUCCESS), None)
            if bad is not None or not statuses:
                answer = bad.name if bad is not None else "no command status"
                raise DeviceRejected(
                    f"{name}: {answer}", code=int(bad) if bad else None, answer=answer
                )
