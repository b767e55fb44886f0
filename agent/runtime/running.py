"""The running wrapper: gives every driver instance the agent's cross-cutting behaviour.

For one device it owns: the poll schedule (fixed rate, no drift: slot k is at start + k x
interval; overrun slots are skipped and counted), the poll timeout, reconnects with capped and
jittered exponential backoff, availability, statistics, and logging -- once when the device goes
unavailable and once when it recovers, never every poll.

A device that fails never affects another: each ``RunningDevice`` is its own task, and its
failures end as invalid/failure quality on its own points (the sink gets ``available=False``).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgetwin.agent.runtime.backoff import Backoff
from edgetwin.core.clock import Clock
from edgetwin.core.errors import DeviceError, DeviceRejected, DeviceUnavailable
from edgetwin.core.models import Reading
from edgetwin.core.points import PointSpec
from edgetwin.drivers.base import DeviceConfig, Driver

log = logging.getLogger(__name__)

Sink = Callable[[str, Sequence[Reading], bool], None]
T = TypeVar("T")


#: upper bounds (seconds) of the poll-duration histogram's buckets; the last is +Inf
POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class DeviceStats:
    polls: int = 0
    failures: int = 0
    overruns: int = 0
    available: bool = False
    last_poll_s: float | None = None  # duration of the last successful poll
    last_success: float | None = None  # wall time
    last_error: str | None = None
    since: float = field(default_factory=time.time)  # wall time of the last availability change
    #: successful polls by duration: counts per ``POLL_BUCKETS`` bound (not cumulative) + one
    #: for longer; with their total time, a Prometheus histogram
    poll_buckets: list[int] = field(default_factory=lambda: [0] * (len(POLL_BUCKETS) + 1))
    poll_seconds_total: float = 0.0

    def observe(self, duration: float) -> None:
        self.last_poll_s = duration
        self.poll_seconds_total += duration
        self.poll_buckets[bisect.bisect_left(POLL_BUCKETS, duration)] += 1


class RunningDevice:
    def __init__(
        self,
        config: DeviceConfig,
        driver: Driver,
        points: Sequence[PointSpec],
        sink: Sink,
        clock: Clock,
    ) -> None:
        self.config = config
        self.driver = driver
        self.points = list(points)
        self._sink = sink
        self._clock = clock
        self.stats = DeviceStats()
        self._ever_available = False
        self._next_slot: float | None = None
        self._io = asyncio.Lock()  # a poll and a control write never interleave
        self._connected = False
        #: set once the first poll has succeeded or failed: the twins' state is known
        self.attempted = asyncio.Event()
        #: set by the agent at stop: the loop ends at its next turn even if a cancellation was
        #: lost (Python 3.11's ``wait_for`` can swallow one that races a completing read)
        self.stopping = False

    async def run(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s)
        connected = False
        try:
            while not self.stopping:
                _honour_cancellation()
                if not connected:
                    try:
                        async with self._io:  # ``use`` may have connected it meanwhile
                            if not self._connected:
                                async with asyncio.timeout(cfg.connect_timeout_s):
                                    await self.driver.connect()
                        connected = True
                        self._connected = True
                    except Exception as err:
                        await self._back_off(err, backoff)
                        continue
                start = self._clock.monotonic()
                if self._next_slot is None:
                    self._next_slot = start
                try:
                    async with self._io, asyncio.timeout(cfg.timeout_s + cfg.poll_interval_s):
                        readings = await self.driver.read(self.points)
                except DeviceRejected as err:  # answered, but refused the whole read
                    self._failed(err)
                except Exception as err:  # no answer, a dropped link, or garbage
                    connected = False
                    await self._back_off(err, backoff)
                    continue
                else:
                    backoff.reset()
                    self._succeeded(readings, self._clock.monotonic() - start)
                await self._wait_next_slot()
        finally:
            await self.driver.close()

    async def execute(
        self, point: PointSpec, value: Any, *, read_back: PointSpec | None = None
    ) -> Reading:
        """Write ``value`` to ``point`` and read back ``read_back`` (default: ``point``), between
        polls (control path). Raises ``DeviceError`` when the device is unavailable or refuses;
        the read-back reading is also handed to the sink, so the twin sees the new state at
        once."""
        self._require_available()
        async with self._io:
            async with asyncio.timeout(self.config.timeout_s * 2):
                await self.driver.write(point, value)
        return await self.observe(read_back or point)

    async def observe(self, point: PointSpec) -> Reading:
        """Read one point between polls (a position after a command) and hand it to the sink;
        a point that changed several times since the last read gives its latest here."""
        self._require_available()
        async with self._io:
            async with asyncio.timeout(self.config.timeout_s * 2):
                readings = await self.driver.read([point])
        self._sink(self.config.name, readings, True)
        return readings[-1]

    async def use(self, work: Callable[[Driver], Awaitable[T]], timeout_s: float) -> T:
        """Run ``work(driver)`` between polls, within ``timeout_s`` (a meter's profile read, a
        clock set: ``agent.runtime.ami``). The link is opened first when it is down; a
        failure other than the device's refusal closes it, marks the device unavailable and
        raises ``DeviceUnavailable`` (the poll loop reconnects with its backoff)."""
        async with self._io:
            try:
                if not self._connected:
                    async with asyncio.timeout(self.config.connect_timeout_s):
                        await self.driver.connect()
                    self._connected = True
                async with asyncio.timeout(timeout_s):
                    return await work(self.driver)
            except DeviceRejected:
                raise
            except Exception as err:
                _honour_cancellation()
                self._connected = False
                await self.driver.close()
                self._failed(err)
                if isinstance(err, DeviceUnavailable):
                    raise
                raise DeviceUnavailable(f"{type(err).__name__}: {err}") from err

    def _require_available(self) -> None:
        if not (self._connected and self.stats.available):
            raise DeviceUnavailable(f"device {self.config.name} is unavailable")

    async def _back_off(self, err: Exception, backoff: Backoff) -> None:
        """Close the link, mark the device failed, wait out the backoff; the schedule restarts."""
        _honour_cancellation()  # the "error" may be a library's answer to our cancellation
        self._connected = False
        if not isinstance(err, DeviceError | TimeoutError | OSError):
            log.exception("device %s: unexpected error from the driver", self.config.name)
        async with self._io:  # never under a ``use`` in progress
            await self.driver.close()
        self._failed(err)
        await self._clock.sleep(backoff.next())
        self._next_slot = None

    async def _wait_next_slot(self) -> None:
        """Sleep until the next slot of the fixed-rate schedule; skip slots already missed."""
        interval = self.config.poll_interval_s
        now = self._clock.monotonic()
        assert self._next_slot is not None
        self._next_slot += interval
        if self._next_slot < now:
            missed = int((now - self._next_slot) // interval) + 1
            self.stats.overruns += missed
            self._next_slot += missed * interval
        await self._clock.sleep(self._next_slot - now)

    def _succeeded(self, readings: Sequence[Reading], duration: float) -> None:
        st = self.stats
        st.polls += 1
        st.observe(duration)
        st.last_success = self._clock.time()
        if not st.available:
            st.available = True
            st.since = st.last_success
            st.last_error = None
            if self._ever_available or st.failures:
                log.info("device %s: available again", self.config.name)
            self._ever_available = True
        self._sink(self.config.name, readings, True)
        self.attempted.set()

    def _failed(self, err: BaseException) -> None:
        st = self.stats
        st.failures += 1
        message = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        if st.available or st.last_error is None:
            log.warning("device %s: unavailable (%s)", self.config.name, message)
            st.since = self._clock.time()
        st.available = False
        st.last_error = message
        self._sink(self.config.name, (), False)
        self.attempted.set()


def _honour_cancellation() -> None:
    """Raise ``CancelledError`` if this task was asked to stop and the request was lost: on
    Python 3.11 ``asyncio.wait_for`` -- used inside pymodbus and asyncua too -- can swallow a
    cancellation that arrives as its inner await completes, and the loop would run on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
