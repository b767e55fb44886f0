"""Signed control: commands from central systems, checked, executed and answered.

A command is a signed envelope (``wire.envelope``) on the twin's control topic, e.g.
``openfmb/switchmodule/SwitchDiscreteControlProfile/<mRID>``, whose header also carries ``exp``
(ms since the epoch). Every message is parsed into bounded, typed parts before anything else
reads it, and nothing of a body is read before its signature verified. The checks, cheapest
first:

At arrival (in the event loop, microseconds, no signature work):

1. size (``oversized``: over ``max_message_bytes``, before any decoding), form and a bounded
   header (``malformed``: ``wire.envelope.open_envelope``);
2. the key id is in the trust file (``unknown_key``); the signed ``tpc`` is the topic it arrived
   on (``topic_mismatch``);
3. its validity window (``agent.validity``): ``ts`` not beyond ``max_clock_skew_s`` ahead
   (``not_yet_valid``) and not past its deadline -- ``exp``, or ``ts`` + ``max_age_s`` without
   one, and never later than ``ts`` + ``max_lifetime_s`` (``expired``);
4. its ``(kid, seq)`` was not accepted before (``replayed``).

What passes could be valid: it waits in a queue bounded in bytes (``queue_bytes``); when full
the oldest waiting command is shed, and every shed command is answered (``shed``, by kid and
seq). A command whose deadline passes while it waits is refused ``expired`` unverified. Then,
in batches on a worker thread (Ed25519 releases the GIL):

5. the signature (``bad_signature``);
6. the body (``twins.control.parse_frame``): a control map naming the twin (``malformed``,
   ``wrong_equipment``), a command the twin accepts (``unknown_action``, ``malformed``,
   ``out_of_order`` curve points, ``out_of_range`` setpoints), and the key is authorized for
   this twin and that action (``unauthorized``);
7. the ``(kid, seq)`` is recorded in ``control.db`` until its deadline has long passed, *before*
   execution, so a restart cannot re-open it (``replayed``);
8. the twin is commissioned (``not_commissioned``); a schedule was not signed before the one in
   force (``out_of_order``); the interlocks allow it and at most ``max_operations_per_minute``
   (``interlock``, ``rate_limited``).

Then the writes go through the device's runtime (between polls, the point map's transform
undone) and are read back: ``executed`` when every read-back confirms its value, ``failed``
otherwise (``readback``), or when the device refuses (``refused_by_device``, with the device's
own ``answer``: a DNP3 CommandStatus, an IEC 104 negative confirmation, a Modbus exception) or
cannot be reached (``device``). A write to a command point (``@Cmd``) is confirmed by the
position it names reaching the commanded state within ``operate_timeout_s``. A schedule is
``accepted`` and handed to ``agent.runtime.schedule``, which applies each curve point at its
time; each application checks the interlocks again and ends in its own result event
(``schedulePoint``: its index). Every command ends in a signed result event on the twin's event
profile, through the outbox as an event (dropped last). A refusal before the signature verified
echoes only the bounded header's ``kid`` and ``seq``. Refusals are logged and published up to
``refusal_events_per_s`` per twin; the rest are only counted (by reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetwin.agent.northbound.outbox import Outbox
from edgetwin.agent.runtime.config import AgentConfig, ControlConfig, TwinConfig
from edgetwin.agent.runtime.localstate import commissioned
from edgetwin.agent.runtime.running import RunningDevice
from edgetwin.agent.runtime.schedule import Schedule, ScheduleRunner, ScheduleStore
from edgetwin.agent.runtime.trust import load_trust
from edgetwin.core.clock import Clock, SystemClock
from edgetwin.core.errors import DeviceError, DeviceRejected, VerificationError
from edgetwin.core.files import open_state_db, state_dir
from edgetwin.core.models import Reading
from edgetwin.drivers.metering import MeterSource, Register
from edgetwin.twins.base import BoundPoint, event_message
from edgetwin.twins.control import (
    BadCommand,
    Command,
    Controllable,
    Frame,
    Write,
    is_controllable,
    parse_frame,
)
from edgetwin.wire.envelope import (
    Header,
    Sealed,
    Verified,
    check_signature,
    open_envelope,
    pack,
    unpack,
)

log = logging.getLogger(__name__)

QUEUE_LIMIT = 50_000  # commands waiting for verification (also bounded in bytes)
VERIFY_BATCH = 64
POSITION_POLL_S = 0.02  # between reads of a position after a command point was written
SHED_LISTED = 500  # (kid, seq) pairs named in one shed answer; more are counted


class ReplayGuard:
    """The ``(kid, seq)`` of every accepted command, kept until its validity window has long
    passed (``until_ms``); persisted in ``control.db``.

    Replay protection rests on the validity window, not on ``seq`` growing: a command outside
    its window is refused as ``expired`` or ``not_yet_valid`` anyway, so only the commands that
    could still be accepted need remembering. ``seq`` is then a nonce per key: a central
    system's clock error or a far-future ``seq`` locks nobody out, and the table holds at most
    the commands trusted keys signed within one lifetime.
    """

    PRUNE_EVERY = 256

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._accepted = 0
        with contextlib.suppress(sqlite3.Error, OSError):  # a full disk: opened when needed
            self._open()

    def _open(self) -> sqlite3.Connection:
        """The database, opened now if it could not be before; raises ``sqlite3.Error`` or
        ``OSError`` (a full disk): the caller refuses the command, never executes it."""
        if self._db is None:
            self._db = open_state_db(
                self._path,
                "DROP TABLE IF EXISTS seen",  # the seq window of earlier versions
                "CREATE TABLE IF NOT EXISTS nonces (kid TEXT, seq INTEGER, until_ms INTEGER,"
                " PRIMARY KEY (kid, seq))",
            )
        return self._db

    def seen(self, kid: str, seq: int) -> bool:
        row = self._open().execute("SELECT 1 FROM nonces WHERE kid = ? AND seq = ?", (kid, seq))
        return row.fetchone() is not None

    def accept(self, kid: str, seq: int, until_ms: int, now_ms: int) -> bool:
        """Record ``(kid, seq)`` until ``until_ms`` and return True, unless it was seen."""
        db = self._open()
        try:
            db.execute(
                "INSERT INTO nonces (kid, seq, until_ms) VALUES (?, ?, ?)", (kid, seq, until_ms)
            )
        except sqlite3.IntegrityError:
            return False
        self._accepted += 1
        if self._accepted % self.PRUNE_EVERY == 0:
            db.execute("DELETE FROM nonces WHERE until_ms < ?", (now_ms,))
        return True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class Refused(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ControlService:
    """Receives commands (``submit``, in the event loop), checks and executes them."""

    def __init__(
        self,
        config: AgentConfig,
        control: ControlConfig,
        outbox: Outbox,
        devices: Mapping[str, RunningDevice],
        *,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._control = control
        self._outbox = outbox
        self._devices = devices
        self._clock = clock or SystemClock()
        self._grants = load_trust(control.trust_file)
        self._keys = {kid: g.key for kid, g in self._grants.items()}
        data_dir = config.agent.data_dir
        state_dir(data_dir)
        self._replay = ReplayGuard(data_dir / "control.db")
        self.schedules = ScheduleRunner(
            ScheduleStore(data_dir / "control.db"), self._clock, self._apply_point
        )
        prefix = config.agent.mqtt.topic_prefix
        self._twins: dict[str, Controllable] = {}
        self.topics: dict[str, str] = {}  # control topic -> mRID
        for twin in config.twins:
            if is_controllable(twin):
                controllable: Controllable = twin  # type: ignore[assignment]
                topic = controllable.control_profile.topic(prefix, twin.spec.mrid)
                self._twins[twin.spec.mrid] = controllable
                self.topics[topic] = twin.spec.mrid
        self._twin_config: dict[str, TwinConfig] = {t.mrid: t for t in config.agent.twins}
        self._queue: deque[_Candidate] = deque()
        self._queue_bytes = 0
        self._wake = asyncio.Event()
        self._shed: dict[str, list[tuple[str, int]]] = {}  # mRID -> shed (kid, seq), to answer
        self._operations: dict[str, list[float]] = {}
        self._refusal_budget: dict[str, tuple[float, float]] = {}
        #: per twin: (command, point, detail) of the last failed application, so a point
        #: retried through an outage publishes its first failure and its outcome only
        self._point_failures: dict[str, tuple[str | None, int, Any]] = {}
        self.counters = {
            "received": 0,
            "executed": 0,
            "failed": 0,
            "refused": 0,
            "schedules_accepted": 0,
            "shed": 0,
            "refusal_events_suppressed": 0,
        }
        self.refusals: dict[str, int] = {}

    def submit(self, topic: str, payload: bytes) -> None:
        """Called in the event loop for each message that arrives on a control topic: the cheap
        checks (1-4 in the module docstring) at once, then the queue for verification."""
        self.counters["received"] += 1
        mrid = self.topics.get(topic)
        if mrid is None:  # not one of ours (the broker matched another subscription)
            self._count_refusal("unknown_twin")
            return
        header: Header | None = None
        try:
            sealed = open_envelope(payload, self._control.max_message_bytes)
            header = sealed.header
            deadline = self._precheck(topic, header)
        except (VerificationError, Refused) as err:
            self._refuse(mrid, err.reason, err.detail, header)
            return
        self._enqueue(_Candidate(mrid, sealed, deadline, len(payload)))

    def _precheck(self, topic: str, header: Header) -> int:
        """Checks that need no signature; returns the command's deadline (ms)."""
        if header.kid not in self._grants:
            raise Refused("unknown_key", f"kid {header.kid!r} is not trusted")
        if header.tpc != topic:
            raise Refused("topic_mismatch", f"signed for {header.tpc!r}")
        now_ms = int(self._clock.time() * 1000)
        c = self._control
        if header.ts > now_ms + c.max_clock_skew_s * 1000:
            raise Refused("not_yet_valid", f"signed {(header.ts - now_ms) / 1000:.1f} s ahead")
        deadline = self._deadline(header)
        if now_ms > deadline:
            raise Refused("expired", f"{(now_ms - deadline) / 1000:.1f} s ago")
        if _storage(self._replay.seen, header.kid, header.seq):
            raise Refused("replayed", f"seq {header.seq} from {header.kid} was seen before")
        return deadline

    def _deadline(self, header: Header) -> int:
        c = self._control
        own = header.exp if header.exp is not None else header.ts + int(c.max_age_s * 1000)
        return min(own, header.ts + int(c.max_lifetime_s * 1000))

    def _enqueue(self, candidate: _Candidate) -> None:
        limit = self._control.queue_bytes
        while self._queue and (
            self._queue_bytes + candidate.size > limit or len(self._queue) >= QUEUE_LIMIT
        ):
            old = self._queue.popleft()  # the oldest is the likeliest to expire anyway
            self._queue_bytes -= old.size
            self._shed_one(old)
        self._queue.append(candidate)
        self._queue_bytes += candidate.size
        self._wake.set()

    def _shed_one(self, candidate: _Candidate) -> None:
        self.counters["shed"] += 1
        self._count_refusal("shed")
        h = candidate.sealed.header
        self._shed.setdefault(candidate.mrid, []).append((h.kid, h.seq))

    async def run(self) -> None:
        # schedules resume once their devices were polled: interlocks need the twins' state
        await asyncio.gather(*(d.attempted.wait() for d in self._devices.values()))
        self.schedules.start()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await self._verify_next_batch()
                    self._answer_shed()
                self._answer_shed()
        finally:
            await self.schedules.close()
            self._replay.close()

    async def _verify_next_batch(self) -> None:
        now_ms = self._clock.time() * 1000
        batch: list[_Candidate] = []
        while self._queue and len(batch) < VERIFY_BATCH:
            candidate = self._queue.popleft()
            self._queue_bytes -= candidate.size
            if now_ms > candidate.deadline:  # expired while waiting: no need to verify it
                late = (now_ms - candidate.deadline) / 1000
                self._refuse(candidate.mrid, "expired", f"{late:.1f} s ago, while queued",
                             candidate.sealed.header)  # fmt: skip
            else:
                batch.append(candidate)
        if not batch:
            return
        verified = await asyncio.to_thread(self._verify_all, [c.sealed for c in batch])
        for candidate, v in zip(batch, verified, strict=True):
            await self._handle(candidate, v)
            await asyncio.sleep(0)  # telemetry gets its turn between commands

    def _verify_all(self, batch: list[Sealed]) -> list[Verified | VerificationError]:
        out: list[Verified | VerificationError] = []
        for sealed in batch:
            try:
                out.append(check_signature(sealed, self._keys))
            except VerificationError as err:
                out.append(err)
        return out

    async def handle(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        """Check and execute one command at once, bypassing the queue (tests, tools); return its
        result, or None when it was refused before verification."""
        before = self.counters["refused"]
        self.submit(topic, payload)
        if self.counters["refused"] > before or not self._queue:
            return None
        candidate = self._queue.pop()
        self._queue_bytes -= candidate.size
        return await self._handle(candidate, self._verify_all([candidate.sealed])[0])

    async def _handle(
        self, candidate: _Candidate, verified: Verified | VerificationError
    ) -> dict[str, Any] | None:
        mrid, header = candidate.mrid, candidate.sealed.header
        if isinstance(verified, VerificationError):
            self._refuse(mrid, verified.reason, verified.detail, header)
            return None
        action: str | None = None
        command_mrid: str | None = None
        try:
            body, frame = self._frame(mrid, verified)
            command_mrid = frame.command_mrid  # authentic: echoed even if refused below
            command = self._check(mrid, verified, body, frame, candidate.deadline)
            action = command.action
            if command.schedule:
                result = self._accept_schedule(mrid, header, command, command_mrid)
            elif command.reads is not None:
                result = await self._read(mrid, command.reads)
            else:
                result = await self._execute(mrid, command.writes)
        except Refused as refusal:
            return self._refuse(mrid, refusal.reason, refusal.detail, header,
                                action=action, command_mrid=command_mrid)  # fmt: skip
        result.update(action=action, kid=header.kid, seq=header.seq, commandMRID=command_mrid)
        self._publish(mrid, result)
        return result

    def _frame(self, mrid: str, verified: Verified) -> tuple[Any, Frame]:
        """The authentic body and its frame (the command's mRID and the twin it names)."""
        try:
            body = unpack(verified.payload)
        except Exception:
            raise Refused("malformed", "payload is not msgpack") from None
        try:
            return body, parse_frame(body, self._twins[mrid].control_profile)
        except BadCommand as err:
            raise Refused(err.reason, err.detail) from None

    def _check(
        self, mrid: str, verified: Verified, body: Any, frame: Frame, deadline: int
    ) -> Command:
        """Checks 6-8 on an authentic command; returns what it asks."""
        header = verified.header
        if frame.equipment_mrid != mrid:
            raise Refused("wrong_equipment", f"the command names {frame.equipment_mrid!r}")
        twin = self._twins[mrid]
        try:
            command = twin.parse_command(body)
        except BadCommand as err:
            raise Refused(err.reason, err.detail) from None
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as err:
            # a twin plugin that did not expect this shape: refused, never a crash
            log.error("control: %s could not parse a signed command: %r", mrid, err)
            raise Refused(
                "malformed", f"the control map could not be read ({type(err).__name__})"
            ) from None
        if not self._grants[header.kid].allows(mrid, command.action):
            raise Refused("unauthorized", f"key {header.kid} may not {command.action} {mrid}")
        now_ms = int(self._clock.time() * 1000)
        keep_until = deadline + int(self._control.max_lifetime_s * 1000)  # clock steps back
        if not _storage(self._replay.accept, header.kid, header.seq, keep_until, now_ms):
            raise Refused("replayed", f"seq {header.seq} from {header.kid} was seen before")
        if mrid not in commissioned(self._config.agent.data_dir):
            raise Refused("not_commissioned", "run: edgetwin commission CONFIG MRID")
        in_force = self.schedules.in_force(mrid)
        if command.schedule and in_force is not None and header.ts < in_force.ts_ms:
            raise Refused("out_of_order", "signed before the schedule in force")
        self._interlocks(mrid, command.action)
        self._rate_limit(mrid)
        return command

    def _count_refusal(self, reason: str) -> None:
        self.counters["refused"] += 1
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def _refuse(
        self,
        mrid: str,
        reason: str,
        detail: str,
        header: Header | None,
        *,
        action: str | None = None,
        command_mrid: str | None = None,
    ) -> dict[str, Any]:
        """Count, log and answer a refusal (within the twin's refusal budget). Before the
        signature verified only the bounded header's kid and seq are echoed; after it, also
        the command's action and mRID."""
        self._count_refusal(reason)
        result: dict[str, Any] = {"result": "refused", "reason": reason, "detail": detail,
                                  "action": action, "commandMRID": command_mrid}  # fmt: skip
        if header is not None:
            result.update(kid=header.kid, seq=header.seq)
        if not self._may_publish_refusal(mrid):
            log.debug("control: refused command for %s: %s: %s", mrid, reason, detail)
            return result
        log.warning("control: refused command for %s: %s: %s", mrid, reason, detail)
        self._publish(mrid, result)
        return result

    def _answer_shed(self) -> None:
        """One answer per twin naming the commands shed since the last: senders retry them."""
        for mrid, shed in self._shed.items():
            listed = [{"kid": kid, "seq": seq} for kid, seq in shed[:SHED_LISTED]]
            self._publish(mrid, {"result": "refused", "reason": "shed",
                                 "detail": "overloaded: shed before verification; send again",
                                 "count": len(shed), "commands": listed})  # fmt: skip
        self._shed.clear()

    def _interlocks(self, mrid: str, action: str) -> None:
        """The twin's interlocks (``edge_rules.interlock``) for ``action``, on its state now."""
        points = self._twins[mrid].state().points
        for lock in self._config.interlocks.get(mrid, ()):
            if lock.action == action and (why := lock.blocks(points)) is not None:
                raise Refused("interlock", why)

    def _rate_limit(self, mrid: str) -> None:
        now = self._clock.time()
        recent = [t for t in self._operations.get(mrid, []) if now - t < 60]
        if len(recent) >= self._twin_config[mrid].max_operations_per_minute:
            raise Refused("rate_limited", f"{len(recent)} operations in the last minute")
        self._operations[mrid] = [*recent, now]

    def _accept_schedule(
        self, mrid: str, header: Header, command: Command, command_mrid: str | None
    ) -> dict[str, Any]:
        schedule = Schedule(mrid, header.kid, header.ts, command_mrid, command.schedule)
        _storage(self.schedules.accept, schedule)  # stored before it runs, or refused
        self.counters["schedules_accepted"] += 1
        log.info("control: schedule of %d points accepted for %s", len(schedule.points), mrid)
        return {"result": "accepted", "points": len(schedule.points)}

    async def _apply_point(self, schedule: Schedule, index: int) -> bool:
        """Apply one curve point (``agent.runtime.schedule``'s callback): interlocks, writes,
        event."""
        mrid = schedule.mrid
        try:
            self._interlocks(mrid, "schedule")
        except Refused as refusal:
            result: dict[str, Any] = {
                "result": "refused",
                "reason": refusal.reason,
                "detail": refusal.detail,
            }
            done = False  # retried: applied if the interlock clears before the next point
        else:
            result = await self._execute(mrid, schedule.points[index].writes)
            done = result["result"] == "executed"
        result.update(
            action="schedule", kid=schedule.kid, commandMRID=schedule.command_mrid,
            schedulePoint=index,
        )  # fmt: skip
        failure = (schedule.command_mrid, index, result.get("detail"))
        repeated = not done and self._point_failures.get(mrid) == failure
        if done:
            self._point_failures.pop(mrid, None)
        else:
            self._point_failures[mrid] = failure
        if not repeated:
            if not done:
                log.warning("control: schedule point %d for %s: %s", index, mrid, result)
            self._publish(mrid, result)
        return done

    async def _execute(self, mrid: str, writes: tuple[Write, ...]) -> dict[str, Any]:
        twin = self._twins[mrid]
        points = {bp.field: bp for bp in twin.bound_points()}
        device = self._devices[twin.spec.device]
        readback: dict[str, Any] = {}
        for write in writes:
            bp = points[write.field]
            check = points[write.confirm.field] if write.confirm else bp
            expected = write.confirm.value if write.confirm else write.value
            try:
                raw = bp.entry.untransform(write.value)
                reading = await device.execute(bp.spec, raw, read_back=check.spec)
                if write.confirm is not None:
                    reading = await self._await_position(device, check, expected, reading)
            except DeviceRejected as err:  # the device's own answer: a refusal
                self.counters["failed"] += 1
                log.error("control: %s refused %s of %s: %s", device.config.name,
                          write.field, mrid, err)  # fmt: skip
                return {"result": "failed", "reason": "refused_by_device", "detail": str(err),
                        "answer": err.answer or str(err)}  # fmt: skip
            except (DeviceError, TimeoutError, OSError, ValueError) as err:
                self.counters["failed"] += 1
                log.error("control: writing %s of %s failed: %s", write.field, mrid, err)
                return {"result": "failed", "reason": "device", "detail": str(err)}
            value = check.entry.transform(reading.value) if reading.quality.is_good else None
            readback[check.field.removeprefix("@")] = value
            if not (reading.quality.is_good and check.entry.same(value, expected)):
                self.counters["failed"] += 1
                waited = f" within {self._control.operate_timeout_s:g} s" if write.confirm else ""
                return {
                    "result": "failed",
                    "reason": "readback",
                    "detail": f"{check.field} read back {value!r} "
                    f"({reading.quality.validity.value}){waited}, expected {expected!r}",
                }
        self.counters["executed"] += 1
        log.info("control: %s executed and confirmed", mrid)
        return {"result": "executed", "readback": readback}

    async def _read(self, mrid: str, codes: tuple[str, ...]) -> dict[str, Any]:
        """An on-demand read: the named registers (or every register the twin maps) read now
        -- from the meter's memory through a ``MeterSource``, else the twin's points by
        address -- as the result's ``readings``."""
        twin = self._twins[mrid]
        device = self._devices[twin.spec.device]
        mapped = [bp for bp in twin.bound_points() if bp.polled]
        wanted = list(codes) or list(dict.fromkeys(str(bp.spec.address) for bp in mapped))
        try:
            if isinstance(source := device.driver, MeterSource):

                async def fresh(_driver: object) -> list[Register]:
                    return await source.registers(wanted)

                found = await device.use(fresh, self._read_timeout(device))
                readings = [r.as_dict() for r in found]
            else:
                by_address = {str(bp.spec.address): bp for bp in mapped}
                missing = [c for c in wanted if c not in by_address]
                if missing:
                    raise Refused(
                        "unknown_register", f"{missing[0]} is not among this twin's points"
                    )
                specs = [by_address[c].spec for c in wanted]
                got = await device.use(lambda d: d.read(specs), self._read_timeout(device))
                readings = [{"obis": c, "value": r.value,
                             "quality": "good" if r.quality.is_good else "invalid"}
                            for c, r in zip(wanted, got, strict=False)]  # fmt: skip
        except DeviceError as err:
            self.counters["failed"] += 1
            log.error("control: on-demand read of %s failed: %s", mrid, err)
            return {"result": "failed", "reason": "device", "detail": str(err)}
        self.counters["executed"] += 1
        return {"result": "executed", "readings": readings, "readAt": self._clock.time()}

    @staticmethod
    def _read_timeout(device: RunningDevice) -> float:
        return device.config.timeout_s * 4 + device.config.connect_timeout_s

    async def _await_position(
        self, device: RunningDevice, check: BoundPoint, expected: Any, reading: Reading
    ) -> Reading:
        """After a command point was written: read the position until it holds ``expected``
        (a breaker's travel, through intermediate) or ``operate_timeout_s`` passed."""
        deadline = self._clock.monotonic() + self._control.operate_timeout_s
        while not _holds(check, reading, expected) and self._clock.monotonic() < deadline:
            await self._clock.sleep(POSITION_POLL_S)
            reading = await device.observe(check.spec)
        return reading

    def _may_publish_refusal(self, mrid: str) -> bool:
        """A token bucket per twin for refusal events."""
        now = self._clock.time()
        rate = self._control.refusal_events_per_s
        tokens, last = self._refusal_budget.get(mrid, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1:
            self._refusal_budget[mrid] = (tokens, now)
            self.counters["refusal_events_suppressed"] += 1
            return False
        self._refusal_budget[mrid] = (tokens - 1, now)
        return True

    def _publish(self, mrid: str, result: dict[str, Any]) -> None:
        twin = self._twins.get(mrid)
        if twin is None:
            return
        out = event_message(twin, "commandResult", result, self._clock.time())
        self._outbox.submit(out.topic, pack(out.payload), int(out.klass))

    def status(self) -> dict[str, Any]:
        return {
            **self.counters,
            "refusals": dict(self.refusals),
            "schedules": {
                mrid: {"points": len(s.points), "in_force": s.in_force(self._clock.time())}
                for mrid in self._twins
                if (s := self.schedules.in_force(mrid)) is not None
            },
        }


def _holds(bp: BoundPoint, reading: Reading, expected: Any) -> bool:
    if not reading.quality.is_good:
        return False
    return bool(bp.entry.same(bp.entry.transform(reading.value), expected))


def _storage(call: Callable[..., Any], *args: Any) -> Any:
    """A ``control.db`` operation; a database that cannot be written (a full disk) refuses the
    command -- replay protection that cannot record is no protection."""
    try:
        return call(*args)
    except (sqlite3.Error, OSError) as err:
        raise Refused("storage_unavailable", f"control.db: {err}") from None


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A command that passed the cheap checks and waits for its signature to be verified."""

    mrid: str
    sealed: Sealed
    deadline: int  # ms since the epoch
    size: int  # bytes on the wire


class CommandListener:
    """An MQTT session of its own (client id ``<id>-control``) subscribed at QoS 1 to the
    control topics; every message is handed to ``on_message`` in the event loop."""

    def __init__(
        self,
        cfg: Any,
        client_id: str,
        topics: list[str],
        on_message: Callable[[str, bytes], None],
        *,
        max_message_bytes: int = 64 * 1024,
    ) -> None:
        from edgetwin.agent.northbound.mqtt import make_client

        self._cfg = cfg
        # MQTT 5 Maximum Packet Size: the broker itself drops anything larger for this session,
        # so an oversized message never reaches our memory (room left for topic and properties)
        self._max_packet = max_message_bytes + 8 * 1024
        self._topics = topics
        self._on_message = on_message
        self._client = make_client(cfg, client_id)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._subscribe
        self._client.on_connect_fail = self._connect_failed
        self._client.on_message = self._deliver
        self._failing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.subscribed = asyncio.Event()

    def _subscribe(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._failed(f"broker refused the control session: {reason} (reason {reason.value})")
            return
        if self._failing:
            log.info("control: subscribed again to %d control topics", len(self._topics))
        self._failing = False
        if self._topics:
            client.subscribe([(t, 1) for t in self._topics])
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.subscribed.set)

    def _connect_failed(self, _c: Any, _u: Any) -> None:
        from edgetwin.wire.mqtt import describe

        err = sys.exc_info()[1]  # paho calls this inside its `except OSError:`
        where = f"{self._cfg.host}:{self._cfg.port}"
        self._failed(f"cannot connect to {where}: {describe(err) if err else 'failed'}")

    def _failed(self, why: str) -> None:
        """Logged once when the session fails, and once when it is back (not every retry)."""
        if not self._failing:
            log.warning("control: %s; no commands until it is back (retrying)", why)
        self._failing = True

    def _deliver(self, _c: Any, _u: Any, msg: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_message, msg.topic, bytes(msg.payload))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.MaximumPacketSize = self._max_packet
        self._client.connect_async(
            self._cfg.host, self._cfg.port, keepalive=self._cfg.keepalive_s, properties=props
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
