"""SCADA benchmark: ``python bench/scada.py``. Prints figures, then one JSON line.

The simulated DNP3 outstation runs in its own process (``python -m edgetwin.firmware_sim dnp3``).

* ``events_per_s``: analog changes taken from the outstation's unsolicited responses into a
  twin (the ``dnp3`` driver's reads ingested by a generic twin of the 1,000 analogs), while the
  outstation changes all 1,000 analogs every 50 ms (``offered_events_per_s``, what it would send
  if it kept up; dnp3py is pure Python on both sides), with the master's CPU meanwhile
  (``master_cpu_pct_while_flooded``: near 100 % means the master is the limit).
* ``cpu_pct_1000_points``: CPU of one core used by the agent process (DNP3 master, the twin,
  report-by-exception with a 0.5 % deadband, signing, the outbox, MQTT to mosquitto) while the
  outstation changes 1,000 analogs every second. Target <= 5 %.
* ``sbo_p50_ms`` / ``sbo_p99_ms``: a signed breaker command, published by a central client, to
  its verified result event: CROB select, operate, and the double-bit position confirmed after
  the breaker's 300 ms travel. Target p99 <= 500 ms. Also measured while the outstation sends
  the 1,000 changing analogs (``*_1000_analogs_changing``): the simulated outstation, one
  Python thread, then answers late while it builds its events.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgetwin.agent.runtime.config import load_config
from edgetwin.agent.runtime.localstate import record_commissioning
from edgetwin.agent.tools.broker import Mosquitto, free_port, wait_port
from edgetwin.central.command import ResultWaiter, build_command, publish
from edgetwin.firmware_sim.site import site_config
from edgetwin.wire.keys import generate, load_private, load_trust_dir

ANALOGS = 1000
BREAKER = "6d3c1f7e-2a4b-4c8d-9e0f-1a2b3c4d5e6f"
MEASURED = "7e4d2a8f-3b5c-4d9e-8f1a-2b3c4d5e6f70"
COMMANDS = 60
FIRST_EXTRA = 6  # the outstation's 2 feeders take ai:0..5; the extra analogs follow


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def outstation(port: int, refresh_s: float, analogs: int = ANALOGS) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetwin.firmware_sim", "dnp3", "--port", str(port),
         "--analogs", str(analogs), "--refresh-s", str(refresh_s), "--travel-s", "0.3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, timeout=60)
        yield
    finally:
        proc.terminate()
        proc.wait(20)


def config(
    tmp: Path,
    mqtt_port: int,
    key: Path,
    port: int,
    trust: Path | None = None,
    analogs: int = ANALOGS,
) -> Path:
    head = site_config(agent_id="bench", data_dir=tmp / "data", key_file=key,
                       mqtt={"port": mqtt_port}, meters=[], status_interval_s=60,
                       reporting={"integrity_period_s": 300})  # fmt: skip
    points = ",\n".join(
        f'  {{ field = "a{n}", address = "ai:{FIRST_EXTRA + n}", range = [-1000, 2000], '
        f"deadband_pct = 0.5 }}"
        for n in range(analogs)
    )
    measured = (f'[[twins]]\nmrid = "{MEASURED}"\nkind = "generic"\ndevice = "rtu1"\n'
                f"points = [\n{points}\n]\n") if analogs else ""  # fmt: skip
    control = f'[control]\ntrust_file = "{trust}"\noperate_timeout_s = 5\n' if trust else ""
    body = f"""
{control}
[[devices]]
name = "rtu1"
driver = "dnp3"
host = "127.0.0.1"
port = {port}
outstation = 10
poll_interval_s = 0.1
timeout_s = 5
event_poll_interval_s = 0

{measured}
[[twins]]
mrid = "{BREAKER}"
kind = "breaker"
device = "rtu1"
max_operations_per_minute = 10000
points = [
  {{ field = "@DPos", address = "dbi:0", dtype = "uint16", kind = "state" }},
  {{ field = "@Cmd", address = "bo:0", dtype = "bool", kind = "state" }},
]
"""
    path = tmp / "edgetwin.toml"
    path.write_text(head + body)
    return path


async def events_per_s(tmp: Path, key: Path, seconds: float = 10.0) -> dict[str, Any]:
    """The driver and a twin in this process, the outstation flooding unsolicited events."""
    port = free_port()
    with outstation(port, refresh_s=0.05):
        cfg = load_config(config(tmp, free_port(), key, port))
        twin = next(t for t in cfg.twins if t.spec.mrid == MEASURED)
        device = cfg.devices[0]
        points = [bp.spec for bp in twin.bound_points()]
        driver: Any = cfg.driver_classes[device.name](device, points, {})
        await driver.connect()
        try:
            last: dict[str, float] = {}
            taken = 0
            start, cpu0 = time.monotonic(), time.process_time()
            while time.monotonic() - start < seconds:
                readings = await driver.read(points)
                twin.ingest(readings)
                for r in readings:
                    if last.get(r.point) != r.ts:
                        last[r.point] = r.ts
                        taken += 1
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - start
            cpu = (time.process_time() - cpu0) / elapsed * 100
        finally:
            await driver.close()
    return {"events_per_s": round(taken / elapsed), "offered_events_per_s": round(ANALOGS / 0.05),
            "unsolicited_responses": driver.stats["unsolicited"],
            "master_cpu_pct_while_flooded": round(cpu)}  # fmt: skip


def agent_run(tmp: Path, key: Path, analogs: int, seconds: float = 20.0) -> dict[str, Any]:
    """The agent in its own process against an outstation with ``analogs`` extra analogs
    changing every second: its CPU over ``seconds`` (when it has analogs), then the SBO
    command latency."""
    central_key = tmp / "central" / "scada-1.key"
    if not central_key.exists():
        generate(central_key)
    trust = tmp / "central" / "trust.toml"
    trust.write_text('[[keys]]\nkid = "scada-1"\npublic_key = "scada-1.pub.pem"\n'
                     'twins = ["*"]\nactions = ["*"]\n')  # fmt: skip
    (tmp / "agent-trust").mkdir(exist_ok=True)
    (tmp / "agent-trust" / "bench.pem").write_bytes(key.with_suffix(".pub.pem").read_bytes())
    scada = load_private(central_key)
    port = free_port()
    out: dict[str, Any] = {}
    with Mosquitto(tmp / f"broker-{analogs}") as broker, outstation(port, 1.0, analogs):
        cfg = config(tmp, broker.port, key, port, trust, analogs)
        record_commissioning(tmp / "data", BREAKER, [{"check": "bench", "ok": True}])
        agent = subprocess.Popen(
            [sys.executable, "-m", "edgetwin.agent", "--log-level", "error", "run", str(cfg)]
        )
        try:
            time.sleep(8)  # start-up, the integrity poll, the first reports
            if analogs:
                cpu0, t0 = proc_cpu_s(agent.pid), time.monotonic()
                time.sleep(seconds)
                out["cpu"] = round(
                    (proc_cpu_s(agent.pid) - cpu0) / (time.monotonic() - t0) * 100, 1
                )
            times: list[float] = []
            results: dict[str, int] = {}
            with ResultWaiter(broker.url, load_trust_dir(tmp / "agent-trust"), kind="breaker",
                              mrid=BREAKER) as waiter:  # fmt: skip
                for i in range(COMMANDS):
                    action = "open" if i % 2 == 0 else "close"
                    topic, envelope, cmd = build_command(scada, "scada-1", kind="breaker",
                                                         mrid=BREAKER, action=action)  # fmt: skip
                    begin = time.perf_counter()
                    publish(broker.url, topic, envelope)
                    result = waiter.wait(cmd, 10)
                    times.append((time.perf_counter() - begin) * 1000)
                    outcome = result["result"] if result else "no_answer"
                    results[outcome] = results.get(outcome, 0) + 1
            q = statistics.quantiles(times, n=100)
            out |= {"p50": round(q[49], 1), "p99": round(q[98], 1), "results": results}
        finally:
            agent.terminate()
            agent.wait(30)
    return out


async def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="edgetwin-scada-"))
    key, _ = generate(tmp / "keys" / "bench.key")
    out = await events_per_s(tmp, key)
    print(f"DNP3 unsolicited into a twin: {out['events_per_s']} events/s of "
          f"{out['offered_events_per_s']} offered ({out['unsolicited_responses']} responses; "
          f"the master used {out['master_cpu_pct_while_flooded']} % of a core)")  # fmt: skip
    quiet = await asyncio.to_thread(agent_run, tmp / "quiet", key, 0)
    loaded = await asyncio.to_thread(agent_run, tmp / "loaded", key, ANALOGS)
    out |= {"cpu_pct_1000_points": loaded["cpu"], "sbo_p50_ms": quiet["p50"],
            "sbo_p99_ms": quiet["p99"], "sbo_results": quiet["results"], "travel_ms": 300,
            "sbo_p50_ms_1000_analogs_changing": loaded["p50"],
            "sbo_p99_ms_1000_analogs_changing": loaded["p99"]}  # fmt: skip
    print(f"agent, {ANALOGS} DNP3 analogs changing every second: {out['cpu_pct_1000_points']} % "
          "of one core (target <= 5 %)")  # fmt: skip
    print(f"signed breaker command -> SBO -> position confirmed (300 ms travel): p50 "
          f"{out['sbo_p50_ms']} ms, p99 {out['sbo_p99_ms']} ms (target p99 <= 500 ms); "
          f"{out['sbo_results']}; with the 1,000 analogs changing meanwhile: p50 "
          f"{out['sbo_p50_ms_1000_analogs_changing']} ms, p99 "
          f"{out['sbo_p99_ms_1000_analogs_changing']} ms")  # fmt: skip
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
