"""Schedules: curve points a twin applies at their start times, kept across link loss and restarts.

A schedule comes from an accepted control command (``agent.runtime.control``). It replaces the
twin's schedule in force and is written to ``control.db`` before it runs, so a restart -- or a
reboot during a broker outage -- resumes it. When a schedule is accepted or loaded, the point in
force (the latest whose start has passed) is applied at once, then each later point at its start
time by the agent's clock (wall time, re-read at least every minute so a clock step is
followed). After the last point its value stays in force, and a restart applies it again. A
point whose write fails (device unavailable, refusing, or not confirmed) is retried every
``retry_s`` until it succeeds or the next point is due. The link to the central system plays
no part: with the broker gone the schedule runs on, and its result events wait in the outbox.

What applying a point means (interlocks, the write, the read-back, the result event) is the
caller's ``apply``; this module only keeps time and state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from edgetwin.core.clock import Clock
from edgetwin.core.files import open_state_db
from edgetwin.twins.control import CurvePoint, Write

log = logging.getLogger(__name__)

MAX_SLEEP_S = 60.0


@dataclass(frozen=True)
class Schedule:
    mrid: str
    kid: str
    ts_ms: int  # when the central system signed it: a schedule signed earlier is out of order
    command_mrid: str | None
    points: tuple[CurvePoint, ...]

    def in_force(self, now: float) -> int | None:
        """The index of the point in force at ``now`` (None before the first start)."""
        index = None
        for i, point in enumerate(self.points):
            if point.start <= now:
                index = i
        return index


#: apply point ``index`` of a schedule; True when done, False to retry it later
Apply = Callable[[Schedule, int], Awaitable[bool]]


class ScheduleStore:
    """The schedule in force per twin, in ``control.db`` (one row per twin)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        with contextlib.suppress(sqlite3.Error, OSError):  # a full disk: opened when needed
            self._open()

    def _open(self) -> sqlite3.Connection:
        """The database (opened now if it could not be before); raises ``sqlite3.Error`` or
        ``OSError`` when it cannot be written, so a schedule is refused rather than run
        unstored."""
        if self._db is None:
            self._db = open_state_db(
                self._path,
                "PRAGMA synchronous=FULL",
                "CREATE TABLE IF NOT EXISTS schedules (mrid TEXT PRIMARY KEY, kid TEXT, "
                "ts_ms INTEGER, command_mrid TEXT, points TEXT)",
            )
        return self._db

    def save(self, s: Schedule) -> None:
        points = [[p.start, [[w.field, w.value] for w in p.writes]] for p in s.points]
        self._open().execute(
            "INSERT OR REPLACE INTO schedules VALUES (?, ?, ?, ?, ?)",
            (s.mrid, s.kid, s.ts_ms, s.command_mrid, json.dumps(points)),
        )

    def load(self) -> dict[str, Schedule]:
        out = {}
        try:
            rows = self._open().execute("SELECT * FROM schedules").fetchall()
        except (sqlite3.Error, OSError) as err:
            log.error("schedules: control.db cannot be read (%s); none resumed", err)
            return {}
        for mrid, kid, ts_ms, command_mrid, points in rows:
            curve = tuple(
                CurvePoint(start, tuple(Write(f, v) for f, v in writes))
                for start, writes in json.loads(points)
            )
            out[mrid] = Schedule(mrid, kid, ts_ms, command_mrid, curve)
        return out

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class ScheduleRunner:
    """One task per twin with a schedule, driven by ``clock``."""

    def __init__(
        self, store: ScheduleStore, clock: Clock, apply: Apply, *, retry_s: float = 5.0
    ) -> None:
        self._store = store
        self._clock = clock
        self._apply = apply
        self.retry_s = retry_s
        self._schedules: dict[str, Schedule] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        """Resume every stored schedule (call from the event loop)."""
        for schedule in self._store.load().values():
            log.info("schedule for %s resumed (%d points)", schedule.mrid, len(schedule.points))
            self._launch(schedule)

    def in_force(self, mrid: str) -> Schedule | None:
        return self._schedules.get(mrid)

    def accept(self, schedule: Schedule) -> None:
        """Persist ``schedule`` and run it in place of the twin's previous one."""
        self._store.save(schedule)
        self._launch(schedule)

    def _launch(self, schedule: Schedule) -> None:
        old = self._tasks.pop(schedule.mrid, None)
        if old is not None:
            old.cancel()
        self._schedules[schedule.mrid] = schedule
        self._tasks[schedule.mrid] = asyncio.create_task(
            self._run(schedule), name=f"schedule-{schedule.mrid}"
        )

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._store.close()

    async def _run(self, schedule: Schedule) -> None:
        points = schedule.points
        first = schedule.in_force(self._clock.time()) or 0
        for index in range(first, len(points)):
            await self._until(points[index].start)
            due = points[index + 1].start if index + 1 < len(points) else math.inf
            while not await self._apply(schedule, index):
                remaining = due - self._clock.time()
                if remaining <= 0:
                    log.error("schedule %s: point %d never applied", schedule.mrid, index)
                    break
                await self._clock.sleep(min(self.retry_s, remaining))

    async def _until(self, start: float) -> None:
        while (remaining := start - self._clock.time()) > 0:
            await self._clock.sleep(min(remaining, MAX_SLEEP_S))
