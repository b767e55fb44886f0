"""Signed control: commands from central systems, checked, executed and answered.

A command is a signed envelope (``agent.codec``) on the twin's control topic, e.g.
``openfmb/switchmodule/SwitchDiscreteControlProfile/<mRID>``, whose header also carries ``exp``
(ms since the epoch). It is executed only if, in this order:

1. the envelope is well formed and its signature verifies with a key in the trust file
   (``bad_signature``, ``unknown_key``, ``malformed``);
2. the payload names the twin (``wrong_equipment``) and is a command the twin accepts
   (``twins.control``: ``unknown_action``, ``malformed``, ``out_of_order`` curve points,
   ``out_of_range`` setpoints), and the key is authorized for this twin and that action
   (``unauthorized``);
3. the signed topic is the topic it arrived on (``topic_mismatch``);
4. it has not expired: now <= ``exp``, or ``ts`` + ``max_age_s`` without ``exp`` (``expired``);
5. its ``seq`` was not seen from that key (``replayed``): a window of seen numbers per key, in
   ``control.db``, written *before* execution, so a restart cannot re-open it;
6. the twin is commissioned (``not_commissioned``);
7. a schedule was not signed before the schedule in force (``out_of_order``);
8. the interlocks allow it: configured conditions on the twin's state, which must be of good
   quality, and at most ``max_operations_per_minute`` (``interlock``, ``rate_limited``).

Then the writes go through the device's runtime (between polls, the point map's transform
undone) and are read back: ``executed`` when every read-back confirms its value, ``failed``
otherwise or when the device refuses. A schedule is ``accepted`` and handed to
``agent.schedule``, which applies each curve point at its time; each application checks the
interlocks again and ends in its own result event (``schedulePoint``: its index). Every command
ends in a signed result event on the twin's event profile, through the outbox as an event
(dropped last).

Floods: commands wait in a bounded queue (beyond it they are shed and counted); signatures are
verified in batches on a worker thread (Ed25519 releases the GIL), so the event loop that polls
devices and publishes telemetry spends little on them. Refusals are logged and published up to
``refusal_events_per_s`` per twin; the rest are only counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.clock import Clock, SystemClock
from agent.codec import Verified, b64url_decode, pack, split, unpack, verify
from agent.config import AgentConfig, ControlConfig, TwinConfig
from agent.errors import ConfigError, DeviceError, VerificationError
from agent.keys import load_public
from agent.localstate import commissioned
from agent.outbox import Outbox
from agent.running import RunningDevice
from agent.schedule import Schedule, ScheduleRunner, ScheduleStore
from twins.base import event_message
from twins.control import BadCommand, Command, Controllable, Write, is_controllable

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000
VERIFY_BATCH = 64


@dataclass(frozen=True)
class Grant:
    key: Ed25519PublicKey
    twins: frozenset[str]  # mRIDs, or {"*"}
    actions: frozenset[str]  # action names, or {"*"}

    def allows(self, mrid: str, action: str) -> bool:
        return ("*" in self.twins or mrid in self.twins) and (
            "*" in self.actions or action in self.actions
        )


def load_trust(path: Path) -> dict[str, Grant]:
    """The control trust file: ``[[keys]] kid, public_key (path), twins, actions``."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError([f"{path}: {err}"]) from err
    grants: dict[str, Grant] = {}
    for i, entry in enumerate(raw.get("keys", [])):
        try:
            key_path = Path(entry["public_key"])
            key_path = key_path if key_path.is_absolute() else path.parent / key_path
            grants[str(entry["kid"])] = Grant(
                load_public(key_path),
                frozenset(entry.get("twins", [])),
                frozenset(entry.get("actions", [])),
            )
        except (KeyError, OSError, ValueError) as err:
            raise ConfigError([f"{path}: keys[{i}]: {err}"]) from err
    return grants


class ReplayGuard:
    """Per key: the sequence numbers seen within ``window`` of the highest; persisted."""

    def __init__(self, path: Path, window: int) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen (kid TEXT, seq INTEGER, PRIMARY KEY (kid, seq))"
        )
        self.window = window

    def accept(self, kid: str, seq: int) -> bool:
        """Record ``seq`` for ``kid`` and return True, unless it was seen or is too old."""
        (high,) = self._db.execute(
            "SELECT coalesce(max(seq), 0) FROM seen WHERE kid = ?", (kid,)
        ).fetchone()
        if seq <= high - self.window:
            return False
        try:
            self._db.execute("INSERT INTO seen (kid, seq) VALUES (?, ?)", (kid, seq))
        except sqlite3.IntegrityError:
            return False
        if seq > high:
            self._db.execute(
                "DELETE FROM seen WHERE kid = ? AND seq <= ?", (kid, seq - self.window)
            )
        return True

    def close(self) -> None:
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
        data_dir.mkdir(parents=True, exist_ok=True)
        self._replay = ReplayGuard(data_dir / "control.db", control.replay_window)
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
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(QUEUE_LIMIT)
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
            "dropped_queue_full": 0,
            "refusal_events_suppressed": 0,
        }
        self.refusals: dict[str, int] = {}

    def submit(self, topic: str, payload: bytes) -> None:
        """Called in the event loop for each message that arrives on a control topic."""
        self.counters["received"] += 1
        try:
            self._queue.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self.counters["dropped_queue_full"] += 1

    async def run(self) -> None:
        # schedules resume once their devices were polled: interlocks need the twins' state
        await asyncio.gather(*(d.attempted.wait() for d in self._devices.values()))
        self.schedules.start()
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < VERIFY_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                verified = await asyncio.to_thread(self._verify_all, [p for _, p in batch])
                for (topic, payload), v in zip(batch, verified, strict=True):
                    await self.handle(topic, payload, v)
                    await asyncio.sleep(0)  # telemetry gets its turn between commands
        finally:
            await self.schedules.close()
            self._replay.close()

    def _verify_all(self, payloads: list[bytes]) -> list[Verified | VerificationError]:
        out: list[Verified | VerificationError] = []
        for payload in payloads:
            try:
                out.append(verify(payload, self._keys, None))
            except VerificationError as err:
                out.append(err)
        return out

    async def handle(
        self, topic: str, payload: bytes, verified: Verified | VerificationError | None = None
    ) -> dict[str, Any]:
        """Check and execute one command; publish and return its result."""
        mrid = self.topics.get(topic, topic.rsplit("/", 1)[-1])
        if verified is None:
            verified = self._verify_all([payload])[0]
        header: dict[str, Any] = {}
        action: str | None = None
        try:
            header, command, body = self._check(topic, verified, mrid)
            action = command.action
            if command.schedule:
                result = self._accept_schedule(mrid, header, command, body)
            else:
                result = await self._execute(mrid, command.writes)
        except Refused as refusal:
            result = {"result": "refused", "reason": refusal.reason, "detail": refusal.detail}
            self.counters["refused"] += 1
            self.refusals[refusal.reason] = self.refusals.get(refusal.reason, 0) + 1
            if not self._may_publish_refusal(mrid):
                self.counters["refusal_events_suppressed"] += 1
                log.debug("control: refused command for %s: %s", mrid, refusal)
                return result
            log.warning("control: refused command for %s: %s", mrid, refusal)
            # only read to let the sender match its answer (unverified, for a bad signature)
            header = verified.header if isinstance(verified, Verified) else peek_header(payload)
            body = peek_body(payload)
        result.update(
            action=action,
            kid=header.get("kid"),
            seq=header.get("seq"),
            commandMRID=_command_mrid(body),
        )
        self._publish(mrid, result)
        return result

    def _check(
        self, topic: str, verified: Verified | VerificationError, mrid: str
    ) -> tuple[dict[str, Any], Command, Any]:
        if isinstance(verified, VerificationError):
            raise Refused(verified.reason, verified.detail)
        header = verified.header
        kid = str(header["kid"])
        try:
            body = unpack(verified.payload)
        except Exception:
            raise Refused("malformed", "payload is not msgpack") from None
        twin = self._twins.get(mrid)
        if twin is None:
            raise Refused("unknown_twin", mrid)
        if not isinstance(body, dict):
            raise Refused("malformed", "the payload is not a control profile map")
        equipment = body.get(twin.control_profile.equipment, {}).get("conductingEquipment", {})
        if equipment.get("mRID") != mrid:
            raise Refused("wrong_equipment", f"the command names {equipment.get('mRID')!r}")
        try:
            command = twin.parse_command(body)
        except BadCommand as err:
            raise Refused(err.reason, err.detail) from None
        if not self._grants[kid].allows(mrid, command.action):
            raise Refused("unauthorized", f"key {kid} may not {command.action} {mrid}")
        if header.get("tpc") != topic:
            raise Refused("topic_mismatch", f"signed for {header.get('tpc')!r}")
        now_ms = self._clock.time() * 1000
        exp = header.get("exp")
        deadline = exp if isinstance(exp, int) else header["ts"] + self._control.max_age_s * 1000
        if now_ms > deadline:
            raise Refused("expired", f"{(now_ms - deadline) / 1000:.1f} s ago")
        if not self._replay.accept(kid, int(header["seq"])):
            raise Refused("replayed", f"seq {header['seq']} from {kid} was seen before")
        if mrid not in commissioned(self._config.agent.data_dir):
            raise Refused("not_commissioned", "run: edgetwin commission CONFIG MRID")
        in_force = self.schedules.in_force(mrid)
        if command.schedule and in_force is not None and header["ts"] < in_force.ts_ms:
            raise Refused("out_of_order", "signed before the schedule in force")
        self._interlocks(mrid, command.action)
        self._rate_limit(mrid)
        return header, command, body

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
        self, mrid: str, header: Mapping[str, Any], command: Command, body: Any
    ) -> dict[str, Any]:
        schedule = Schedule(
            mrid, str(header["kid"]), int(header["ts"]), _command_mrid(body), command.schedule
        )
        self.schedules.accept(schedule)
        self.counters["schedules_accepted"] += 1
        log.info("control: schedule of %d points accepted for %s", len(schedule.points), mrid)
        return {"result": "accepted", "points": len(schedule.points)}

    async def _apply_point(self, schedule: Schedule, index: int) -> bool:
        """Apply one curve point (``agent.schedule``'s callback): interlocks, writes, event."""
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
            try:
                raw = bp.entry.untransform(write.value)
                reading = await device.execute(bp.spec, raw)
            except (DeviceError, TimeoutError, OSError, ValueError) as err:
                self.counters["failed"] += 1
                log.error("control: writing %s of %s failed: %s", write.field, mrid, err)
                return {"result": "failed", "reason": "device", "detail": str(err)}
            value = bp.entry.transform(reading.value) if reading.quality.is_good else None
            readback[write.field.removeprefix("@")] = value
            if not (reading.quality.is_good and bp.entry.same(value, write.value)):
                self.counters["failed"] += 1
                return {
                    "result": "failed",
                    "reason": "readback",
                    "detail": f"{write.field} read back {value!r} "
                    f"({reading.quality.validity.value}), expected {write.value!r}",
                }
        self.counters["executed"] += 1
        log.info("control: %s executed and confirmed", mrid)
        return {"result": "executed", "readback": readback}

    def _may_publish_refusal(self, mrid: str) -> bool:
        """A token bucket per twin for refusal events."""
        now = self._clock.time()
        rate = self._control.refusal_events_per_s
        tokens, last = self._refusal_budget.get(mrid, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1:
            self._refusal_budget[mrid] = (tokens, now)
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


def _command_mrid(body: Mapping[str, Any]) -> str | None:
    for value in body.values():
        if isinstance(value, dict) and "messageInfo" in value:
            return value["messageInfo"].get("identifiedObject", {}).get("mRID")
    return None


def peek_header(payload: bytes) -> dict[str, Any]:
    """The (unverified) header of an envelope; {} if unreadable."""
    try:
        jws, _ = split(payload)
        return dict(json.loads(b64url_decode(jws.split(".")[0])))
    except Exception:
        return {}


def peek_body(payload: bytes) -> dict[str, Any]:
    """The (unverified) payload map of an envelope; {} if unreadable."""
    try:
        body = unpack(split(payload)[1])
        return body if isinstance(body, dict) else {}
    except Exception:
        return {}


class CommandListener:
    """An MQTT session of its own (client id ``<id>-control``) subscribed at QoS 1 to the
    control topics; every message is handed to ``on_message`` in the event loop."""

    def __init__(
        self, cfg: Any, client_id: str, topics: list[str], on_message: Callable[[str, bytes], None]
    ) -> None:
        from agent.mqtt import make_client

        self._cfg = cfg
        self._topics = topics
        self._on_message = on_message
        self._client = make_client(cfg, client_id)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._subscribe
        self._client.on_message = self._deliver
        self._loop: asyncio.AbstractEventLoop | None = None
        self.subscribed = asyncio.Event()

    def _subscribe(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure and self._topics:
            client.subscribe([(t, 1) for t in self._topics])
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.subscribed.set)

    def _deliver(self, _c: Any, _u: Any, msg: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_message, msg.topic, bytes(msg.payload))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._cfg.host, self._cfg.port, keepalive=self._cfg.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
