"""Simulated DNP3 outstations (IEEE 1815) on dnp3py's outstation: breakers, feeders, events.

One endpoint -- a TCP port or a serial line (a pty from socat) -- carries one or more outstations,
each with its own link address, as on a multi-drop RS-485 line or a port server. Per outstation,
for breaker ``i`` and feeder ``j`` (both from 0):

===============  =====================  ====================================================
point            object                 what
===============  =====================  ====================================================
``dbi:i``        g3v2 / g4v2 (class 1)  breaker position: 1 open, 2 closed, 0 travelling
``bi:i``         g1v2 / g2v2 (class 1)  breaker in local mode (commands refused: LOCAL)
``bo:i``         g10v2                  breaker output status (on = closed)
CROB ``i``       g12v1                  LATCH_ON / CLOSE = close, LATCH_OFF / TRIP = open,
                                        select-before-operate or direct operate
``ai:3j``        g30v5 / g32v7 (cls 2)  feeder current, A (float, events with time)
``ai:3j+1``      same                   feeder voltage, V
``ai:3j+2``      same                   feeder active power, kW
``ai:3f+n``      same                   ``analogs`` extra measurements (benchmarks)
``c:j``          g20v1 / g22v5 (cls 3)  feeder energy, kWh
``ao:0``         g40v1, g41v1 command   a set-point; its value is echoed to ``ai:3f+analogs``
===============  =====================  ====================================================

Measurements move with seeded noise every ``refresh_s`` and make events when they move by more
than their deadband. Unsolicited responses go out when the master enabled them. A command moves
the breaker after ``travel_s``: intermediate at once, then the end state, each an event with its
time. Faults: ``drop()`` (the connection is closed), ``restart(address)`` (IIN1.7 DEVICE_RESTART,
every point RESTART, the connection dropped), ``set_quality(address, kind, index, *flags)``
(COMM_LOST and the other DNP3 flags on one point), ``overflow(address)`` (more events than the
buffer holds: IIN2.3), ``need_time(address)`` (IIN1.4), ``local_mode(address, i)`` and
``slow_s`` (answers late).

dnp3py's outstation serves integer analogs and untimed binary and analog events, and no
double-bit inputs; ``SimOutstation`` adds float analogs (g30v5, g32v7), timed binary events
(g2v2) and double-bit inputs (g3v2, g4v2) on top of it. The link and transport layers are here
(``_Endpoint``), so several outstations share one stream; dnp3py's TCP runner serves one.
Built on the library's outstation, never on the agent's driver (``drivers/dnp3.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from dnp3.application.builder import build_unsolicited_response
from dnp3.application.fragment import ObjectBlock, ResponseFragment
from dnp3.application.qualifiers import ObjectHeader
from dnp3.core.enums import (
    CommandStatus,
    ControlCode,
    LinkFunctionCode,
    OperationType,
    TripCloseCode,
)
from dnp3.core.flags import IIN, AnalogQuality, BinaryQuality, CounterQuality
from dnp3.core.timestamp import DNP3Timestamp
from dnp3.database.database import Database, DatabaseConfig
from dnp3.database.event_buffer import AnalogEvent, BinaryEvent, CounterEvent, EventBufferConfig
from dnp3.database.point import AnalogInputConfig, CounterConfig, EventClass
from dnp3.datalink.builder import build_ack, build_link_status, build_unconfirmed_user_data
from dnp3.datalink.parser import FrameParser
from dnp3.outstation.config import OutstationConfig
from dnp3.outstation.handler import CommandResult, DefaultCommandHandler
from dnp3.outstation.outstation import Outstation
from dnp3.outstation.peer import PeerId
from dnp3.transport.reassembler import Reassembler
from dnp3.transport.segment import TransportSegment
from dnp3.transport.segmenter import Segmenter

log = logging.getLogger(__name__)

DBI_STATE = {False: 1, True: 2}  # closed -> 2 (ON), open -> 1 (OFF); 0 intermediate
ONLINE = 0x01
FLAGS = {"online": 0x01, "offline": 0x00, "restart": 0x02, "comm_lost": 0x04, "remote_forced": 0x08,
         "local_forced": 0x10, "chatter_filter": 0x20, "over_range": 0x20,
         "reference_err": 0x40}  # fmt: skip
MAX_FRAGMENT = 2048
#: an event on the wire with a 2-octet index: g2v2 flags + time, g32v7 flags + float + time,
#: g22v5 flags + value + time
EVENT_BYTES = {BinaryEvent: 9, AnalogEvent: 13, CounterEvent: 13}


def _ms(ts: float) -> bytes:
    return int(ts * 1000).to_bytes(6, "little")


def _event_blocks(group: int, variation: int, items: list[tuple[int, bytes]]) -> list[ObjectBlock]:
    """Events with an index prefix (qualifier 0x17 or 0x28), split to fit a fragment."""
    if not items:
        return []
    wide = max(i for i, _ in items) > 255
    size = (2 if wide else 1) + len(items[0][1])
    per_block = max(1, (MAX_FRAGMENT - 64) // size)
    blocks = []
    for start in range(0, len(items), per_block):
        chunk = items[start : start + per_block]
        count = len(chunk).to_bytes(2 if wide else 1, "little")
        body = b"".join(i.to_bytes(2 if wide else 1, "little") + obj for i, obj in chunk)
        header = ObjectHeader(group=group, variation=variation, qualifier=0x28 if wide else 0x17)
        blocks.append(ObjectBlock(header=header, data=count + body))
    return blocks


def _static_blocks(group: int, variation: int, items: list[tuple[int, bytes]]) -> list[ObjectBlock]:
    """Static objects over contiguous index runs (qualifier 0x00 or 0x01), split to fit."""
    blocks: list[ObjectBlock] = []
    run: list[tuple[int, bytes]] = []
    per_block = max(1, (MAX_FRAGMENT - 64) // max(1, len(items[0][1]))) if items else 1
    for item in [*items, (-2, b"")]:
        if run and (item[0] != run[-1][0] + 1 or len(run) == per_block):
            lo, hi = run[0][0], run[-1][0]
            wide = hi > 255
            width = 2 if wide else 1
            rng = lo.to_bytes(width, "little") + hi.to_bytes(width, "little")
            header = ObjectHeader(
                group=group, variation=variation, qualifier=0x01 if wide else 0x00
            )
            blocks.append(ObjectBlock(header=header, data=rng + b"".join(o for _, o in run)))
            run = []
        if item[0] >= 0:
            run.append(item)
    return blocks


@dataclass
class SimOutstation(Outstation):
    """dnp3py's outstation with float analogs, timed events and double-bit inputs."""

    dbi: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (state, flags)
    dbi_events: deque[tuple[int, int, int, int, float]] = field(default_factory=deque)
    dbi_capacity: int = 1000
    _dbi_serial: int = 0

    def set_dbi(self, index: int, state: int, flags: int = ONLINE, ts: float | None = None) -> None:
        if self.dbi.get(index) == (state, flags):
            return
        self.dbi[index] = (state, flags)
        self._dbi_serial += 1
        if len(self.dbi_events) >= self.dbi_capacity:
            self.dbi_events.popleft()
            self._state.set_event_overflow()
        self.dbi_events.append((self._dbi_serial, index, state, flags, ts or time.time()))

    @property
    def iin(self) -> IIN:
        iin = super().iin
        return iin | IIN.CLASS_1_EVENTS if self.dbi_events else iin

    def _read_all_static_data(self) -> list[ObjectBlock]:
        items = [
            (i, bytes([flags | (state << 6)])) for i, (state, flags) in sorted(self.dbi.items())
        ]
        return [*super()._read_all_static_data(), *_static_blocks(3, 2, items)]

    def _build_analog_input_blocks(self, points: list[Any]) -> list[ObjectBlock]:
        items = [(p.index, bytes([int(p.quality)]) + struct.pack("<f", p.value)) for p in points]
        return _static_blocks(30, 5, items)

    def _build_binary_event_blocks(self, events: list[Any]) -> list[ObjectBlock]:
        items = [
            (e.index, bytes([int(e.quality) & 0x7F | (0x80 if e.value else 0)]) + self._time(e))
            for e in events
        ]
        return _event_blocks(2, 2, items)

    def _build_analog_event_blocks(self, events: list[Any]) -> list[ObjectBlock]:
        items = [
            (e.index, bytes([int(e.quality)]) + struct.pack("<f", e.value) + self._time(e))
            for e in events
        ]
        return _event_blocks(32, 7, items)

    @staticmethod
    def _time(event: Any) -> bytes:
        ts = event.timestamp.milliseconds / 1000 if event.timestamp else time.time()
        return _ms(ts)

    def _read_class_events(
        self, event_class: EventClass, seen_keys: Collection[Any] = ()
    ) -> tuple[list[ObjectBlock], list[Any]]:
        blocks, library_keys = super()._read_class_events(event_class, seen_keys)
        keys: list[Any] = list(library_keys)
        if event_class == EventClass.CLASS_1:
            pending = [e for e in self.dbi_events if ("dbi", e[0]) not in seen_keys]
            items = [(i, bytes([f | (s << 6)]) + _ms(ts)) for _, i, s, f, ts in pending]
            blocks = [*_event_blocks(4, 2, items), *blocks]
            keys = [*keys, *(("dbi", e[0]) for e in pending)]
        return blocks, keys

    def _remove_events_by_key(self, keys: Collection[Any]) -> None:
        mine = {k[1] for k in keys if k[0] == "dbi"}
        if mine:
            self.dbi_events = deque(e for e in self.dbi_events if e[0] not in mine)
        super()._remove_events_by_key([k for k in keys if k[0] != "dbi"])

    def _handle_read(self, request: Any) -> list[ResponseFragment]:
        """A read that empties the event buffers still reports IIN2.3 (the master learns of
        the overflow), and clears it for the responses after it."""
        responses: list[ResponseFragment] = super()._handle_read(request)
        buffer = self.database.event_buffer
        classes = (buffer.class1, buffer.class2, buffer.class3)
        if self._state.iin & IIN.EVENT_BUFFER_OVERFLOW and not self.dbi_events:
            if all(c.count == 0 for c in classes):
                for c in classes:
                    c.reset_overflow()
                self._state.clear_event_overflow()
        return responses

    def generate_unsolicited(self) -> ResponseFragment | None:
        """One fragment of the oldest events (an unsolicited response is a single fragment,
        IEEE 1815-2012 4.6.2); the rest wait for the next one. dnp3py's own puts every event
        in one fragment, however large."""
        unsolicited = self._state.unsolicited
        if unsolicited.pending_confirm:
            return None
        budget = MAX_FRAGMENT - 64  # headers, IIN, per-block overhead
        keys: list[Any] = []
        blocks: list[ObjectBlock] = []
        if unsolicited.class_1_enabled and self.dbi_events:
            dbi = []
            for event in self.dbi_events:
                if budget < 9:
                    break
                budget -= 9
                dbi.append(event)
            items = [(i, bytes([f | (st << 6)]) + _ms(ts)) for _, i, st, f, ts in dbi]
            blocks += _event_blocks(4, 2, items)
            keys += [("dbi", e[0]) for e in dbi]
        chosen: dict[type, list[Any]] = {BinaryEvent: [], AnalogEvent: [], CounterEvent: []}
        enabled = ((EventClass.CLASS_1, unsolicited.class_1_enabled),
                   (EventClass.CLASS_2, unsolicited.class_2_enabled),
                   (EventClass.CLASS_3, unsolicited.class_3_enabled))  # fmt: skip
        for event_class, on in enabled:
            if not on:
                continue
            buffered = self.database.event_buffer.read_class_events_with_serials(event_class)
            for serial, item in buffered:
                size = EVENT_BYTES[type(item)]
                if budget < size:
                    break
                budget -= size
                chosen[type(item)].append(item)
                keys.append((event_class, serial))
        blocks += self._build_binary_event_blocks(chosen[BinaryEvent])
        blocks += self._build_analog_event_blocks(chosen[AnalogEvent])
        blocks += self._build_counter_event_blocks(chosen[CounterEvent])
        if not keys:
            return None
        self._remove_events_by_key(keys)
        seq = self._state.sequences.next_unsolicited_seq()
        unsolicited.pending_confirm, unsolicited.confirm_sequence = True, seq
        return build_unsolicited_response(objects=tuple(blocks), iin=self.iin, seq=seq, con=True)


class _Breakers(DefaultCommandHandler):
    """CROB on breaker ``index``: refused in local mode, else the breaker travels."""

    def __init__(self, model: OutstationModel) -> None:
        self.model = model

    def _check(self, index: int, code: ControlCode) -> CommandResult | bool:
        m = self.model
        if index >= len(m.closed):
            return CommandResult(status=CommandStatus.NOT_SUPPORTED)
        if m.local[index]:
            return CommandResult.local("breaker in local mode")
        if code.tcc == TripCloseCode.CLOSE or code.op_type == OperationType.LATCH_ON:
            return True
        if code.tcc == TripCloseCode.TRIP or code.op_type == OperationType.LATCH_OFF:
            return False
        return CommandResult(status=CommandStatus.NOT_SUPPORTED)

    def select_binary_output(
        self, index: int, code: ControlCode, count: int, on_time: int, off_time: int
    ) -> CommandResult:
        checked = self._check(index, code)
        return checked if isinstance(checked, CommandResult) else CommandResult.success()

    def operate_binary_output(
        self,
        index: int,
        code: ControlCode,
        count: int,
        on_time: int,
        off_time: int,
        select_sequence: int,
    ) -> CommandResult:
        return self.direct_operate_binary_output(index, code, count, on_time, off_time)

    def direct_operate_binary_output(
        self, index: int, code: ControlCode, count: int, on_time: int, off_time: int
    ) -> CommandResult:
        checked = self._check(index, code)
        if isinstance(checked, CommandResult):
            return checked
        self.model.operate(index, checked)
        return CommandResult.success()

    def select_analog_output(self, index: int, value: float) -> CommandResult:
        return CommandResult.success() if index == 0 else CommandResult.not_supported()

    def operate_analog_output(
        self, index: int, value: float, select_sequence: int
    ) -> CommandResult:
        return self.direct_operate_analog_output(index, value)

    def direct_operate_analog_output(self, index: int, value: float) -> CommandResult:
        if index != 0:
            return CommandResult.not_supported()
        self.model.setpoint = value
        self.model.commands.append(("ao", 0, value))
        return CommandResult.success()


class OutstationModel:
    """One outstation's process: breakers with travel, feeders with noise."""

    def __init__(
        self,
        address: int,
        *,
        breakers: int,
        feeders: int,
        analogs: int,
        seed: int,
        travel_s: float,
        event_buffer: int,
        loop: Callable[[], asyncio.AbstractEventLoop],
    ) -> None:
        self.address, self.travel_s, self._loop = address, travel_s, loop
        self.closed = [True] * breakers
        self.local = [False] * breakers
        self.commands: list[tuple[str, int, Any]] = []
        self.time_syncs = 0
        self.setpoint = 0.0
        self._rng = random.Random(seed * 1000 + address)
        self._feeders, self._analogs = feeders, analogs
        self._amps = [200.0 + 50 * j for j in range(feeders)]
        self._extra = [100.0 + n for n in range(analogs)]
        self._energy = [1000 * (j + 1) for j in range(feeders)]
        self._forced: dict[tuple[str, int], int] = {}
        self._event_buffer = event_buffer
        self.outstation = self._build()

    @property
    def echo_index(self) -> int:
        return 3 * self._feeders + self._analogs

    def _build(self) -> SimOutstation:
        n_ai = self.echo_index + 1
        buffers = EventBufferConfig(max_binary_events=self._event_buffer,
                                    max_analog_events=self._event_buffer,
                                    max_counter_events=self._event_buffer)  # fmt: skip
        db = Database(config=DatabaseConfig(
            max_binary_inputs=len(self.closed) + 1, max_binary_outputs=len(self.closed) + 1,
            max_analog_inputs=n_ai, max_analog_outputs=1, max_counters=self._feeders + 1,
            event_buffer_config=buffers))  # fmt: skip
        for i in range(len(self.closed)):
            db.add_binary_input(i, value=False, quality=BinaryQuality.ONLINE)
            db.add_binary_output(i, value=self.closed[i], quality=BinaryQuality.ONLINE)
        for n in range(n_ai):
            cls = EventClass.CLASS_1 if n == self.echo_index else EventClass.CLASS_2
            deadband = 0.0 if n >= 3 * self._feeders else 0.5
            db.add_analog_input(n, config=AnalogInputConfig(event_class=cls, deadband=deadband),
                                quality=AnalogQuality.ONLINE)  # fmt: skip
        for j in range(self._feeders):
            db.add_counter(j, config=CounterConfig(event_class=EventClass.CLASS_3),
                           value=self._energy[j], quality=CounterQuality.ONLINE)  # fmt: skip
        db.add_analog_output(0, quality=AnalogQuality.ONLINE)
        config = OutstationConfig(address=self.address, max_fragment_size=MAX_FRAGMENT,
                                  analog_output_static_variation=1)  # fmt: skip
        station = SimOutstation(
            config=config,
            database=db,
            handler=_Breakers(self),
            time_handler=self._on_time,
            dbi_capacity=self._event_buffer,
        )
        for i, closed in enumerate(self.closed):
            station.dbi[i] = (DBI_STATE[closed], ONLINE)
        self._refresh(station, now=time.time())
        return station

    def _on_time(self, stamp: DNP3Timestamp) -> None:
        self.time_syncs += 1

    def restart(self) -> None:
        """A cold restart: a fresh database (every point RESTART until refreshed, faults on
        points cleared), IIN1.7."""
        self._forced.clear()
        self.outstation = self._build()

    def operate(self, index: int, close: bool) -> None:
        self.commands.append(("crob", index, close))
        station = self.outstation
        station.set_dbi(index, 0)
        self._loop().call_later(self.travel_s, self._arrive, index, close)

    def _arrive(self, index: int, close: bool) -> None:
        self.closed[index] = close
        self.outstation.set_dbi(index, DBI_STATE[close])
        self.outstation.database.update_binary_output(index, close, BinaryQuality.ONLINE)

    def force(self, kind: str, index: int, flags: int) -> None:
        self._forced[(kind, index)] = flags
        self._refresh(self.outstation, time.time())

    def _refresh(self, station: SimOutstation, now: float) -> None:
        db, rng, stamp = station.database, self._rng, DNP3Timestamp(int(now * 1000))
        for i in range(len(self.closed)):
            q = self._forced.get(("bi", i), ONLINE)
            db.update_binary_input(i, self.local[i], BinaryQuality(q), stamp)
            if ("dbi", i) in self._forced and station.dbi[i][0] != 0:
                station.set_dbi(i, DBI_STATE[self.closed[i]], self._forced[("dbi", i)], now)
        for j in range(self._feeders):
            self._amps[j] = max(0.0, self._amps[j] * (1 + rng.gauss(0, 0.004)))
            amps = self._amps[j] if any(self.closed) else 0.0
            volts = 11_000 * (1 + rng.gauss(0, 0.001))
            for n, value in ((3 * j, amps), (3 * j + 1, volts), (3 * j + 2, amps * volts * 1.7e-3)):
                q = self._forced.get(("ai", n), ONLINE)
                db.update_analog_input(n, round(value, 2), AnalogQuality(q), stamp)
            self._energy[j] += max(1, int(amps / 100))
            flags = CounterQuality(self._forced.get(("c", j), ONLINE))
            db.update_counter(j, self._energy[j], flags, stamp)
        for n in range(self._analogs):
            self._extra[n] += rng.choice((-1.0, 1.0)) * rng.uniform(0.1, 1.0)
            base = 3 * self._feeders + n
            db.update_analog_input(
                base,
                round(self._extra[n], 3),
                AnalogQuality(self._forced.get(("ai", base), ONLINE)),
                stamp,
            )
        db.update_analog_input(self.echo_index, self.setpoint, AnalogQuality.ONLINE, stamp)

    def refresh(self) -> None:
        self._refresh(self.outstation, time.time())


@dataclass
class _Session:
    """Per outstation, on the connection in use: reassembly and fragments awaiting CONFIRM."""

    reassembler: Reassembler = field(
        default_factory=lambda: Reassembler(max_fragment_size=MAX_FRAGMENT)
    )
    pending: deque[bytes] = field(default_factory=deque)
    waiting_seq: int | None = None
    master: int = 1
    unsolicited_at: float = 0.0  # when the unconfirmed unsolicited response went out


class Dnp3Station:
    """Outstations at ``addresses`` on TCP ``port`` (or the serial line ``serial``), in a thread."""

    def __init__(
        self,
        port: int | None = None,
        *,
        serial: str | None = None,
        host: str = "127.0.0.1",
        addresses: tuple[int, ...] = (10,),
        breakers: int = 2,
        feeders: int = 2,
        analogs: int = 0,
        seed: int = 1,
        travel_s: float = 0.3,
        refresh_s: float = 0.2,
        event_buffer: int = 1000,
    ) -> None:
        if (port is None) == (serial is None):
            raise ValueError("give a TCP port or a serial device, not both")
        self.port, self.serial, self.host = port, serial, host
        self.refresh_s, self.slow_s = refresh_s, 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.outstations = {
            a: OutstationModel(
                a,
                breakers=breakers,
                feeders=feeders,
                analogs=analogs,
                seed=seed,
                travel_s=travel_s,
                event_buffer=event_buffer,
                loop=self._running_loop,
            )
            for a in addresses
        }
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._writer: Callable[[bytes], Coroutine[Any, Any, None]] | None = None
        self._close_connection: Callable[[], None] | None = None
        self._sessions: dict[int, _Session] = {}
        self._confirmed = asyncio.Event()  # an unsolicited response was confirmed
        self.connections = 0
        self.requests = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    # -- lifecycle (from any thread) ---------------------------------------------------------

    def start(self) -> Dnp3Station:
        self._thread = threading.Thread(target=self._main, name="dnp3-station", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("DNP3 station did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Dnp3Station:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the station's loop and return its result."""
        if self._loop is None:
            return fn()

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # -- faults and inspection -----------------------------------------------------------------

    def drop(self) -> None:
        """Close the connection in use (a cable pulled, a port server restarted)."""
        self._call(lambda: self._close_connection() if self._close_connection else None)

    def restart(self, address: int) -> None:
        """A cold restart of one outstation: IIN1.7, every point RESTART; the link dropped."""

        def go() -> None:
            self.outstations[address].restart()
            if self._close_connection and self.serial is None:
                self._close_connection()

        self._call(go)

    def set_quality(self, address: int, kind: str, index: int, *flags: str) -> None:
        """Flags (``comm_lost``, ``over_range``, ``local_forced``, ... ; none: back to online)
        on one point (``ai``, ``bi``, ``dbi``, ``c``); an event carries them."""
        bits = ONLINE  # online unless said otherwise
        for flag in flags:
            bits |= FLAGS[flag]
        if "comm_lost" in flags or "offline" in flags:
            bits &= ~ONLINE
        self._call(lambda: self.outstations[address].force(kind, index, bits))

    def local_mode(self, address: int, breaker: int, on: bool = True) -> None:
        def go() -> None:
            self.outstations[address].local[breaker] = on
            self.outstations[address].refresh()

        self._call(go)

    def overflow(self, address: int) -> None:
        """More events than the buffer holds: the oldest are lost, IIN2.3 is set."""

        def go() -> None:
            station = self.outstations[address].outstation
            for n in range(station.dbi_capacity + 1):
                station.set_dbi(0, (n % 2) + 1)
            station.set_dbi(0, DBI_STATE[self.outstations[address].closed[0]])

        self._call(go)

    def need_time(self, address: int) -> None:
        self._call(lambda: self.outstations[address].outstation._state.set_need_time())

    def iin(self, address: int) -> int:
        return int(self._call(lambda: self.outstations[address].outstation.iin))

    # -- the loop ------------------------------------------------------------------------------

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        refresher = asyncio.create_task(self._refresh_loop())
        unsolicited = asyncio.create_task(self._unsolicited_loop())
        try:
            if self.serial is not None:
                await self._serve_serial(self.serial)
            else:
                server = await asyncio.start_server(self._on_tcp, self.host, self.port)
                self._ready.set()
                async with server:
                    await self._stopping.wait()
        finally:
            refresher.cancel()
            unsolicited.cancel()
            if self._close_connection:
                self._close_connection()

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._close_connection:  # DNP3 over TCP is point to point: the newest wins
            self._close_connection()
        self.connections += 1

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        self._attach(write, writer.close)
        try:
            while data := await reader.read(4096):
                await self._feed(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if self._writer is write:
                self._detach()
            writer.close()

    async def _serve_serial(self, path: str) -> None:
        import serial  # pyserial: the line's settings (raw, 9600 8N1 by default)

        port = serial.Serial(path, 9600, timeout=0)
        fd = port.fileno()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        loop.add_reader(fd, lambda: queue.put_nowait(os.read(fd, 4096)))

        async def write(data: bytes) -> None:
            os.write(fd, data)

        self._attach(write, lambda: None)
        self._ready.set()
        try:
            while not self._stopping.is_set():  # type: ignore[union-attr]
                with contextlib.suppress(TimeoutError):
                    await self._feed(await asyncio.wait_for(queue.get(), 0.5))
        finally:
            loop.remove_reader(fd)
            port.close()

    def _attach(
        self, write: Callable[[bytes], Coroutine[Any, Any, None]], close: Callable[[], None]
    ) -> None:
        self._writer, self._close_connection = write, close
        self._parser = FrameParser()
        self._sessions = {}
        for model in self.outstations.values():
            model.outstation._state.unsolicited.pending_confirm = False

    def _detach(self) -> None:
        self._writer = self._close_connection = None
        for model in self.outstations.values():
            model.outstation._state.unsolicited.pending_confirm = False

    async def _feed(self, data: bytes) -> None:
        for frame in self._parser.feed(data):
            address = frame.header.destination
            model = self.outstations.get(address)
            if model is None or not frame.header.control.prm:
                continue
            session = self._sessions.setdefault(address, _Session())
            session.master = frame.header.source
            fc = frame.header.control.function_code
            if fc in (LinkFunctionCode.PRI_RESET_LINK_STATE, LinkFunctionCode.PRI_TEST_LINK_STATE):
                await self._send(build_ack(session.master, address, False).to_bytes())
                continue
            if fc == LinkFunctionCode.PRI_REQUEST_LINK_STATUS:
                await self._send(build_link_status(session.master, address, False).to_bytes())
                continue
            if fc == LinkFunctionCode.PRI_CONFIRMED_USER_DATA:
                await self._send(build_ack(session.master, address, False).to_bytes())
            elif fc != LinkFunctionCode.PRI_UNCONFIRMED_USER_DATA or not frame.user_data:
                continue
            result = session.reassembler.add(TransportSegment.from_bytes(frame.user_data))
            if result is not None:
                await self._request(model, session, result.data)

    async def _request(self, model: OutstationModel, session: _Session, data: bytes) -> None:
        self.requests += 1
        if len(data) >= 2 and data[1] == 0:  # CONFIRM
            seq, uns = data[0] & 0x0F, bool(data[0] & 0x10)
            if uns:
                self._confirmed.set()
            if not uns and session.waiting_seq == seq and session.pending:
                session.waiting_seq = None
                await self._fragment(model, session, session.pending.popleft())
                return
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        peer = PeerId(source=session.master, connection=1)
        responses = model.outstation.process_request(data, peer=peer)
        raw = [r.to_bytes() for r in responses]
        for i in range(len(raw) - 1):  # CON on every fragment but the last
            raw[i] = bytes([raw[i][0] | 0x20]) + raw[i][1:]
        session.pending = deque(raw[1:])
        if raw:
            await self._fragment(model, session, raw[0])

    async def _fragment(self, model: OutstationModel, session: _Session, data: bytes) -> None:
        if data[0] & 0x20 and not data[0] & 0x10:
            session.waiting_seq = data[0] & 0x0F
        for segment in Segmenter().segment(data):
            frame = build_unconfirmed_user_data(destination=session.master, source=model.address,
                                                dir_from_master=False,
                                                user_data=segment.to_bytes())  # fmt: skip
            await self._send(frame.to_bytes())

    async def _send(self, data: bytes) -> None:
        if self._writer is not None:
            try:
                await self._writer(data)
            except (ConnectionError, OSError):
                self._detach()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            for model in self.outstations.values():
                model.refresh()

    async def _unsolicited_loop(self) -> None:
        """Events go out as soon as there are any and the last response was confirmed."""
        while True:
            self._confirmed.clear()  # before sending: the CONFIRM may come back at once
            sent = await self._unsolicited_round()
            if sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._confirmed.wait(), 5)
            else:
                await asyncio.sleep(0.02)

    async def _unsolicited_round(self) -> bool:
        sent = False
        if self._writer is not None:
            for model in self.outstations.values():
                session = self._sessions.get(model.address)
                if session is None or session.waiting_seq is not None:
                    continue
                unsolicited = model.outstation._state.unsolicited
                if unsolicited.pending_confirm and time.monotonic() - session.unsolicited_at > 5:
                    unsolicited.pending_confirm = False  # no CONFIRM: try again (new events)
                response = model.outstation.generate_unsolicited()
                if response is not None:
                    session.unsolicited_at = time.monotonic()
                    await self._fragment(model, session, response.to_bytes())
                    sent = True
        return sent
