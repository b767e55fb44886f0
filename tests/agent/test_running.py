"""The running wrapper with a manual clock against real simulated meters: schedule, failure,
backoff, availability logging, and isolation between devices."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from edgetwin.agent.runtime.running import RunningDevice
from edgetwin.agent.tools.broker import free_port
from edgetwin.core.clock import ManualClock
from edgetwin.core.models import Reading, Validity
from edgetwin.core.points import PointSpec
from edgetwin.drivers.modbus import ModbusTcpConfig, ModbusTcpDriver
from edgetwin.firmware_sim.meter import MeterSimulator
from tests.helpers import until

POINTS = [PointSpec("hz", 48, "float32", "holding")]


def device(name: str, port: int, sink, clock: ManualClock) -> RunningDevice:  # type: ignore[no-untyped-def]
    cfg = ModbusTcpConfig(
        name=name,
        driver="modbus_tcp",
        host="127.0.0.1",
        port=port,
        poll_interval_s=1.0,
        timeout_s=0.2,
        backoff_initial_s=2.0,
        backoff_max_s=8.0,
    )
    return RunningDevice(cfg, ModbusTcpDriver(cfg, POINTS), POINTS, sink, clock)


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Reading], bool]] = []

    def __call__(self, name: str, readings: Sequence[Reading], available: bool) -> None:
        self.calls.append((name, list(readings), available))

    def of(self, name: str) -> list[tuple[str, list[Reading], bool]]:
        return [c for c in self.calls if c[0] == name]


async def test_fixed_rate_schedule(meter: MeterSimulator) -> None:
    clock, sink = ManualClock(), Sink()
    dev = device("m", meter.port, sink, clock)
    task = asyncio.create_task(dev.run())
    await until(lambda: dev.stats.polls == 1)
    clock.advance(0.5)
    await asyncio.sleep(0.05)
    assert dev.stats.polls == 1  # not before its slot
    for n in (2, 3, 4):
        clock.advance(0.5)
        await until(lambda n=n: dev.stats.polls == n)
        clock.advance(0.5)
    clock.advance(3.5)  # a stall: the missed slots are skipped and counted, not replayed
    await until(lambda: dev.stats.polls == 5)
    await asyncio.sleep(0.05)
    assert dev.stats.polls == 5 and dev.stats.overruns >= 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_dead_device_backs_off_logs_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgetwin.agent.runtime.running")
    clock, sink = ManualClock(), Sink()
    port = free_port()
    dev = device("m", port, sink, clock)
    task = asyncio.create_task(dev.run())
    await until(lambda: dev.stats.failures == 1)
    assert sink.of("m")[-1][2] is False and not dev.stats.available
    for n in (2, 3, 4):  # each retry comes only after its backoff
        clock.advance(8.0)
        await until(lambda n=n: dev.stats.failures == n)
    async with MeterSimulator(port=port):
        clock.advance(8.0)
        await until(lambda: dev.stats.available)
        assert sink.of("m")[-1][2] is True
        assert sink.of("m")[-1][1][0].quality.validity is Validity.GOOD
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("available again" in m for m in messages) == 1


async def test_a_silent_device_does_not_stop_another(meter: MeterSimulator) -> None:
    clock, sink = ManualClock(), Sink()
    async with MeterSimulator(port=free_port()) as bad:
        bad.fault = "silent"
        good_dev = device("good", meter.port, sink, clock)
        bad_dev = device("bad", bad.port, sink, clock)
        tasks = [asyncio.create_task(d.run()) for d in (good_dev, bad_dev)]
        await until(lambda: bad_dev.stats.failures == 1 and good_dev.stats.polls >= 1)
        for _ in range(5):
            clock.advance(1.0)
            await asyncio.sleep(0.02)
        await until(lambda: good_dev.stats.polls >= 5)
        assert not bad_dev.stats.available and good_dev.stats.available
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _BuggyDriver(ModbusTcpDriver):
    """A driver with a bug (a stand-in for garbage a real device may send, which issue 3's
    fault-injecting simulators will produce on the wire): every read raises ValueError."""

    async def read(self, points):  # type: ignore[no-untyped-def]
        raise ValueError("unpack requires a buffer of 4 bytes")


async def test_a_driver_bug_marks_the_device_failed_and_is_retried(
    meter: MeterSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    clock, sink = ManualClock(), Sink()
    dev = device("m", meter.port, sink, clock)
    dev.driver = _BuggyDriver(dev.config, POINTS)  # type: ignore[arg-type]
    task = asyncio.create_task(dev.run())
    await until(lambda: dev.stats.failures == 1)
    assert not dev.stats.available and "ValueError" in str(dev.stats.last_error)
    assert "unexpected error from the driver" in caplog.text
    clock.advance(8.0)
    await until(lambda: dev.stats.failures == 2)  # retried after its backoff, task still alive
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
