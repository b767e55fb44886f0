"""Signed control: commands from central systems, checked, executed and answered.

A command is a signed envelope (``agent.codec``) on the twin's control topic, e.g.
``openfmb/switchmodule/SwitchDiscreteControlProfile/<mRID>``, whose header also carries ``exp``
(ms since the epoch). It is executed only if, in this order:

1. the envelope is well formed and its signature verifies with a key in the trust file
   (``bad_signature``, ``unknown_key``, ``malformed``);
2. that key is authorized for this twin and this action (``unauthorized``); the payload must
   name the twin and an action it has (``unknown_action``, ``wrong_equipment``);
3. the signed topic is the topic it arrived on (``topic_mismatch``);
4. it has not expired: now <= ``exp``, or ``ts`` + ``max_age_s`` without ``exp`` (``expired``);
5. its ``seq`` was not seen from that key (``replayed``): a window of seen numbers per key, in
   ``control.db``, written *before* execution, so a restart cannot re-open it;
6. the twin is commissioned (``not_commissioned``);
7. the interlocks allow it: configured conditions on the twin's state, which must be of good
   quality, and at most ``max_operations_per_minute`` (``interlock``, ``rate_limited``).

Then the write goes through the device's runtime (between polls) and is read back:
``executed`` when the read-back equals the commanded value, ``failed`` otherwise or when the
device refuses. Every command ends in a signed result event on the twin's event profile, through
the outbox as an event (dropped last). Refusals are logged; their events are limited to
``refusal_events_per_s`` per twin (the rest are counted), so a flood of forged commands can
neither fill the outbox nor starve telemetry: commands wait in a bounded queue, handled one at a
time, and the event loop is yielded between them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.codec import b64url_decode, pack, split, unpack, verify
from agent.config import AgentConfig, ControlConfig, Interlock, TwinConfig
from agent.errors import ConfigError, DeviceError, VerificationError
from agent.keys import load_public
from agent.localstate import commissioned
from agent.outbox import EVENT, Outbox
from agent.running import RunningDevice
from twins.profiles import timestamp

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000


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
    """Receives commands (``submit``, from the MQTT thread), checks and executes them."""

    def __init__(
        self,
        config: AgentConfig,
        control: ControlConfig,
        outbox: Outbox,
        devices: Mapping[str, RunningDevice],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._control = control
        self._outbox = outbox
        self._devices = devices
        self._clock = clock
        self._grants = load_trust(control.trust_file)
        self._keys = {kid: g.key for kid, g in self._grants.items()}
        self._replay = ReplayGuard(config.agent.data_dir / "control.db", control.replay_window)
        prefix = config.agent.mqtt.topic_prefix
        self._twins: dict[str, Any] = {}
        self.topics: dict[str, str] = {}  # control topic -> mRID
        for twin in config.twins:
            profile = getattr(twin, "control_profile", None)
            if profile is not None:
                topic = profile.topic(prefix, twin.spec.mrid)
                self._twins[twin.spec.mrid] = twin
                self.topics[topic] = twin.spec.mrid
        self._twin_config: dict[str, TwinConfig] = {t.mrid: t for t in config.agent.twins}
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(QUEUE_LIMIT)
        self._operations: dict[str, list[float]] = {}
        self._refusal_budget: dict[str, tuple[float, float]] = {}
        self.counters = {
            "received": 0,
            "executed": 0,
            "failed": 0,
            "refused": 0,
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
        try:
            while True:
                topic, payload = await self._queue.get()
                await self.handle(topic, payload)
                await asyncio.sleep(0)  # telemetry gets its turn between commands
        finally:
            self._replay.close()

    async def handle(self, topic: str, payload: bytes) -> dict[str, Any]:
        """Check and execute one command; publish and return its result."""
        mrid = self.topics.get(topic, topic.rsplit("/", 1)[-1])
        header: dict[str, Any] = {}
        action: str | None = None
        try:
            header, action, body = self._check(topic, payload, mrid)
            result = await self._execute(mrid, action)
        except Refused as refusal:
            result = {"result": "refused", "reason": refusal.reason, "detail": refusal.detail}
            header = peek_header(payload)  # unverified: only to let the sender match its result
            self.counters["refused"] += 1
            self.refusals[refusal.reason] = self.refusals.get(refusal.reason, 0) + 1
            log.warning("control: refused command for %s: %s", mrid, refusal)
            if not self._may_publish_refusal(mrid):
                self.counters["refusal_events_suppressed"] += 1
                return result
            body = peek_body(payload)
        command_mrid = _command_mrid(body)
        result.update(
            action=action, kid=header.get("kid"), seq=header.get("seq"), commandMRID=command_mrid
        )
        self._publish(mrid, result)
        return result

    def _check(self, topic: str, payload: bytes, mrid: str) -> tuple[dict[str, Any], str, Any]:
        try:
            v = verify(payload, self._keys, None)
        except VerificationError as err:
            raise Refused(err.reason, err.detail) from None
        header = v.header
        kid = str(header["kid"])
        try:
            body = unpack(v.payload)
        except Exception:
            raise Refused("malformed", "payload is not msgpack") from None
        twin = self._twins.get(mrid)
        if twin is None:
            raise Refused("unknown_twin", mrid)
        action = twin.action_of(body)
        if action is None or action not in twin.controls:
            raise Refused("unknown_action", f"{twin.spec.kind} accepts {', '.join(twin.controls)}")
        equipment = body.get(twin.control_profile.equipment, {}).get("conductingEquipment", {})
        if equipment.get("mRID") != mrid:
            raise Refused("wrong_equipment", f"the command names {equipment.get('mRID')!r}")
        if not self._grants[kid].allows(mrid, action):
            raise Refused("unauthorized", f"key {kid} may not {action} {mrid}")
        if header.get("tpc") != topic:
            raise Refused("topic_mismatch", f"signed for {header.get('tpc')!r}")
        now_ms = self._clock() * 1000
        exp = header.get("exp")
        deadline = exp if isinstance(exp, int) else header["ts"] + self._control.max_age_s * 1000
        if now_ms > deadline:
            raise Refused("expired", f"{(now_ms - deadline) / 1000:.1f} s ago")
        if not self._replay.accept(kid, int(header["seq"])):
            raise Refused("replayed", f"seq {header['seq']} from {kid} was seen before")
        if mrid not in commissioned(self._config.agent.data_dir):
            raise Refused("not_commissioned", "run: edgetwin commission CONFIG MRID")
        self._interlocks(mrid, action)
        return header, action, body

    def _interlocks(self, mrid: str, action: str) -> None:
        twin, tc = self._twins[mrid], self._twin_config[mrid]
        points = twin.state().points
        for lock in tc.interlocks:
            if lock.action != action:
                continue
            sample = points.get(lock.field)
            if sample is None or not sample.quality.is_good:
                raise Refused("interlock", f"{lock.field} is not known with good quality")
            if lock.blocks(sample.value):
                raise Refused("interlock", lock.reason or _describe(lock, sample.value))
        now = self._clock()
        recent = [t for t in self._operations.get(mrid, []) if now - t < 60]
        if len(recent) >= tc.max_operations_per_minute:
            raise Refused("rate_limited", f"{len(recent)} operations in the last minute")
        self._operations[mrid] = recent

    async def _execute(self, mrid: str, action: str) -> dict[str, Any]:
        twin = self._twins[mrid]
        field, value = twin.controls[action]
        point = next(bp for bp in twin.bound_points() if bp.field == field)
        self._operations.setdefault(mrid, []).append(self._clock())
        try:
            readback = await self._devices[twin.spec.device].execute(point.spec, value)
        except (DeviceError, TimeoutError, OSError) as err:
            self.counters["failed"] += 1
            log.error("control: %s %s failed: %s", action, mrid, err)
            return {"result": "failed", "reason": "device", "detail": str(err)}
        if readback.quality.is_good and readback.value == value:
            self.counters["executed"] += 1
            log.info("control: %s %s executed and confirmed", action, mrid)
            return {"result": "executed", "readback": readback.value}
        self.counters["failed"] += 1
        return {
            "result": "failed",
            "reason": "readback",
            "detail": f"read back {readback.value!r} ({readback.quality.validity.value})",
        }

    def _may_publish_refusal(self, mrid: str) -> bool:
        """A token bucket per twin for refusal events."""
        now = self._clock()
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
        profile = twin.event_profile
        now = self._clock()
        body = {
            profile.message_info: {
                "messageInfo": {
                    "identifiedObject": {"mRID": str(uuid.uuid4())},
                    "messageTimeStamp": timestamp(now),
                }
            },
            profile.equipment: {"conductingEquipment": {"mRID": mrid}},
            profile.body: {"commandResult": {k: v for k, v in result.items() if v is not None}},
        }
        topic = profile.topic(self._config.agent.mqtt.topic_prefix, mrid)
        self._outbox.submit(topic, pack(body), EVENT)

    def status(self) -> dict[str, Any]:
        return {**self.counters, "refusals": dict(self.refusals)}


def _command_mrid(body: Mapping[str, Any]) -> str | None:
    for value in body.values():
        if isinstance(value, dict) and "messageInfo" in value:
            return value["messageInfo"].get("identifiedObject", {}).get("mRID")
    return None


def _describe(lock: Interlock, value: object) -> str:
    return f"{lock.field} = {value!r}"


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
