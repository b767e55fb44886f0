"""Data concentrator benchmark: ``python bench/ami.py``. Prints figures, then one JSON line.

The simulated DLMS meters run in their own process (``python -m edgetwin.firmware_sim dlms
--count N``, one TCP port each, LLS); the agent runs in this process (its collectors, the
DLMS driver, signing, the outbox, MQTT to a local mosquitto), so ``time.process_time`` is the
agent's CPU.

* ``meters_per_hour_day_of_intervals``: 200 meters, each read for a day of 15-minute intervals
  (association, clock, the load profile by range, 96 intervals published once): how many
  meters an hour that rate is. Target >= 3,600 over loopback TCP.
* ``backfill_7_days_100_meters_s``: 100 meters read back 7 days each (672 intervals a meter,
  67,200 in all), from the agent's start to the last interval in the outbox.
* ``cpu_pct_500_meters_15min`` / ``rss_mb_500_meters``: 500 meters, each read every period
  (clock, the new interval, a register poll). Measured with a 30-second period over three
  periods: the agent's CPU in that window per read cycle (register polls and the status loop
  counted in, so an upper bound), times 500 reads per 15 minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgetwin.agent.runtime.app import Agent
from edgetwin.agent.runtime.config import load_config
from edgetwin.agent.tools.broker import Mosquitto, wait_port
from edgetwin.firmware_sim.site import site_config
from edgetwin.wire.keys import generate


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_run(count: int, start: int = 20000) -> int:
    """The first port of ``count`` consecutive free loopback ports."""
    import socket

    base = start
    while base + count < 32768:
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            base = port + 1
    raise RuntimeError(f"no {count} consecutive free ports")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def meters(port: int, count: int, days: float, period_s: int = 900) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetwin.firmware_sim", "dlms", "--port", str(port),
         "--count", str(count), "--days", str(days), "--period-s", str(period_s)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port + count - 1, timeout=120)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def config(tmp: Path, broker: int, key: Path, port: int, count: int, **settings: Any) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    password = tmp / "password"
    password.write_text("12345678\n")
    password.chmod(0o600)
    head = site_config(agent_id="bench", data_dir=tmp / "data", key_file=key,
                       mqtt={"port": broker}, meters=[], status_interval_s=60,
                       outbox={"commit_interval_ms": 50})  # fmt: skip
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    body = "".join(
        f'\n[[devices]]\nname = "m{i}"\ndriver = "dlms"\nhost = "127.0.0.1"\nport = {port + i}\n'
        f'password_file = "{password}"\ntimeout_s = 10\nconnect_timeout_s = 30\n{extra}'
        f'\n[[twins]]\nmrid = "00000000-0000-4000-8000-{i:012d}"\nkind = "meter"\n'
        f'device = "m{i}"\npoints = [\n  {{ field = "readingMMTR.SupWh", '
        f'address = "1.0.1.8.0.255", kind = "counter" }},\n]\n'
        for i in range(count)
    )
    path = tmp / "edgetwin.toml"
    path.write_text(head + body)
    return path


async def run_until(cfg: Path, done: Any, limit_s: float) -> tuple[Agent, float, float]:
    """Start the agent, wait until ``done(agent)``; (agent, seconds, CPU seconds)."""
    agent = Agent(load_config(cfg))
    stop = asyncio.Event()
    t0, cpu0 = time.monotonic(), time.process_time()
    task = asyncio.create_task(agent.run(stop))
    try:
        while not done(agent):
            if time.monotonic() - t0 > limit_s or task.done():
                raise RuntimeError(f"not done within {limit_s} s")
            await asyncio.sleep(0.05)
        elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
        assert agent.outbox is not None
        await agent.outbox.commit()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    return agent, elapsed, cpu


def published(agent: Agent, at_least: int) -> bool:
    return bool(agent.meters) and all(m.intervals >= at_least for m in agent.meters.values())


async def day_rate(tmp: Path, key: Path, broker: int, count: int = 200) -> dict[str, Any]:
    port = free_run(count)
    with meters(port, count, days=2) as sim:
        cfg = config(tmp, broker, key, port, count, backfill_days=1, read_window_s=1)
        sim0 = proc_cpu_s(sim)
        _agent, elapsed, cpu = await run_until(cfg, lambda a: published(a, 96), 600)
        sim_cpu = proc_cpu_s(sim) - sim0
    return {"meters_per_hour_day_of_intervals": round(count / elapsed * 3600),
            "day_read_s": round(elapsed, 2), "day_read_agent_cpu_s": round(cpu, 2),
            "day_read_sim_cpu_s": round(sim_cpu, 2)}  # fmt: skip


async def backfill(tmp: Path, key: Path, broker: int, count: int = 100) -> dict[str, Any]:
    port = free_run(count)
    with meters(port, count, days=8):
        cfg = config(tmp, broker, key, port, count, backfill_days=7, read_window_s=1)
        agent, elapsed, cpu = await run_until(cfg, lambda a: published(a, 7 * 96), 1200)
    total = sum(m.intervals for m in agent.meters.values())
    return {"backfill_7_days_100_meters_s": round(elapsed, 1), "backfill_intervals": total,
            "backfill_agent_cpu_s": round(cpu, 1)}  # fmt: skip


async def steady(tmp: Path, key: Path, broker: int, count: int = 500) -> dict[str, Any]:
    period, periods = 30, 3
    port = free_run(count)
    with meters(port, count, days=0.02, period_s=period):
        cfg = config(tmp, broker, key, port, count, backfill_days=0.01, poll_interval_s=period,
                     read_window_s=period * 0.8, read_delay_s=1)  # fmt: skip
        agent = Agent(load_config(cfg))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            start = time.monotonic()
            while not (agent.meters and all(m.reads >= 1 for m in agent.meters.values())):
                if time.monotonic() - start > 300:
                    raise RuntimeError("the first reads did not finish")
                await asyncio.sleep(0.1)
            reads0 = sum(m.reads for m in agent.meters.values())
            t0, cpu0 = time.monotonic(), time.process_time()
            await asyncio.sleep(period * periods)
            elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
            reads = sum(m.reads for m in agent.meters.values()) - reads0
            rss = rss_mb()
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
    pct = cpu / elapsed * 100
    # per read (the window's register polls and status loop counted in: an upper bound),
    # times one read of every meter per 15 minutes
    per_15min = cpu / max(reads, 1) * count / 900 * 100
    return {"cpu_pct_500_meters_15min": round(per_15min, 2), "steady_cpu_s": round(cpu, 2),
            "cpu_pct_500_meters_30s_period": round(pct, 1), "steady_reads": reads,
            "rss_mb_500_meters": round(rss, 1)}  # fmt: skip


async def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="edgetwin-ami-"))
    key, _ = generate(tmp / "keys" / "bench.key")
    out: dict[str, Any] = {}
    with Mosquitto(tmp / "broker") as broker:
        out |= await day_rate(tmp / "day", key, broker.port)
        print(f"a day of 15-minute intervals from each of 200 meters: {out['day_read_s']} s -> "
              f"{out['meters_per_hour_day_of_intervals']} meters/hour (target >= 3,600); agent "
              f"CPU {out['day_read_agent_cpu_s']} s, simulated meters {out['day_read_sim_cpu_s']} "
              "s")  # fmt: skip
        out |= await backfill(tmp / "backfill", key, broker.port)
        print(f"back-fill of 7 days for 100 meters ({out['backfill_intervals']} intervals): "
              f"{out['backfill_7_days_100_meters_s']} s (agent CPU "
              f"{out['backfill_agent_cpu_s']} s)")  # fmt: skip
        out |= await steady(tmp / "steady", key, broker.port)
        print(f"500 meters read every period: {out['cpu_pct_500_meters_30s_period']} % of a core "
              f"with a 30 s period ({out['steady_reads']} reads, {out['steady_cpu_s']} s CPU) -> "
              f"{out['cpu_pct_500_meters_15min']} % every 15 minutes; RSS "
              f"{out['rss_mb_500_meters']} MB")  # fmt: skip
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
