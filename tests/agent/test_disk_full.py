"""A full disk, for real: a small tmpfs that fills up under the outbox and under a running agent.

Nothing committed is lost, nothing crashes, memory stays within its budget (the oldest telemetry
in memory goes first, counted and announced), and everything recovers by itself once space frees.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetwin.agent.northbound.outbox import EVENT, TELEMETRY, Outbox
from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.site import site_config
from tests.agent.test_outbox import agent_like_notice
from tests.helpers import SmallFilesystem, until


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFilesystem]:
    fs = SmallFilesystem(tmp_path / "fs", 6 * 1024 * 1024)
    yield fs
    fs.unmount()


def committed_seqs(db: Path) -> list[int]:
    return [s for (s,) in sqlite3.connect(db).execute("SELECT seq FROM outbox ORDER BY seq")]


async def test_a_disk_that_fills_up_loses_nothing_committed_and_recovers(
    small_fs: SmallFilesystem,
) -> None:
    db = small_fs.path / "outbox.db"
    box = await Outbox.open(db, commit_interval=3600, max_bytes=64 * 1024 * 1024,
                            drop_notice=agent_like_notice, memory_bytes=1024 * 1024,
                            reserve_bytes=512 * 1024)  # fmt: skip
    assert (small_fs.path / "outbox.reserve").stat().st_size == 512 * 1024
    box.submit("alarm", b"breaker tripped", EVENT)
    await box.commit()
    small_fs.fill()  # someone else's log fills the disk
    for _ in range(60):  # 60 commits of 100 profiles: far more than the disk or memory holds
        for _ in range(100):
            box.submit("tele", bytes(2200), TELEMETRY)
        await box.commit()  # must not raise
    st = box.status()
    assert st["write_errors"] > 0 and "full" in str(st["last_error"])
    assert st["pending_bytes"] <= box.memory_bytes  # memory held within its budget
    assert st["dropped_unnumbered_telemetry"] > 0  # ...by dropping the oldest telemetry
    assert not (small_fs.path / "outbox.reserve").exists()  # the reserve was released
    assert committed_seqs(db)[0] == 1  # the committed event is still there

    small_fs.free()  # space comes back: it recovers by itself
    for _ in range(5):
        await box.commit()
    st = box.status()
    assert st["pending"] == 0 and st["last_error"] is None
    rows = await box.fetch(0, 100_000)
    notices = [r for r in rows if r.urgent]
    assert any(b"unnumbered" in r.payload for r in notices)  # the memory drop is announced
    seqs = sorted(r.seq for r in rows)
    assert seqs == committed_seqs(db)
    await box.close()


async def test_an_agent_starting_on_a_full_disk_runs_degraded_and_recovers(
    small_fs: SmallFilesystem,
) -> None:
    small_fs.fill()
    db = small_fs.path / "data" / "outbox.db"
    try:
        box = await Outbox.open(db, commit_interval=0.01, memory_bytes=1024 * 1024)
    except OSError:  # creating the folder itself may fail: the agent's data_dir exists already
        (small_fs.path / "data").mkdir()
        box = await Outbox.open(db, commit_interval=0.01, memory_bytes=1024 * 1024)
    assert not box.available and box.status()["last_error"]
    assert await box.next_bdseq() == 1  # the publisher's reconnect does not crash
    box.submit("tele", b"reading")
    await asyncio.sleep(0)
    small_fs.free()
    # committed (depth counts it once its transaction is done; pending empties at its start)
    await until(lambda: box.available and box.status()["depth"] == 1, 15, "the outbox opened")
    assert [r.payload for r in await box.fetch(0, 10)] == [b"reading"]
    await box.close()
    again = await Outbox.open(db)
    assert again.counters["bdseq"] == 1  # persisted once the disk allowed it
    await again.close()


async def test_the_agent_keeps_polling_on_a_full_disk_and_drains_when_the_broker_returns(
    small_fs: SmallFilesystem, tmp_path: Path, keys: dict[str, Path], meter
) -> None:  # type: ignore[no-untyped-def]
    """The reported crash: data_dir fills up while the broker is down; the publisher's
    reconnect wrote the birth/death counter, got SQLITE_FULL and the agent exited."""
    from tests.test_end_to_end import running

    port = free_port()  # the broker is down
    cfg = tmp_path / "edgetwin.toml"
    cfg.write_text(site_config(
        agent_id="test-agent", data_dir=small_fs.path / "data", key_file=keys["private"],
        status_interval_s=3600, meters=[("meter1", meter.port)],
        mqtt={"port": port, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.1},
        device={"poll_interval_s": 0.02, "timeout_s": 0.5},
        reporting={"integrity_period_s": 0.02},
        outbox={"commit_interval_ms": 10, "memory_bytes": 1024 * 1024,
                "reserve_bytes": 256 * 1024},
    ))  # fmt: skip
    broker = Mosquitto(tmp_path / "broker", port=port)
    small_fs.fill(leave=1024 * 1024)  # a disk nearly full already: it fills within seconds
    async with running(cfg) as agent:
        box = agent.outbox
        assert box is not None
        await until(lambda: box.status().get("write_errors", 0) > 0, 60, "the disk to fill")
        polls = agent.devices[0].stats.polls
        await until(lambda: agent.devices[0].stats.polls > polls + 20, 30, "polling on")
        assert box.status()["pending_bytes"] <= 1024 * 1024
        broker.start()
        try:
            await until(lambda: agent.publisher.connected, 30, "the broker")  # type: ignore[union-attr]
            acked = agent.publisher.acked  # type: ignore[union-attr]
            await until(lambda: agent.publisher.acked > acked + 100, 60, "the backlog draining")  # type: ignore[union-attr]
            await until(lambda: box.status()["last_error"] is None, 60, "commits succeeding again")
        finally:
            broker.stop()


async def test_a_restart_on_a_full_disk_runs_degraded_instead_of_crash_looping(
    small_fs: SmallFilesystem, tmp_path: Path, keys: dict[str, Path], meter
) -> None:  # type: ignore[no-untyped-def]
    from tests.test_end_to_end import running

    cfg = tmp_path / "edgetwin.toml"
    cfg.write_text(site_config(
        agent_id="test-agent", data_dir=small_fs.path / "data", key_file=keys["private"],
        status_interval_s=0.2, meters=[("meter1", meter.port)], mqtt={"port": free_port()},
        device={"poll_interval_s": 0.05}, outbox={"commit_interval_ms": 10},
    ))  # fmt: skip
    async with running(cfg) as agent:  # a first run leaves its files
        await until(lambda: agent.devices[0].stats.polls >= 3)
    small_fs.fill()  # then the disk fills completely while it is down
    async with running(cfg) as agent:
        await until(lambda: agent.devices[0].stats.polls >= 20, 30, "polling on a full disk")
        await until(lambda: agent.outbox.status().get("write_errors", 0) > 0)  # type: ignore[union-attr]
        assert agent.alive()
        small_fs.free()
        await until(lambda: agent.outbox.status()["last_error"] is None, 30, "recovered")  # type: ignore[union-attr]
        await until(lambda: agent.outbox.status()["pending"] == 0, 30)  # type: ignore[union-attr]
