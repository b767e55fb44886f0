"""Prometheus metrics, built from one snapshot of the agent's status at each scrape.

Nothing is counted twice: the stages keep their own counters (devices, pipeline, outbox,
publisher, control, rules) and this module only renders them in the Prometheus text format
(prometheus-client), so ``/metrics``, ``status.json`` and the AgentStatus message always agree.
What each metric means for an operator is in ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edgetwin.agent.runtime.running import POLL_BUCKETS

PREFIX = "edgetwin"


class SnapshotCollector(Collector):
    """Metric families from ``Agent.status()`` plus the outbox's oldest row age."""

    def __init__(self, status: Mapping[str, Any], oldest_age_s: float) -> None:
        self.s = status
        self.oldest = oldest_age_s

    def collect(self) -> Iterator[Metric]:
        s = self.s
        yield _counter("points_read", "readings taken into twins", s.get("points_read", 0))
        yield _counter("reports", "profile messages queued for publishing", s.get("reports", 0))
        yield from self._devices(s.get("devices") or {})
        yield from self._meters(s.get("meters") or {})
        yield from self._outbox(s.get("outbox") or {})
        mqtt = s.get("mqtt") or {}
        yield _gauge(
            "mqtt_connected", "1 while the MQTT session is up", int(bool(mqtt.get("connected")))
        )
        yield _counter("published", "messages published (QoS 1)", mqtt.get("published", 0))
        yield _counter(
            "acknowledged", "messages acknowledged by the broker", mqtt.get("acknowledged", 0)
        )
        yield _counter("mqtt_connects", "MQTT sessions opened", mqtt.get("connects", 0))
        yield from self._control(s.get("control"))
        alarms = s.get("alarms") or {}
        yield _gauge("alarms_active", "alarms raised now", alarms.get("active", 0))
        yield _counter("rule_evaluations", "rule evaluations", alarms.get("rule_evaluations", 0))
        yield _gauge("uptime_seconds", "seconds since the agent started", s.get("uptime_s", 0))

    def _devices(self, devices: Mapping[str, Any]) -> Iterator[Metric]:
        avail = GaugeMetricFamily(f"{PREFIX}_device_available", "1 while the device answers",
                                  labels=["device"])  # fmt: skip
        polls = CounterMetricFamily(f"{PREFIX}_device_polls", "polls", labels=["device"])
        fails = CounterMetricFamily(f"{PREFIX}_device_failures", "failed polls", labels=["device"])
        over = CounterMetricFamily(f"{PREFIX}_device_overruns", "polls that overran their "
                                   "interval", labels=["device"])  # fmt: skip
        dur = GaugeMetricFamily(f"{PREFIX}_device_last_poll_duration_seconds", "duration of the "
                                "last successful poll", labels=["device"])  # fmt: skip
        hist = HistogramMetricFamily(f"{PREFIX}_device_poll_duration_seconds", "durations of "
                                     "successful polls", labels=["device"])  # fmt: skip
        for name, d in devices.items():
            avail.add_metric([name], int(bool(d.get("available"))))
            polls.add_metric([name], d.get("polls", 0))
            fails.add_metric([name], d.get("failures", 0))
            over.add_metric([name], d.get("overruns", 0))
            if d.get("last_poll_ms") is not None:
                dur.add_metric([name], d["last_poll_ms"] / 1000)
            counts = d.get("poll_buckets")
            if counts:
                cumulative, buckets = 0, []
                for bound, n in zip([*POLL_BUCKETS, float("inf")], counts, strict=True):
                    cumulative += n
                    buckets.append((_bound(bound), cumulative))
                hist.add_metric([name], buckets, d.get("poll_seconds_total", 0.0))
        yield from (avail, polls, fails, over, dur, hist)

    def _meters(self, meters: Mapping[str, Any]) -> Iterator[Metric]:
        """The data concentrator, per meter (``agent.runtime.ami``)."""
        behind = GaugeMetricFamily(f"{PREFIX}_meter_intervals_behind", "load profile intervals "
                                   "the meter holds and the agent has not published",
                                   labels=["meter"])  # fmt: skip
        last = GaugeMetricFamily(
            f"{PREFIX}_meter_last_read_timestamp_seconds",
            "when the meter was last read successfully",
            labels=["meter"],
        )
        reads = CounterMetricFamily(f"{PREFIX}_meter_reads", "successful read cycles",
                                    labels=["meter"])  # fmt: skip
        published = CounterMetricFamily(f"{PREFIX}_meter_intervals_published",
                                        "intervals published", labels=["meter"])  # fmt: skip
        offset = GaugeMetricFamily(
            f"{PREFIX}_meter_clock_offset_seconds",
            "the meter's clock minus the agent's, at the last read",
            labels=["meter"],
        )
        failing = GaugeMetricFamily(f"{PREFIX}_meter_failing", "1 while the last read failed",
                                    labels=["meter"])  # fmt: skip
        for name, m in meters.items():
            behind.add_metric([name], m.get("intervals_behind", 0))
            if m.get("last_success") is not None:
                last.add_metric([name], m["last_success"])
            reads.add_metric([name], m.get("reads", 0))
            published.add_metric([name], m.get("intervals_published", 0))
            if m.get("clock_offset_s") is not None:
                offset.add_metric([name], m["clock_offset_s"])
            failing.add_metric([name], int(m.get("last_error") is not None))
        yield from (behind, last, reads, published, offset, failing)

    def _outbox(self, o: Mapping[str, Any]) -> Iterator[Metric]:
        yield _gauge("outbox_depth", "messages waiting in the outbox", o.get("depth", 0))
        yield _gauge("outbox_bytes", "bytes waiting in the outbox", o.get("bytes", 0))
        yield _gauge("outbox_max_bytes", "the outbox's size cap", o.get("max_bytes", 0))
        yield _gauge("outbox_disk_bytes", "the outbox's files on disk (pages in use + WAL)",
                     o.get("disk_bytes", 0))  # fmt: skip
        yield _gauge("outbox_available", "1 while the database is open (0: degraded, in memory)",
                     int(bool(o.get("available", True))))  # fmt: skip
        yield _gauge("outbox_pending_bytes", "bytes waiting in memory for a commit",
                     o.get("pending_bytes", 0))  # fmt: skip
        yield _gauge("outbox_oldest_age_seconds", "age of the oldest waiting message", self.oldest)
        drops = CounterMetricFamily(f"{PREFIX}_outbox_dropped", "messages dropped by the size "
                                    "cap", labels=["class"])  # fmt: skip
        drops.add_metric(["telemetry"], o.get("dropped_telemetry", 0))
        drops.add_metric(["event"], o.get("dropped_events", 0))
        yield drops
        unnumbered = CounterMetricFamily(f"{PREFIX}_outbox_dropped_unnumbered", "messages "
                                         "dropped from memory before they got a seq (disk full)",
                                         labels=["class"])  # fmt: skip
        unnumbered.add_metric(["telemetry"], o.get("dropped_unnumbered_telemetry", 0))
        unnumbered.add_metric(["event"], o.get("dropped_unnumbered_events", 0))
        yield unnumbered
        yield _counter("outbox_write_errors", "failed commits (retried)", o.get("write_errors", 0))

    def _control(self, c: Mapping[str, Any] | None) -> Iterator[Metric]:
        c = c or {}
        yield _counter("commands_received", "signed commands received", c.get("received", 0))
        yield _counter("commands_executed", "commands executed and confirmed", c.get("executed", 0))
        yield _counter("commands_failed", "commands the device failed", c.get("failed", 0))
        refused = CounterMetricFamily(f"{PREFIX}_commands_refused", "commands refused, by "
                                      "reason (bad_signature, unknown_key, replayed, expired, "
                                      "interlock, ...)", labels=["reason"])  # fmt: skip
        for reason, n in sorted((c.get("refusals") or {}).items()):
            refused.add_metric([reason], n)
        yield refused
        refusals = c.get("refusals") or {}
        bad = refusals.get("bad_signature", 0) + refusals.get("unknown_key", 0)
        doc = "commands whose signature did not verify (bad signature or unknown key)"
        yield _counter("command_signature_failures", doc, bad)
        yield _counter("commands_shed", "commands shed unverified (queue full) and answered",
                       c.get("shed", 0))  # fmt: skip


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def render(status: Mapping[str, Any], oldest_age_s: float) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(status, oldest_age_s))
    return generate_latest(registry)
