"""The central side of control: build, sign and send a command, and wait for its result.

``build_command`` makes the control profile for a twin (today: switches, ``open`` / ``close``)
and signs it: header ``kid``, ``seq`` (milliseconds since the epoch, kept strictly increasing
within a process, so successive invocations never reuse one and no state file is needed),
``ts``, ``exp`` and ``tpc``. ``send_command`` subscribes to the twin's event topic first, then
publishes at QoS 1 and waits for the verified result event that names this command's mRID.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.codec import Signer, pack
from agent.subscriber import Subscription, Verifier
from twins.profiles import SWITCH_CONTROL, SWITCH_EVENT, Profile, timestamp

KINDS: dict[str, tuple[Profile, Profile]] = {"switch": (SWITCH_CONTROL, SWITCH_EVENT)}
_seq_lock = threading.Lock()
_seq_state = {"last": 0}


def next_seq() -> int:
    with _seq_lock:
        seq = max(int(time.time() * 1000), _seq_state["last"] + 1)
        _seq_state["last"] = seq
        return seq


def control_body(kind: str, mrid: str, action: str, command_mrid: str) -> dict[str, Any]:
    control, _ = KINDS[kind]
    if kind == "switch":
        body = {
            "switchDiscreteControlXSWI": {"Pos": {"ctlVal": {"close": True, "open": False}[action]}}
        }
    return {
        control.message_info: {
            "messageInfo": {
                "identifiedObject": {"mRID": command_mrid},
                "messageTimeStamp": timestamp(time.time()),
            }
        },
        control.equipment: {"conductingEquipment": {"mRID": mrid}},
        control.body: body,
    }


def build_command(
    key: Ed25519PrivateKey,
    kid: str,
    *,
    kind: str,
    mrid: str,
    action: str,
    prefix: str = "openfmb",
    expires_s: float = 30.0,
    seq: int | None = None,
    signed_topic: str | None = None,
    ts_ms: int | None = None,
) -> tuple[str, bytes, str]:
    """(topic, envelope, command mRID). ``signed_topic``, ``seq`` and ``ts_ms`` override the
    defaults (tests use them to make commands the agent must refuse)."""
    control, _ = KINDS[kind]
    command_mrid = str(uuid.uuid4())
    topic = control.topic(prefix, mrid)
    now = ts_ms if ts_ms is not None else int(time.time() * 1000)
    envelope = Signer(key, kid).sign(
        pack(control_body(kind, mrid, action, command_mrid)),
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
        kind: str,
        mrid: str,
        prefix: str = "openfmb",
    ) -> None:
        _, event = KINDS[kind]
        self._results: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._sub = Subscription(
            url,
            Verifier(trust),
            [event.topic(prefix, mrid)],
            self._on,
            client_id=f"edgetwin-command-{uuid.uuid4().hex[:8]}",
        )

    def _on(self, report: dict[str, Any]) -> None:
        if not report.get("valid"):
            return
        body = report["payload"].get(SWITCH_EVENT.body, {}).get("commandResult", {})
        with self._cond:
            self._results[str(body.get("commandMRID"))] = {**body, "seq": report["seq"]}
            self._cond.notify_all()

    def __enter__(self) -> ResultWaiter:
        self._sub.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sub.stop()

    def wait(self, command_mrid: str, timeout: float) -> dict[str, Any] | None:
        with self._cond:
            self._cond.wait_for(lambda: command_mrid in self._results, timeout)
            return self._results.get(command_mrid)


def publish(url: str, topic: str, envelope: bytes) -> None:
    """Publish one message at QoS 1 and wait for its PUBACK."""
    from agent.config import MqttConfig
    from agent.mqtt import make_client, parse_url

    host, port, _ = parse_url(url)
    client = make_client(MqttConfig(host=host, port=port), f"edgetwin-cmd-{uuid.uuid4().hex[:8]}")
    client.connect(host, port)
    client.loop_start()
    try:
        client.publish(topic, envelope, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
