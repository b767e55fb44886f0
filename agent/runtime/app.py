"""The agent: builds every stage from a validated config, runs them, and shuts down cleanly.

Tasks (named, owned by one TaskGroup): one per device (``agent.runtime.running``), the publisher,
the reporting tick and the status writer. On stop: polling stops first, what the twins hold is
committed to the outbox, in-flight messages get a short grace period for their PUBACKs, the retained
death certificate is published (``agent.runtime.state``), then the MQTT session and the database are
closed. A reading accepted before the stop is either
acknowledged by the broker or in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from typing import Any

from edgetwin.agent.northbound.outbox import EVENT, Outbox
from edgetwin.agent.northbound.publisher import Publisher
from edgetwin.agent.operations.http import HttpServer
from edgetwin.agent.operations.systemd import Notifier
from edgetwin.agent.runtime.ami import MeterCollector
from edgetwin.agent.runtime.config import AgentConfig
from edgetwin.agent.runtime.control import CommandListener, ControlService
from edgetwin.agent.runtime.localstate import (
    ALARMS,
    STATUS,
    TWINS,
    AgentLock,
    active_alarms,
    commissioned,
    summary,
    twins_snapshot,
    write_json,
)
from edgetwin.agent.runtime.pipeline import Pipeline
from edgetwin.agent.runtime.push import PushListener
from edgetwin.agent.runtime.running import RunningDevice
from edgetwin.agent.runtime.state import AgentState
from edgetwin.core import __version__
from edgetwin.core.clock import Clock, SystemClock
from edgetwin.core.files import state_db
from edgetwin.drivers.metering import MeteringSettings, MeterSource
from edgetwin.edge_rules.store import RuleStore
from edgetwin.wire.envelope import Signer, pack
from edgetwin.wire.keys import load_private
from edgetwin.wire.topics import AGENT_STATUS, DROP_NOTICE, agent_topic

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 2.0
STOP_TASKS_S = 3.0  # tasks that do not end when cancelled are cancelled again, this long
LIVENESS_S = 10.0  # /healthz fails when the reporting tick has not run for this long
READY_POLL_AGE_S = 5.0


class Agent:
    def __init__(self, config: AgentConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        a = config.agent
        self.status_path = a.data_dir / STATUS
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.pipeline: Pipeline | None = None
        self.devices: list[RunningDevice] = []
        self.meters: dict[str, MeterCollector] = {}  # the data concentrator, per meter
        self.push: PushListener | None = None  # where meters push to ([metering])
        self.started = time.time()
        self.ready = asyncio.Event()
        self.control: ControlService | None = None
        self._listener: CommandListener | None = None
        self._rule_store: RuleStore | None = None
        self.notifier = Notifier()
        self.last_tick = self.clock.monotonic()  # the pipeline is alive while this moves
        self.http: HttpServer | None = None  # when [http] is configured
        self._engines = {
            t.spec.mrid: e for t in config.twins if (e := getattr(t, "rules", None)) is not None
        }

    def _drop_notice(
        self,
        seq_ranges: list[tuple[int, int]],
        count: int,
        klass: int,
        unnumbered: tuple[int, int] | None,
    ) -> tuple[str, bytes]:
        a = self.config.agent
        body: dict[str, Any] = {
            "agentId": a.agent_id,
            "droppedSeqRanges": [list(r) for r in seq_ranges],
            "count": count,
            "class": "event" if klass == EVENT else "telemetry",
            "reason": "outbox size limit",
            "ts": int(time.time() * 1000),
        }
        if unnumbered is not None:  # dropped from memory before they had a seq (disk full)
            body["reason"] = "disk full: dropped from memory before numbering"
            body["unnumbered"] = {"count": count, "firstCreatedMs": unnumbered[0],
                                  "lastCreatedMs": unnumbered[1]}  # fmt: skip
        return agent_topic(a.mqtt.topic_prefix, DROP_NOTICE, a.agent_id), pack(body)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then stop cleanly (see the module docstring)."""
        lock = AgentLock(self.config.agent.data_dir)
        lock.acquire()  # one agent per data folder; readers see that it is running
        try:
            await self._run(stop)
        finally:
            lock.release()

    async def _run(self, stop: asyncio.Event) -> None:
        a = self.config.agent
        signer = Signer(load_private(a.signing.key_file), a.signing.key_id)
        self.outbox = outbox = await Outbox.open(
            a.data_dir / "outbox.db",
            max_bytes=a.outbox.max_bytes,
            commit_interval=a.outbox.commit_interval_ms / 1000,
            drop_notice=self._drop_notice,
            memory_bytes=a.outbox.memory_bytes,
            reserve_bytes=a.outbox.reserve_bytes,
        )
        if self._engines:
            self._open_rule_store(restore=True)
        try:
            self.pipeline = pipeline = Pipeline(self.config.twins, outbox, self.clock)
            self.publisher = publisher = Publisher(
                a.mqtt,
                outbox,
                signer,
                client_id=a.mqtt.client_id or f"edgetwin-{a.agent_id}",
                hist_after_s=a.outbox.hist_after_s,
                state=AgentState(a.agent_id, a.mqtt.topic_prefix, self.config.twins),
            )
            shared: dict[str, object] = {}  # resources devices share, e.g. one serial line
            for dev in self.config.devices:
                points = [
                    bp.spec
                    for twin in self.config.twins
                    if twin.spec.device == dev.name
                    for bp in twin.bound_points()
                ]
                polled = [
                    bp.spec
                    for twin in self.config.twins
                    if twin.spec.device == dev.name
                    for bp in twin.bound_points()
                    if bp.polled
                ]
                driver = self.config.driver_classes[dev.name](dev, points, shared)
                self.devices.append(
                    RunningDevice(dev, driver, polled, pipeline.on_readings, self.clock)
                )
            self._meters(outbox)
            m = self.config.agent.metering
            if m is not None:
                self.push = PushListener(m.push_bind, m.push_port, self.meters)
                await self.push.start()  # before anything runs: a port in use stops the start
            await self._start_http()  # before anything runs: a port in use stops the start
            self.control = self._control(outbox)
            async with asyncio.TaskGroup() as tg:
                pub_task = tg.create_task(publisher.run(), name="publisher")
                polls = [
                    tg.create_task(d.run(), name=f"device-{d.config.name}") for d in self.devices
                ]
                loops = [
                    tg.create_task(self._tick_loop(), name="report-tick"),
                    tg.create_task(self._status_loop(), name="status"),
                ]
                loops += [tg.create_task(m.run(), name=f"meter-{name}")
                          for name, m in self.meters.items()]  # fmt: skip
                if self.control is not None:
                    loops.append(tg.create_task(self.control.run(), name="control"))
                if self._rule_store is not None:
                    loops.append(tg.create_task(self._save_rules_loop(), name="rule-state"))
                self.ready.set()
                self.notifier.notify("READY=1", f"STATUS=polling {len(self.devices)} devices")
                await stop.wait()
                log.info("stopping: polling stops, queued readings are committed")
                self.notifier.notify("STOPPING=1")
                if self.http is not None:
                    await self.http.stop()
                if self.push is not None:
                    await self.push.stop()
                if self._listener is not None:
                    await asyncio.to_thread(self._listener.stop)  # no new commands
                for d in self.devices:
                    d.stopping = True
                await _end(polls + loops, STOP_TASKS_S)
                await self._save_rules()
                await outbox.commit()
                await self._grace(publisher)
                await asyncio.to_thread(publisher.publish_death)
                await _end([pub_task], STOP_TASKS_S)
        finally:
            await outbox.close()
            if self._rule_store is not None:
                self._rule_store.close()
            self._write_status()
            log.info("stopped")

    def pending_report(self) -> str:
        """What a forced exit now would leave: for the last words of ``edgetwin run``."""
        if self.outbox is None:
            return "nothing was opened yet"
        st = self.outbox.status()
        return (f"{st['pending']} messages not yet committed (lost), {st['depth']} committed "
                "(kept in the outbox for the next start)")  # fmt: skip

    def _meters(self, outbox: Outbox) -> None:
        """A ``MeterCollector`` for every meter device (``agent.runtime.ami``)."""
        for d in self.devices:
            if isinstance(d.config, MeteringSettings) and isinstance(d.driver, MeterSource):
                twin = next((t for t in self.config.twins if t.spec.device == d.config.name), None)
                mrid = twin.spec.mrid if twin else d.config.name
                prefix = twin.spec.topic_prefix if twin else self.config.agent.mqtt.topic_prefix
                self.meters[d.config.name] = MeterCollector(d, d.config, mrid, prefix, outbox,
                                                            self.clock)  # fmt: skip

    def _open_rule_store(self, *, restore: bool) -> None:
        """``rules.db``; one that cannot be opened (a full disk) leaves the rules running from
        the state they have, and is tried again at the next save."""
        try:
            self._rule_store = store = RuleStore(state_db(self.config.agent.data_dir / "rules.db"))
            if restore:
                for mrid, engine in self._engines.items():
                    engine.restore(store.load(mrid))
        except (sqlite3.Error, OSError) as err:
            self._rule_store = None
            log.error("rule state: rules.db cannot be opened (%s); rules run without it", err)

    async def _save_rules(self) -> None:
        """Write the rule states that changed (``edge_rules.store``) on a worker thread."""
        if self._rule_store is None:
            if not self._engines:
                return
            self._open_rule_store(restore=False)
            if self._rule_store is None:
                return
        changed = {mrid: e.snapshot() for mrid, e in self._engines.items()}
        try:
            await asyncio.to_thread(self._rule_store.save, changed)
        except sqlite3.Error as err:  # a full disk: the states stay in memory, saved later
            log.warning("rule state: not saved (%s)", err)
            for engine in self._engines.values():
                engine.unsaved()

    async def _save_rules_loop(self) -> None:
        while True:
            await self.clock.sleep(self.config.agent.rules_save_interval_s)
            await self._save_rules()

    def _control(self, outbox: Outbox) -> ControlService | None:
        a = self.config.agent
        if a.control is None:
            return None
        service = ControlService(
            self.config,
            a.control,
            outbox,
            {d.config.name: d for d in self.devices},
            clock=self.clock,
        )
        if service.topics:
            self._listener = CommandListener(
                a.mqtt,
                f"{a.mqtt.client_id or f'edgetwin-{a.agent_id}'}-control",
                list(service.topics),
                service.submit,
                max_message_bytes=a.control.max_message_bytes,
            )
            self._listener.start()
        return service

    async def _grace(self, publisher: Publisher) -> None:
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while publisher.connected and time.monotonic() < deadline:
            if publisher.status()["in_flight"] == 0:
                break
            await asyncio.sleep(0.02)

    async def _tick_loop(self) -> None:
        """The reporting tick; also the pipeline's heartbeat (``/healthz``, systemd watchdog)."""
        assert self.pipeline is not None
        petted = 0.0
        interval = self.notifier.watchdog_interval_s
        while True:
            await self.clock.sleep(1.0)
            self.pipeline.tick()
            self.last_tick = now = self.clock.monotonic()
            if interval is not None and now - petted >= interval:
                self.notifier.notify("WATCHDOG=1")
                petted = now

    def alive(self) -> bool:
        """The pipeline's tick ran in the last ``LIVENESS_S`` seconds."""
        return self.clock.monotonic() - self.last_tick < LIVENESS_S

    def readiness(self) -> dict[str, Any]:
        """Ready: the broker session is up and every device was polled successfully within
        three of its poll intervals (at least ``READY_POLL_AGE_S``)."""
        problems = []
        if self.publisher is None or not self.publisher.connected:
            problems.append("mqtt: not connected")
        now = time.time()
        for d in self.devices:
            age = max(3 * d.config.poll_interval_s, READY_POLL_AGE_S)
            last = d.stats.last_success
            if last is None or now - last > age:
                problems.append(f"device {d.config.name}: no successful poll in {age:g} s")
        return {"ready": not problems, "problems": problems}

    async def _start_http(self) -> None:
        cfg = self.config.agent.http
        if cfg is None:
            return
        from edgetwin.agent.operations.http import as_json, status_page
        from edgetwin.agent.operations.metrics import render

        async def healthz() -> tuple[int, str, bytes]:
            ok = self.alive()
            return as_json(200 if ok else 503, {"alive": ok})

        async def readyz() -> tuple[int, str, bytes]:
            state = self.readiness()
            return as_json(200 if state["ready"] else 503, state)

        async def metrics() -> tuple[int, str, bytes]:
            oldest = await self.outbox.oldest_age_s() if self.outbox else 0.0
            return 200, "text/plain; version=0.0.4; charset=utf-8", render(self.status(), oldest)

        async def api_status() -> tuple[int, str, bytes]:
            twins = twins_snapshot(self.config.twins, commissioned(self.config.agent.data_dir))
            return as_json(
                200,
                {
                    "status": self.status(),
                    "twins": twins,
                    "alarms": active_alarms(self.config.twins),
                    "events": list(self.pipeline.recent_events) if self.pipeline else [],
                    "ready": self.readiness(),
                },
            )

        async def page() -> tuple[int, str, bytes]:
            return 200, "text/html; charset=utf-8", status_page()

        routes = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics,
                  "/api/status": api_status, "/": page}  # fmt: skip
        self.http = HttpServer(routes, cfg.bind, cfg.port)
        await self.http.start()

    async def _status_loop(self) -> None:
        a = self.config.agent
        topic = agent_topic(a.mqtt.topic_prefix, AGENT_STATUS, a.agent_id)
        while True:
            snapshot = self.status()
            self._write_status(snapshot)
            assert self.outbox is not None
            self.outbox.submit(topic, pack(snapshot))
            await self.clock.sleep(a.status_interval_s)

    def status(self) -> dict[str, Any]:
        """The agent's status: devices, twins, outbox (with drop counters), MQTT session."""
        a = self.config.agent
        twins = {}
        for twin in self.config.twins:
            st = twin.state()
            twins[st.mrid] = {
                **summary(st),
                "points": len(st.points),
                "invalid_points": sum(1 for r in st.points.values() if not r.quality.is_good),
            }
        return {
            "agentId": a.agent_id,
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1),
            "ts": int(time.time() * 1000),
            "devices": {
                d.config.name: {
                    "available": d.stats.available,
                    "polls": d.stats.polls,
                    "failures": d.stats.failures,
                    "overruns": d.stats.overruns,
                    "last_poll_ms": None
                    if d.stats.last_poll_s is None
                    else round(d.stats.last_poll_s * 1000, 2),
                    "last_error": d.stats.last_error,
                    "requests": d.driver.stats.get("requests"),
                    "poll_buckets": d.stats.poll_buckets,
                    "poll_seconds_total": round(d.stats.poll_seconds_total, 6),
                }
                for d in self.devices
            },
            "twins": twins,
            "outbox": self.outbox.status() if self.outbox else None,
            "mqtt": self.publisher.status() if self.publisher else None,
            "reports": self.pipeline.reports if self.pipeline else 0,
            "points_read": self.pipeline.point_updates if self.pipeline else 0,
            "alarms": {
                "active": len(active_alarms(self.config.twins)),
                "rule_evaluations": sum(e.evaluations for e in self._engines.values()),
            },
            "control": self.control.status() if self.control else None,
            "meters": {name: m.status() for name, m in self.meters.items()},
            "pushes": self.push.status() if self.push else None,
        }

    def _write_status(self, snapshot: dict[str, Any] | None = None) -> None:
        data_dir = self.config.agent.data_dir
        with contextlib.suppress(OSError):
            write_json(self.status_path, snapshot or self.status())
            twins = twins_snapshot(self.config.twins, commissioned(data_dir))
            write_json(data_dir / TWINS, twins)
            write_json(data_dir / ALARMS, active_alarms(self.config.twins))


async def _end(tasks: list[asyncio.Task[Any]], within: float) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again any that lost a cancellation,
    for at most ``within`` seconds; log the ones that would not end (the TaskGroup then
    waits for them, and ``edgetwin run``'s stop watchdog bounds that)."""
    deadline = time.monotonic() + within
    pending = {t for t in tasks if not t.done()}
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.25)
    if pending:
        log.error("stop: %s did not end when cancelled", ", ".join(t.get_name() for t in pending))
