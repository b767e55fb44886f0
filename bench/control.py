"""Control benchmark: ``python bench/control.py``. Prints figures, then one JSON line.

The agent runs in its own process with a simulated breaker (polled 10 times a second) and a
simulated meter (20 polls a second, Hz reported at every poll); mosquitto is the broker.

* ``command_p50_ms`` / ``command_p99_ms``: from publishing a signed command to receiving its
  verified result event, over 1,000 commands (open and close in turn), each confirmed by
  read-back on the breaker. Target: p99 <= 250 ms on loopback.
* ``forged_refused_per_s``: forged commands (valid shape, wrong key) refused per second while
  5,000 of them are published as fast as one client can; ``forged_shed_queue_full`` counts
  the ones dropped unverified because the agent's bounded command queue was full.
* ``telemetry_p99_ms_quiet`` / ``telemetry_p99_ms_flood``: meter read -> verified at a
  subscriber, before and during the flood: a flood must not starve the pipeline.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetwin.agent.northbound.mqtt import make_client
from edgetwin.agent.runtime.config import MqttConfig
from edgetwin.agent.runtime.localstate import record_commissioning
from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.central.command import ResultWaiter, build_command
from edgetwin.central.subscriber import Subscription, Verifier
from edgetwin.firmware_sim.breaker import BreakerSimulator
from edgetwin.firmware_sim.meter import MeterSimulator
from edgetwin.firmware_sim.site import site_config
from edgetwin.wire.keys import generate, load_private, load_trust_dir

BREAKER = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
COMMANDS = 1000
FORGED = 5000


def config(tmp: Path, mqtt_port: int, key: Path, trust: Path, breaker: int, meter: int) -> Path:
    head = site_config(
        agent_id="bench",
        data_dir=tmp / "data",
        key_file=key,
        mqtt={"port": mqtt_port},
        meters=[("meter1", meter)],
        status_interval_s=0.5,
        device={"poll_interval_s": 0.05, "timeout_s": 0.5},
        reporting={"integrity_period_s": 60},
    )
    path = tmp / "edgetwin.toml"
    path.write_text(
        head
        + f"""
[twins.overrides."readingMMXU.Hz"]
deadband_abs = 0

[control]
trust_file = "{trust}"
refusal_events_per_s = 5

[[devices]]
name = "breaker1"
driver = "modbus_tcp"
host = "127.0.0.1"
port = {breaker}
poll_interval_s = 0.1
timeout_s = 0.5

[[twins]]
mrid = "{BREAKER}"
kind = "switch"
device = "breaker1"
point_map = "sim_breaker"
max_operations_per_minute = 10000
"""
    )
    return path


class Telemetry:
    """Latency from the meter's read (the Hz sample's time) to verified receipt."""

    def __init__(self, url: str, trust: Path) -> None:
        self.samples: list[tuple[float, float]] = []  # (received, latency ms)
        self._sub = Subscription(
            url, Verifier(load_trust_dir(trust)), ["openfmb/metermodule/#"], self._on
        )

    def _on(self, report: dict[str, Any]) -> None:
        now = time.time()
        hz = (report.get("payload") or {}).get("meterReading", {}).get("readingMMXU", {}).get("Hz")
        if report.get("valid") and hz:
            t = hz["t"]["seconds"] + hz["t"]["nanoseconds"] / 1e9
            self.samples.append((now, (now - t) * 1000))

    def p99(self, start: float, end: float) -> float:
        window = [lat for t, lat in self.samples if start <= t <= end]
        return statistics.quantiles(window, n=100)[98] if len(window) > 10 else float("nan")

    def __enter__(self) -> Telemetry:
        self._sub.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sub.stop()


def control_counters(data: Path) -> tuple[int, int]:
    """(refused -- shed ones included --, shed unverified because the queue was full)."""
    try:
        control = json.loads((data / "status.json").read_text())["control"]
        return int(control["refused"]), int(control.get("shed", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0


async def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="edgetwin-control-"))
    agent_key, _ = generate(tmp / "keys" / "bench.key")
    (tmp / "agent-trust").mkdir()
    (tmp / "agent-trust" / "bench.pem").write_bytes((tmp / "keys" / "bench.pub.pem").read_bytes())
    central_key, _ = generate(tmp / "central" / "scada-1.key")
    trust_file = tmp / "central" / "trust.toml"
    trust_file.write_text(
        '[[keys]]\nkid = "scada-1"\npublic_key = "scada-1.pub.pem"\n'
        'twins = ["*"]\nactions = ["*"]\n'
    )
    scada = load_private(central_key)
    out: dict[str, Any] = {}
    with Mosquitto(tmp / "broker") as broker:
        async with (
            BreakerSimulator(port=free_port()) as breaker,
            MeterSimulator(port=free_port(), refresh_s=0.01) as meter,
        ):
            cfg = config(tmp, broker.port, agent_key, trust_file, breaker.port, meter.port)
            record_commissioning(tmp / "data", BREAKER, [{"check": "bench", "ok": True}])
            agent = subprocess.Popen(
                [sys.executable, "-m", "edgetwin.agent", "--log-level", "error", "run", str(cfg)]
            )
            try:
                await asyncio.sleep(3)
                out.update(await asyncio.to_thread(latency, broker.url, tmp, scada))
                out.update(await flood(broker, tmp, scada))
                out["breaker_writes"] = breaker.unit.writes
            finally:
                agent.terminate()
                await asyncio.to_thread(agent.wait, 20)
    return out


def latency(url: str, tmp: Path, key: Ed25519PrivateKey) -> dict[str, Any]:
    client = make_client(MqttConfig(port=int(url.rsplit(":", 1)[1])), "central-bench")
    client.connect("127.0.0.1", int(url.rsplit(":", 1)[1]))
    client.loop_start()
    times: list[float] = []
    results: dict[str, int] = {}
    try:
        with ResultWaiter(
            url, load_trust_dir(tmp / "agent-trust"), kind="switch", mrid=BREAKER
        ) as waiter:
            for i in range(COMMANDS):
                topic, envelope, cmd = build_command(
                    key,
                    "scada-1",
                    kind="switch",
                    mrid=BREAKER,
                    action="open" if i % 2 == 0 else "close",
                )
                start = time.perf_counter()
                client.publish(topic, envelope, qos=1)
                result = waiter.wait(cmd, 5)
                times.append((time.perf_counter() - start) * 1000)
                outcome = result["result"] if result else "no_answer"
                results[outcome] = results.get(outcome, 0) + 1
    finally:
        client.disconnect()
        client.loop_stop()
    q = statistics.quantiles(times, n=100)
    return {
        "command_p50_ms": round(q[49], 2),
        "command_p99_ms": round(q[98], 2),
        "command_results": results,
    }


async def flood(broker: Mosquitto, tmp: Path, key: Ed25519PrivateKey) -> dict[str, Any]:
    del key  # forged commands are signed by a key the agent does not trust
    forger = Ed25519PrivateKey.generate()
    messages = [
        build_command(forger, "scada-1", kind="switch", mrid=BREAKER, action="open")[:2]
        for _ in range(FORGED)
    ]
    with Telemetry(broker.url, tmp / "agent-trust") as telemetry:
        await asyncio.sleep(4)
        quiet = telemetry.p99(time.time() - 3, time.time())
        before = control_counters(tmp / "data")
        done = threading.Event()

        def send() -> None:
            client = make_client(MqttConfig(port=broker.port), "forger")
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            infos = [client.publish(t, e, qos=1) for t, e in messages]
            for info in infos:
                info.wait_for_publish(30)
            client.disconnect()
            client.loop_stop()
            done.set()

        start = time.time()
        thread = threading.Thread(target=send)
        thread.start()

        def handled() -> tuple[int, int]:
            refused, shed = control_counters(tmp / "data")
            return refused - before[0], shed - before[1]

        while sum(handled()) < FORGED and time.time() - start < 120:
            await asyncio.sleep(0.1)
        end = time.time()
        thread.join()
        total, shed = handled()
        flood_p99 = telemetry.p99(start, end)
    return {
        "forged_refused": total,
        "forged_refused_per_s": round(total / (end - start)),
        "forged_shed_queue_full": shed,
        "telemetry_p99_ms_quiet": round(quiet, 2),
        "telemetry_p99_ms_flood": round(flood_p99, 2),
    }


if __name__ == "__main__":
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    result = asyncio.run(main())
    print(
        f"command -> verified result, {COMMANDS} commands: p50 {result['command_p50_ms']} ms, "
        f"p99 {result['command_p99_ms']} ms (target p99 <= 250 ms); {result['command_results']}"
    )
    print(
        f"forged commands refused: {result['forged_refused']:,} at "
        f"{result['forged_refused_per_s']:,}/s ({result['forged_shed_queue_full']:,} shed "
        f"unverified, queue full); telemetry p99 {result['telemetry_p99_ms_quiet']} ms "
        f"quiet vs {result['telemetry_p99_ms_flood']} ms during the flood; breaker writes "
        f"{result['breaker_writes']}"
    )
    print(json.dumps(result))
