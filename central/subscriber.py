"""The central side: verify what arrives, check topic binding and sequence, report each message.

``Verifier.check(topic, envelope)`` returns one ``Report`` per message: signature and key (against
a trust store of public keys), topic binding (the signed ``tpc`` must equal the arrival topic),
sequence per agent (``gap`` lists the numbers skipped, ``duplicate`` flags a number seen before,
``late`` one that fills an earlier gap), and freshness of live messages (``stale`` when ``ts`` is
further than ``max_age_s`` from the receiver's clock). Birth and death certificates (``bd``)
have their own sequence and are retained, so neither check applies to them. A message that
fails verification is reported with ``valid: false`` and its reason, and its content is never
reported as data.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgetwin.core.errors import EdgeTwinError, VerificationError
from edgetwin.wire.envelope import verify
from edgetwin.wire.mqtt import Tls, describe, new_client, parse_url

SEEN_WINDOW = 100_000  # sequence numbers remembered per key for duplicate detection


class Report(TypedDict, total=False):
    """What ``Verifier.check`` says about one message (JSON-ready; keys present when they apply).

    Always ``topic`` and ``valid``. Refused (``valid`` false): ``reason`` (``malformed``,
    ``unknown_key``, ``bad_signature``, ``topic_mismatch``, ...) and ``detail``; nothing of the
    content. Verified: ``kid``, ``seq``, ``ts`` (ms), ``hist`` (published late, from the outbox),
    ``payload`` (the decoded profile map, or ``payload_hex`` when it is not msgpack), and, for
    the data stream, ``gap`` ([first, last] skipped), ``duplicate``, ``late`` (fills a gap) and
    ``stale``; birth and death certificates carry ``bd`` instead.
    """

    topic: str
    valid: bool
    reason: str
    detail: str
    kid: str
    seq: int
    ts: int
    hist: bool
    bd: bool
    gap: list[int]
    duplicate: bool
    late: bool
    stale: bool
    payload: Any
    payload_hex: str


@dataclass
class _Stream:
    high: int
    missing: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)


class SeqTracker:
    """Gap and duplicate detection for the strictly increasing ``seq`` of each stream (agent)."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def observe(self, stream: str, seq: int) -> Report:
        st = self._streams.get(stream)
        if st is None:
            self._streams[stream] = _Stream(high=seq, seen={seq})
            return {}
        if seq in st.seen:
            return {"duplicate": True}
        st.seen.add(seq)
        if len(st.seen) > SEEN_WINDOW:
            floor = st.high - SEEN_WINDOW
            st.seen = {s for s in st.seen if s > floor}
        if seq > st.high:
            result: Report = {}
            if seq > st.high + 1:
                result["gap"] = [st.high + 1, seq - 1]
                st.missing.update(range(st.high + 1, min(seq, st.high + 1 + SEEN_WINDOW)))
            st.high = seq
            return result
        if seq in st.missing:
            st.missing.discard(seq)
            return {"late": True}
        return {"duplicate": True}  # older than the window: cannot tell, assume replay

    def missing(self, stream: str) -> list[int]:
        st = self._streams.get(stream)
        return sorted(st.missing) if st else []


class Verifier:
    """Checks messages against ``trust`` (kid -> public key, e.g. ``load_trust_dir``).

    Sequence numbers are one stream per agent, whatever key signs them: ``agents`` maps each kid
    to the agent it belongs to, so that a rotated key (a new kid) goes on with the agent's stream
    instead of starting one of its own; a kid not named there is an agent of its own. One
    instance per subscription, since it remembers what it has seen."""

    def __init__(
        self,
        trust: Mapping[str, Ed25519PublicKey],
        *,
        max_age_s: float = 60.0,
        agents: Mapping[str, str] | None = None,
    ) -> None:
        self._trust = trust
        self._agents = dict(agents or {})
        self.max_age_s = max_age_s
        self.seq = SeqTracker()

    def check(self, topic: str, envelope: bytes, now: float | None = None) -> Report:
        """Verify one message that arrived on ``topic``; return its report."""
        try:
            v = verify(envelope, self._trust, topic)
        except VerificationError as err:
            return {"topic": topic, "valid": False, "reason": err.reason, "detail": err.detail}
        h = v.header
        report: Report = {"topic": topic, "valid": True, "kid": h.kid, "seq": h.seq, "ts": h.ts,
                  "hist": h.hist}  # fmt: skip
        if h.bd:
            report["bd"] = True  # birth/death: its own sequence, and retained, so maybe old
        else:
            report.update(self.seq.observe(self._agents.get(h.kid, h.kid), h.seq))
            now = time.time() if now is None else now
            if not h.hist and abs(now * 1000 - h.ts) > self.max_age_s * 1000:
                report["stale"] = True
        try:
            report["payload"] = v.body()
        except Exception:  # signed but not msgpack: still authentic bytes, report as such
            report["payload_hex"] = v.payload.hex()
        return report


class Subscription:
    """A verifying MQTT subscription on paho's network thread; ``on_report`` gets each report."""

    def __init__(
        self,
        url: str,
        verifier: Verifier,
        topics: list[str],
        on_report: Callable[[Report], None],
        *,
        client_id: str | None = None,
        persistent_session: bool = False,
        username: str | None = None,
        password: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        """``url`` is ``mqtt://host:port`` or ``mqtts://host:port`` (TLS with the system's CAs
        unless ``tls`` names a CA file or a client certificate)."""
        self._host, self._port, use_tls = parse_url(url)
        self._client = new_client(
            client_id or f"edgetwin-subscribe-{os.getpid()}",
            username=username,
            password=password,
            tls=tls if tls is not None else (Tls() if use_tls else None),
        )
        self._topics = topics
        self._persistent = persistent_session
        self._verifier = verifier
        self._on_report = on_report
        self.subscribed = threading.Event()
        self.count = 0
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self.subscribed.set()
        self._client.on_message = self._on_message

    def _on_connect(self, client, _u, flags, reason, _p):
        if reason.is_failure:
            return
        if self._persistent and flags.session_present:
            self.subscribed.set()  # the broker kept our subscription and queued messages
        else:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _c, _u, msg):
        self.count += 1
        self._on_report(self._verifier.check(msg.topic, msg.payload))

    def start(self, timeout: float = 10.0) -> Subscription:
        props = None
        if self._persistent:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self._client.reconnect_delay_set(1, 2)
        try:
            self._client.connect(
                self._host,
                self._port,
                keepalive=30,
                clean_start=not self._persistent,
                properties=props,
            )
        except OSError as err:  # one line, the reason: not a traceback
            raise EdgeTwinError(
                f"cannot connect to {self._host}:{self._port}: {describe(err)}"
            ) from None
        self._client.loop_start()
        if not self.subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"no SUBACK from {self._host}:{self._port}")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def subscribe(
    url: str,
    verifier: Verifier,
    topics: list[str],
    *,
    count: int | None = None,
    timeout: float | None = None,
    on_report: Callable[[Report], None],
) -> int:
    """Blocking: report messages until ``count`` of them or ``timeout`` seconds; return count."""
    done = threading.Event()
    seen = 0

    def handle(report: Report) -> None:
        nonlocal seen
        if done.is_set():
            return
        seen += 1
        on_report(report)
        if count is not None and seen >= count:
            done.set()

    sub = Subscription(url, verifier, topics, handle).start()
    try:
        done.wait(timeout)
    finally:
        sub.stop()
    return seen
