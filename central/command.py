"""The central side of control: build, sign and send a command, and wait for its result.

``build_command`` makes the control profile for a twin of any controllable kind (its shape
from ``wire.control``: ``open`` / ``close`` for switches, breakers and reclosers, ``schedule``
with curve points for solar, ESS and generic twins) and signs it: header ``kid``, ``seq``
(milliseconds since the epoch, kept strictly increasing within a process, so successive
invocations never reuse one and no state file is needed), ``ts``, ``exp`` and ``tpc``.
``ResultWaiter`` subscribes to the twin's event topic before the command is published and
returns the verified result event that names the command's mRID (for a schedule: its
acceptance; the results of its curve points, which follow at their times, are kept in
``points``).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgetwin.central.subscriber import Report, Subscription, Verifier
from edgetwin.wire.control import CONTROLS, Shape
from edgetwin.wire.envelope import Signer, open_envelope, pack
from edgetwin.wire.mqtt import Tls, new_client, parse_url

_seq_lock = threading.Lock()
_seq_state = {"last": 0}


def control_shape(kind: str | Shape) -> Shape:
    """The control shape of twins of ``kind`` (``wire.control.CONTROLS``), or ``kind`` itself
    when it is a shape (a twin plugin's own ``wire.control.Discrete`` or ``Schedule``)."""
    if not isinstance(kind, str):
        return kind
    shape = CONTROLS.get(kind)
    if shape is None:
        raise ValueError(f"{kind} twins take no control (controllable: {', '.join(CONTROLS)})")
    return shape


def next_seq() -> int:
    with _seq_lock:
        seq = max(int(time.time() * 1000), _seq_state["last"] + 1)
        _seq_state["last"] = seq
        return seq


def parse_point(text: str, now: float) -> tuple[float, dict[str, float]]:
    """``PARAM=VALUE[@WHEN]`` -> (start, {PARAM: VALUE}); WHEN is ``+SECONDS`` from now or an
    ISO 8601 time with a zone; without it the point starts now."""
    assignment, _, when = text.partition("@")
    param, sep, value = assignment.partition("=")
    if not sep or not param:
        raise ValueError(f"{text!r}: expected PARAM=VALUE[@WHEN], e.g. W_net_mag=5000@+60")
    if not when:
        start = now
    elif when.startswith("+"):
        start = now + float(when[1:])
    else:
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is None:
            raise ValueError(f"{when!r}: give the time zone (e.g. 2026-11-24T10:00:00Z)")
        start = moment.timestamp()
    return start, {param: float(value)}


def curve(points: list[tuple[float, dict[str, float]]]) -> list[tuple[float, dict[str, float]]]:
    """Points merged by start time (several parameters at one time), in the order given."""
    merged: dict[float, dict[str, float]] = {}
    for start, params in points:
        merged.setdefault(start, {}).update(params)
    return list(merged.items())


def build_command(
    key: Ed25519PrivateKey,
    kid: str,
    *,
    kind: str | Shape,
    mrid: str,
    action: str,
    schedule: list[tuple[float, dict[str, float]]] | None = None,
    registers: list[str] | None = None,
    prefix: str = "openfmb",
    expires_s: float = 30.0,
    seq: int | None = None,
    signed_topic: str | None = None,
    ts_ms: int | None = None,
) -> tuple[str, bytes, str]:
    """(topic, envelope, command mRID). ``signed_topic``, ``seq`` and ``ts_ms`` override the
    defaults (tests use them to make commands the agent must refuse)."""
    shape = control_shape(kind)
    control = shape.control
    command_mrid = str(uuid.uuid4())
    topic = control.topic(prefix, mrid)
    now = ts_ms if ts_ms is not None else int(time.time() * 1000)
    body = control.frame(
        mrid=mrid,
        body=shape.body(action, schedule or (), registers or ()),
        now=now / 1000,
        message_mrid=command_mrid,
    )
    envelope = Signer(key, kid).sign(
        pack(body),
        seq=seq if seq is not None else next_seq(),
        ts_ms=now,
        topic=signed_topic or topic,
        hist=False,
        exp_ms=now + int(expires_s * 1000),
    )
    return topic, envelope, command_mrid


class ResultWaiter:
    """Subscribed to a twin's event topic; ``wait(command_mrid)`` returns the verified result."""

    def __init__(
        self,
        url: str,
        trust: dict[str, Ed25519PublicKey],
        *,
        kind: str | Shape,
        mrid: str,
        prefix: str = "openfmb",
    ) -> None:
        event = control_shape(kind).event
        self._body = event.body
        self._results: dict[str, dict[str, Any]] = {}
        self.points: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._sub = Subscription(
            url,
            Verifier(trust),
            [event.topic(prefix, mrid)],
            self._on,
            client_id=f"edgetwin-command-{uuid.uuid4().hex[:8]}",
        )

    def _on(self, report: Report) -> None:
        if not report.get("valid"):
            return
        body = report["payload"].get(self._body, {}).get("commandResult", {})
        with self._cond:
            answer = {**body, "eventSeq": report["seq"]}
            if "schedulePoint" in body:
                self.points.append(answer)
            elif body.get("reason") == "shed":  # one answer names every command shed
                for c in body.get("commands", []):
                    self._results[f"{c.get('kid')}:{c.get('seq')}"] = answer
            else:
                if body.get("commandMRID") is not None:
                    self._results[str(body["commandMRID"])] = answer
                if body.get("kid") is not None:  # refused unverified: only kid and seq echoed
                    self._results[f"{body['kid']}:{body.get('seq')}"] = answer
            self._cond.notify_all()

    def __enter__(self) -> ResultWaiter:
        self._sub.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sub.stop()

    def wait(
        self, command_mrid: str, timeout: float, envelope: bytes | None = None
    ) -> dict[str, Any] | None:
        """The result naming ``command_mrid`` -- or, given the command's ``envelope``, its
        ``kid`` and ``seq`` (a command refused before its signature verified, or shed)."""
        keys = [command_mrid]
        if envelope is not None:
            header = open_envelope(envelope).header
            keys.append(f"{header.kid}:{header.seq}")

        def answered() -> dict[str, Any] | None:
            return next((self._results[k] for k in keys if k in self._results), None)

        with self._cond:
            self._cond.wait_for(lambda: answered() is not None, timeout)
            return answered()


def publish(url: str, topic: str, envelope: bytes) -> None:
    """Publish one message at QoS 1 and wait for its PUBACK."""
    host, port, tls = parse_url(url)
    client = new_client(f"edgetwin-cmd-{uuid.uuid4().hex[:8]}", tls=Tls() if tls else None)
    client.connect(host, port)
    client.loop_start()
    try:
        client.publish(topic, envelope, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
