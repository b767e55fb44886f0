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
        """The sink of a ``RunningDevice``: called after every poll, successful or not."""
        now = self._clock.time()
        for twin in self._by_device.get(device, ()):
            twin.set_available(available, now)
            if available:
                twin.ingest(readings)
                self.point_updates += len(readings)
            self._report(twin, now)

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
