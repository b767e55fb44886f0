"""The pipeline: from a device's readings to committed outbox rows.

::

    RunningDevice ──readings──▶ twins bound to that device
      (agent.running)            transform, state, report-by-exception (twins/, edge_rules/)
                                     │ Outgoing(topic, profile map, class)
                                     ▼
                                 msgpack ──▶ Outbox.submit ──▶ group commit (agent.outbox)
                                                                  │
                                                    Publisher ◀───┘ (agent.publisher)

``tick()`` runs on the reporting timer so integrity periods fire even when a device is silent.
Everything here runs in the event loop, one call at a time; nothing blocks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from edgetwin.agent.northbound.outbox import Outbox
from edgetwin.core.clock import Clock
from edgetwin.core.models import Reading
from edgetwin.twins.base import MessageClass, Twin
from edgetwin.wire.envelope import pack


def _event_body(payload: dict[str, Any]) -> Any:
    """The ``{kind: {...}}`` inside an event profile message (its ``...Event`` key)."""
    return next((v for k, v in payload.items() if k.endswith("Event")), payload)


def generations(readings: Sequence[Reading]) -> list[Sequence[Reading]]:
    """Readings split so that no point appears twice in one part: the n-th reading of every
    point in the n-th part (each point's readings are oldest first). One part, the readings
    themselves, in the usual case of one reading per point."""
    if len({r.point for r in readings}) == len(readings):
        return [readings]
    parts: list[list[Reading]] = []
    seen: dict[str, int] = {}
    for r in readings:
        n = seen.get(r.point, 0)
        seen[r.point] = n + 1
        if n == len(parts):
            parts.append([])
        parts[n].append(r)
    return list(parts)


class Pipeline:
    def __init__(self, twins: Iterable[Twin], outbox: Outbox, clock: Clock) -> None:
        self.twins = list(twins)
        self._outbox = outbox
        self._clock = clock
        self._by_device: dict[str, list[Twin]] = {}
        for twin in self.twins:
            self._by_device.setdefault(twin.spec.device, []).append(twin)
        self.point_updates = 0
        self.reports = 0
        #: the latest events (alarms, demand, settlement reads), for the status page
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=50)

    def on_readings(self, device: str, readings: Sequence[Reading], available: bool) -> None:
        """The sink of a ``RunningDevice``: called after every poll, successful or not.

        A point with several readings (events that changed between two polls: a breaker's
        intermediate, open, closed) is ingested and reported once per reading, oldest first,
        so no change of state is lost in our hands."""
        now = self._clock.time()
        batches = generations(readings) if available else ()
        for twin in self._by_device.get(device, ()):
            twin.set_available(available, now)
            for batch in batches[:-1]:
                twin.ingest(batch)
                self._report(twin, now)
            if batches:
                twin.ingest(batches[-1])
            self._report(twin, now)
        if available:
            self.point_updates += len(readings)

    def tick(self) -> None:
        """Report what is due by time alone (integrity periods, held-back changes)."""
        now = self._clock.time()
        for twin in self.twins:
            self._report(twin, now)

    def _report(self, twin: Twin, now: float) -> None:
        for out in twin.report(now):
            self._outbox.submit(out.topic, pack(out.payload), int(out.klass))
            self.reports += 1
            if out.klass == MessageClass.EVENT:
                self.recent_events.appendleft(
                    {"ts": time.time(), "twin": twin.spec.name, "mrid": twin.spec.mrid,
                     "topic": out.topic, "event": _event_body(out.payload)}
                )  # fmt: skip
