"""Pipeline benchmark: ``python bench/pipeline.py`` (or ``make bench``). Needs mosquitto.

Measures on this machine, in one run, and prints a line per figure then one JSON line:

* ``point_updates_per_s``  readings through twin transform + report-by-exception + msgpack +
  outbox submit (28-point meter twins, values moving so ~1/3 of fields pass their deadband)
* ``signed_msgs_per_s``    live: messages submitted to the outbox while the publisher signs
  and publishes them at QoS 1 to mosquitto; time until the last PUBACK
* ``latency_p50_ms`` / ``latency_p99_ms``  from the driver's read of the simulated meter to the
  central subscriber's receipt (agent in its own process, 20 polls/s)
* ``rss_mb_10k_points``    resident memory of an agent process polling 10,080 points
  (20 simulated meters x 18 twins x 28 points, once a second; simulators in another process)
* ``backlog_drain_msgs_per_s``  100,000 messages queued while the broker was unreachable,
  then drained (signed, published, acknowledged, deleted)
* ``ceiling_paho_qos1_msgs_per_s``  paho alone publishing the same payloads at QoS 1
  (max in flight 50, paho queueing the rest) -- the transport ceiling
* ``ceiling_ed25519_signs_per_s``   Ed25519 signing alone on the same payloads

Ratios of our figures to the ceilings are printed too. Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edgetwin.agent.northbound.outbox import Outbox
from edgetwin.agent.northbound.publisher import Publisher
from edgetwin.agent.runtime.config import MqttConfig
from edgetwin.agent.runtime.pipeline import Pipeline
from edgetwin.agent.tools.broker import Mosquitto, free_port, free_port_block, wait_port
from edgetwin.central.subscriber import Subscription, Verifier
from edgetwin.core.clock import SystemClock
from edgetwin.core.models import GOOD, Reading
from edgetwin.firmware_sim.site import site_config
from edgetwin.twins.base import TwinSpec
from edgetwin.twins.meter import MeterTwin
from edgetwin.twins.pointmap import (
    BUILTIN_DIR,
    PointEntry,
    ReportingSettings,
    load_raw,
    merged_points,
)
from edgetwin.wire.envelope import Signer, pack
from edgetwin.wire.keys import generate, load_trust_dir

TOPIC = "openfmb/metermodule/MeterReadingProfile/5f0a3c2e-8d1b-4f7a-9c3e-1b2d3e4f5a6b"


def meter_twin(i: int) -> MeterTwin:
    entries = tuple(
        PointEntry.model_validate(p)
        for p in merged_points(load_raw(BUILTIN_DIR / "sim_meter.toml"))
    )
    return MeterTwin(
        TwinSpec(
            mrid=f"00000000-0000-4000-8000-{i:012d}",
            name=f"m{i}",
            kind="meter",
            device=f"d{i % 10}",
            topic_prefix="openfmb",
            points=entries,
            reporting=ReportingSettings(deadband_pct=0.5, integrity_period_s=300),
            overrides={},
        )
    )


def sample_payload() -> bytes:
    twin = meter_twin(0)
    twin.ingest(Reading(bp.spec.key, 100.0, GOOD, time.time()) for bp in twin.bound_points())
    return pack(twin.report(time.time())[0].payload)


class PointUpdates:
    """The spine's inner loop: 100 meter twins (or ``twins``), every point moving, through the
    pipeline into a real outbox. ``run(seconds)`` runs it and returns (updates, seconds)."""

    def __init__(self, twins: list[MeterTwin]) -> None:
        self.twins = twins
        self.rng = random.Random(1)
        self.values = {bp.spec.key: 100.0 for t in twins for bp in t.bound_points()}
        self.box: Outbox | None = None
        self.pipe: Pipeline | None = None

    async def open(self, tmp: Path) -> PointUpdates:
        self.box = await Outbox.open(tmp / f"pu-{time.monotonic_ns()}.db", commit_interval=0.05)
        self.pipe = Pipeline(self.twins, self.box, SystemClock())
        return self

    async def run(self, seconds: float) -> tuple[int, float]:
        assert self.pipe is not None
        by_device: dict[str, list[Reading]] = {}
        values, rng = self.values, self.rng
        updates = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            now = time.time()
            by_device.clear()
            for t in self.twins:
                for bp in t.bound_points():
                    key = bp.spec.key
                    values[key] += rng.gauss(0, 1.2)  # ~1/3 of moves pass 0.5 % of a 300 range
                    by_device.setdefault(t.spec.device, []).append(
                        Reading(key, values[key], GOOD, now)
                    )
            for device, readings in by_device.items():
                self.pipe.on_readings(device, readings, True)
            updates += sum(len(r) for r in by_device.values())
            await asyncio.sleep(0)
        return updates, time.perf_counter() - start

    async def close(self) -> None:
        if self.box is not None:
            await self.box.close()


async def bench_point_updates(tmp: Path, seconds: float = 3.0) -> float:
    """Point updates/s through 100 meter twins into a real outbox."""
    loop = await PointUpdates([meter_twin(i) for i in range(100)]).open(tmp)
    updates, elapsed = await loop.run(seconds)
    await loop.close()
    return updates / elapsed


def bench_sign_ceiling(payload: bytes, n: int = 20_000) -> float:
    signer = Signer(Ed25519PrivateKey.generate(), "bench")
    start = time.perf_counter()
    for i in range(n):
        signer.sign(payload, seq=i, ts_ms=0, topic=TOPIC, hist=False)
    return n / (time.perf_counter() - start)


def bench_paho_ceiling(port: int, payload: bytes, n: int = 50_000) -> float:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(50)
    client.max_queued_messages_set(0)
    acked = 0
    done = threading.Event()

    def on_publish(*_a: Any) -> None:
        nonlocal acked
        acked += 1
        if acked == n:
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(0.3)
    start = time.perf_counter()
    for _ in range(n):
        client.publish(TOPIC, payload + b"s" * 90, qos=1)  # + the envelope's signature bytes
    done.wait(120)
    rate = n / (time.perf_counter() - start)
    client.disconnect()
    client.loop_stop()
    return rate


async def _publisher(port: int, box: Outbox) -> Publisher:
    cfg = MqttConfig(port=port, max_inflight=50)
    return Publisher(cfg, box, Signer(Ed25519PrivateKey.generate(), "bench"), client_id="bench")


async def bench_signed_live(tmp: Path, port: int, payload: bytes, n: int = 30_000) -> float:
    box = await Outbox.open(tmp / "live.db", commit_interval=0.02)
    pub = await _publisher(port, box)
    task = asyncio.create_task(pub.run())
    while not pub.connected:
        await asyncio.sleep(0.01)
    start = time.perf_counter()
    for i in range(n):
        box.submit(TOPIC, payload)
        if i % 200 == 199:
            await asyncio.sleep(0)  # a producer yields like the pipeline does
    while pub.acked < n:
        await asyncio.sleep(0.005)
    rate = n / (time.perf_counter() - start)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await box.close()
    return rate


async def bench_backlog(tmp: Path, port: int, payload: bytes, n: int = 100_000) -> float:
    box = await Outbox.open(tmp / "backlog.db", commit_interval=0.02, max_bytes=2**31)
    for _ in range(n):
        box.submit(TOPIC, payload)
    await box.commit()  # queued while the broker was unreachable
    pub = await _publisher(port, box)
    start = time.perf_counter()
    task = asyncio.create_task(pub.run())
    while pub.acked < n:
        await asyncio.sleep(0.01)
    rate = n / (time.perf_counter() - start)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await box.commit()
    assert box.depth == 0, box.depth
    await box.close()
    return rate


def write_config(
    path: Path, mqtt_port: int, key: Path, devices: list[int], twins_per_device: int, poll: float
) -> None:
    path.write_text(
        site_config(
            agent_id="bench",
            data_dir=path.parent / "data",
            key_file=key,
            status_interval_s=3600,
            mqtt={"port": mqtt_port},
            meters=[(f"d{i}", port) for i, port in enumerate(devices)],
            twins_per_meter=twins_per_device,
            device={"poll_interval_s": poll, "timeout_s": 1.0},
            reporting={"integrity_period_s": 60},
        )
    )


def start_sims(port: int, count: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgetwin.firmware_sim",
            "meter",
            "--port",
            str(port),
            "--count",
            str(count),
        ],
        stdout=subprocess.DEVNULL,
    )
    for i in range(count):
        wait_port(port + i)
    return proc


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def bench_rss(tmp: Path, mqtt_port: int, key: Path) -> tuple[float, int]:
    n_dev, per_dev = 20, 18
    base = free_port_block(n_dev)
    sims = start_sims(base, n_dev)
    cfg = tmp / "rss" / "edgetwin.toml"
    cfg.parent.mkdir()
    write_config(cfg, mqtt_port, key, [base + i for i in range(n_dev)], per_dev, 1.0)
    agent = subprocess.Popen(
        [sys.executable, "-m", "edgetwin.agent", "--log-level", "warning", "run", str(cfg)]
    )
    try:
        time.sleep(10)
        return rss_mb(agent.pid), n_dev * per_dev * 28
    finally:
        agent.terminate()
        agent.wait(20)
        sims.terminate()
        sims.wait()


async def bench_latency(
    tmp: Path, broker_url: str, mqtt_port: int, key: Path, trust: Path
) -> tuple[float, float, int]:
    from edgetwin.firmware_sim.meter import MeterSimulator

    latencies: list[float] = []

    def on_report(report: dict[str, Any]) -> None:
        received = time.time()
        body = report.get("payload") or {}
        mmxu = body.get("meterReading", {}).get("readingMMXU", {}) if isinstance(body, dict) else {}
        hz = mmxu.get("Hz")
        if report.get("valid") and hz:
            t = hz["t"]
            latencies.append((received - (t["seconds"] + t["nanoseconds"] / 1e9)) * 1000)

    sub = Subscription(
        broker_url, Verifier(load_trust_dir(trust)), ["openfmb/metermodule/#"], on_report
    )
    await asyncio.to_thread(sub.start)
    async with MeterSimulator(port=free_port(), refresh_s=0.01) as sim:
        cfg = tmp / "lat" / "edgetwin.toml"
        cfg.parent.mkdir()
        write_config(cfg, mqtt_port, key, [sim.port], 1, 0.05)
        with cfg.open("a") as fh:  # report Hz at every poll: one latency sample per poll
            fh.write('[twins.overrides."readingMMXU.Hz"]\ndeadband_abs = 0\n')
        agent = subprocess.Popen(
            [sys.executable, "-m", "edgetwin.agent", "--log-level", "warning", "run", str(cfg)]
        )
        try:
            await asyncio.sleep(10)
        finally:
            agent.terminate()
            await asyncio.to_thread(agent.wait, 20)
    sub.stop()
    latencies = latencies[20:]  # skip the start-up
    q = statistics.quantiles(latencies, n=100)
    return q[49], q[98], len(latencies)


async def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="edgetwin-bench-"))
    payload = sample_payload()
    print(f"payload: a full 28-field MeterReadingProfile, {len(payload)} bytes of msgpack")
    key, pub = generate(tmp / "keys" / "bench.key")
    trust = tmp / "trust"
    trust.mkdir()
    (trust / "bench.pem").write_bytes(pub.read_bytes())
    results: dict[str, Any] = {}
    with Mosquitto(tmp / "broker") as broker:
        results["point_updates_per_s"] = round(await bench_point_updates(tmp))
        print(
            f"point updates/s through twin + report-by-exception: {results['point_updates_per_s']:,}"
        )
        results["ceiling_ed25519_signs_per_s"] = round(bench_sign_ceiling(payload))
        print(f"ceiling: Ed25519 signs/s alone: {results['ceiling_ed25519_signs_per_s']:,}")
        results["ceiling_paho_qos1_msgs_per_s"] = round(bench_paho_ceiling(broker.port, payload))
        print(f"ceiling: paho QoS 1 msgs/s alone: {results['ceiling_paho_qos1_msgs_per_s']:,}")
        results["signed_msgs_per_s"] = round(await bench_signed_live(tmp, broker.port, payload))
        print(f"signed QoS 1 msgs/s through the outbox: {results['signed_msgs_per_s']:,}")
        results["backlog_drain_msgs_per_s"] = round(await bench_backlog(tmp, broker.port, payload))
        print(f"backlog of 100,000 drained at msgs/s: {results['backlog_drain_msgs_per_s']:,}")
        p50, p99, n = await bench_latency(tmp, broker.url, broker.port, key, trust)
        results["latency_p50_ms"], results["latency_p99_ms"] = round(p50, 2), round(p99, 2)
        print(
            f"latency read -> verified at subscriber over {n} messages: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        rss, points = bench_rss(tmp, broker.port, key)
        results["rss_mb_10k_points"] = round(rss, 1)
        print(f"agent RSS polling {points:,} points: {rss:.1f} MB")
    ratio_pub = results["signed_msgs_per_s"] / results["ceiling_paho_qos1_msgs_per_s"]
    ratio_drain = results["backlog_drain_msgs_per_s"] / results["ceiling_paho_qos1_msgs_per_s"]
    print(
        f"ratios: signed publish / paho ceiling {ratio_pub:.2f}; backlog drain / paho ceiling "
        f"{ratio_drain:.2f}; signs needed per published msg 1 of "
        f"{results['ceiling_ed25519_signs_per_s']:,}/s available"
    )
    targets = {
        "point_updates_per_s": results["point_updates_per_s"] >= 20_000,
        "signed_msgs_per_s": results["signed_msgs_per_s"] >= 4_000,
        "rss_mb_10k_points": results["rss_mb_10k_points"] <= 80,
        "backlog_drain_msgs_per_s": results["backlog_drain_msgs_per_s"] >= 4_000,
    }
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in targets.items()))
    return results


if __name__ == "__main__":
    out = asyncio.run(main())
    print(json.dumps(out))
