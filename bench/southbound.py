"""Southbound benchmark: ``python bench/southbound.py``. Prints figures, then one JSON line.

* ``sunspec_requests_per_poll`` / ``sunspec_poll_ms``: one poll of every point of the
  ``sunspec_inverter`` point map on the simulated SunSpec inverter, by EdgeTwin's ``sunspec``
  driver, against ``naive_*``: one request per point plus one per scale factor, as tag-based
  gateways do. ``sunspec_min_requests`` is the target, ceil(register span / 125).
* ``cpu_pct_100_devices``: CPU time of one core used by the agent process polling 100 simulated
  Modbus meters x 56 points once a second (the simulators run in another process), publishing
  to mosquitto; with ``rss_mb_100_devices``.
* ``opcua_notifications_per_s``: data-change notifications handled by the ``opcua`` driver
  subscribed to 1,000 variables that the simulated server (its own process) changes 10 times a
  second; ``opcua_server_nominal_changes_per_s`` is what it would offer if it kept up.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgetwin.agent.tools.broker import Mosquitto, free_port, free_port_block, wait_port
from edgetwin.core.points import PointSpec
from edgetwin.drivers.opcua import OpcUaConfig, OpcUaDriver
from edgetwin.drivers.sunspec import SunSpecConfig, SunSpecDriver, parse_address, spans
from edgetwin.drivers.sunspec_models import model_def
from edgetwin.firmware_sim.meter import TcpSimulator
from edgetwin.firmware_sim.site import site_config
from edgetwin.firmware_sim.sunspec_inverter import InverterUnit
from edgetwin.twins.pointmap import BUILTIN_DIR, load_raw, merged_points
from edgetwin.wire.keys import generate

POLLS = 200


async def bench_sunspec() -> dict[str, Any]:
    addresses = [
        p["address"] for p in merged_points(load_raw(BUILTIN_DIR / "sunspec_inverter.toml"))
    ]
    points = [PointSpec(a, a) for a in addresses]
    unit = InverterUnit()
    async with TcpSimulator(unit, port=free_port()) as sim:
        cfg = SunSpecConfig(name="inv", driver="sunspec", host="127.0.0.1", port=sim.port)
        async with SunSpecDriver(cfg, points) as drv:
            needed = [m for m in drv.models if m.id == 103]
            span = sum(count for _, count in spans(needed, cfg.max_gap))
            before = sim.requests
            start = time.perf_counter()
            for _ in range(POLLS):
                await drv.read(points)
            ours_ms = (time.perf_counter() - start) / POLLS * 1000
            ours_requests = (sim.requests - before) / POLLS
            # naive: one request per point, and one more per scale factor it needs
            m103 = next(m for m in drv.models if m.id == 103)
            defn = model_def(103)
            reads: list[tuple[int, int]] = []
            for a in addresses:
                p = defn.points[parse_address(a)[1]]
                reads.append((m103.address + p.offset, p.size))
                if isinstance(p.sf, str):
                    sf = defn.points[p.sf]
                    reads.append((m103.address + sf.offset, 1))
            before = sim.requests
            start = time.perf_counter()
            for _ in range(POLLS // 10):
                for address, count in reads:
                    await drv.read_registers(address, count)
            naive_ms = (time.perf_counter() - start) / (POLLS // 10) * 1000
            naive_requests = (sim.requests - before) / (POLLS // 10)
    return {
        "sunspec_points": len(points),
        "sunspec_requests_per_poll": ours_requests,
        "sunspec_min_requests": math.ceil(span / 125),
        "sunspec_poll_ms": round(ours_ms, 2),
        "naive_requests_per_poll": naive_requests,
        "naive_poll_ms": round(naive_ms, 2),
    }


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_cpu(
    tmp: Path, mqtt_port: int, key: Path, devices: int = 100, seconds: float = 20
) -> dict[str, Any]:
    base = free_port_block(devices)
    sims = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgetwin.firmware_sim",
            "meter",
            "--port",
            str(base),
            "--count",
            str(devices),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for i in range(devices):
            wait_port(base + i, timeout=60)
        cfg = tmp / "cpu.toml"
        cfg.write_text(
            site_config(
                agent_id="bench",
                data_dir=tmp / "cpu-data",
                key_file=key,
                status_interval_s=3600,
                mqtt={"port": mqtt_port},
                meters=[(f"m{i}", base + i) for i in range(devices)],
                twins_per_meter=2,
                device={"poll_interval_s": 1.0, "timeout_s": 1.0},
                reporting={"integrity_period_s": 60, "deadband_pct": 0.5},
            )
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "edgetwin.agent", "--log-level", "warning", "run", str(cfg)]
        )
        try:
            time.sleep(8)  # start-up and first polls
            cpu0, t0 = proc_cpu_s(agent.pid), time.monotonic()
            time.sleep(seconds)
            cpu = (proc_cpu_s(agent.pid) - cpu0) / (time.monotonic() - t0) * 100
            rss = proc_rss_mb(agent.pid)
        finally:
            agent.terminate()
            agent.wait(30)
    finally:
        sims.terminate()
        sims.wait()
    return {
        "cpu_pct_100_devices": round(cpu, 1),
        "points_per_s": devices * 56,
        "rss_mb_100_devices": round(rss, 1),
    }


async def bench_opcua(variables: int = 1000, seconds: float = 10) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgetwin.firmware_sim",
            "substation",
            "--port",
            str(port),
            "--bulk",
            str(variables),
            "--update-s",
            "0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, timeout=60)
        url = f"opc.tcp://127.0.0.1:{port}/edgetwin/substation"
        points = [
            PointSpec(f"v{i}", f"nsu=urn:edgetwin:substation;s=Bulk.V{i:04d}")
            for i in range(variables)
        ]
        cfg = OpcUaConfig(
            name="b",
            driver="opcua",
            url=url,
            mode="subscribe",
            publishing_interval_ms=100,
            timeout_s=10,
        )
        async with OpcUaDriver(cfg, points) as drv:
            await drv.read(points)
            await asyncio.sleep(2)
            n0, t0 = drv.stats["notifications"], time.perf_counter()
            await asyncio.sleep(seconds)
            rate = (drv.stats["notifications"] - n0) / (time.perf_counter() - t0)
            readings = await drv.read(points)
            assert all(r.quality.is_good for r in readings)
    finally:
        server.terminate()
        server.wait()
    return {
        "opcua_variables": variables,
        "opcua_notifications_per_s": round(rate),
        "opcua_server_nominal_changes_per_s": variables * 10,
    }


async def main() -> dict[str, Any]:
    import logging

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    tmp = Path(tempfile.mkdtemp(prefix="edgetwin-southbound-"))
    key, _ = generate(tmp / "keys" / "bench.key")
    out: dict[str, Any] = {}
    out.update(await bench_sunspec())
    print(
        f"SunSpec inverter, {out['sunspec_points']} points: EdgeTwin "
        f"{out['sunspec_requests_per_poll']:.0f} request(s)/poll in {out['sunspec_poll_ms']} ms "
        f"(minimum {out['sunspec_min_requests']}); one request per point: "
        f"{out['naive_requests_per_poll']:.0f} requests in {out['naive_poll_ms']} ms "
        f"({out['naive_poll_ms'] / out['sunspec_poll_ms']:.1f}x slower)"
    )
    with Mosquitto(tmp / "broker") as broker:
        out.update(bench_cpu(tmp, broker.port, key))
    print(
        f"agent polling 100 Modbus devices x 56 points every second: "
        f"{out['cpu_pct_100_devices']}% of one core (target <= 20%), RSS "
        f"{out['rss_mb_100_devices']} MB"
    )
    out.update(await bench_opcua())
    print(
        f"OPC UA, {out['opcua_variables']} subscribed variables: "
        f"{out['opcua_notifications_per_s']:,} notifications/s handled (target >= 5,000; the "
        f"server's nominal rate {out['opcua_server_nominal_changes_per_s']:,}/s)"
    )
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
