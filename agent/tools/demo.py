"""``edgetwin demo``: the whole spine on an embedded default, with nothing to configure.

Starts, all on loopback: the simulated meter (``firmware_sim``), a broker (mosquitto when it is
installed, else the embedded Python broker ``agent.tools.embedded_broker``; ``--broker embedded``
forces that one, ``--broker mqtt://HOST:PORT`` uses a running broker), the agent
with a generated config and key, and a central-side subscriber that verifies every message and
prints a live line per message. ``--duration`` stops after that many seconds with a summary;
Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edgetwin.agent.runtime.app import Agent
from edgetwin.agent.runtime.config import load_config
from edgetwin.agent.tools.broker import Mosquitto, free_port, mosquitto_path
from edgetwin.central import Report, Subscription, Verifier
from edgetwin.firmware_sim.site import SIM_METER_ANALYTICS, site_config
from edgetwin.wire.keys import generate, load_trust_dir
from edgetwin.wire.mqtt import parse_url

AGENT_ID = "edgetwin-demo"


SHOWN = (
    ("PhV.phsA", "V", 1.0),
    ("A.phsA", "A", 1.0),
    ("W.net", "kW", 1000.0),
    ("PF.net", "", 1.0),
    ("Hz", "Hz", 1.0),
)


def _mag(node: Any) -> float | None:
    if not isinstance(node, dict):
        return None
    if "cVal" in node:
        return node["cVal"].get("mag")
    return node.get("mag")


def live_line(report: Report) -> str:
    """One human line for a verified (or refused) message."""
    stamp = time.strftime("%H:%M:%S")
    if not report.get("valid"):
        return f"{stamp}  REFUSED {report['topic']}: {report['reason']} {report.get('detail', '')}"
    profile = report["topic"].split("/")[-2]
    flags = [k for k in ("hist", "gap", "duplicate", "late", "stale") if report.get(k)]
    text = f"{stamp}  seq {report['seq']:>6}  {profile:<20}"
    body = report.get("payload") or {}
    mmxu = body.get("meterReading", {}).get("readingMMXU", {}) if isinstance(body, dict) else {}
    mmtr = body.get("meterReading", {}).get("readingMMTR", {}) if isinstance(body, dict) else {}
    if mmxu or mmtr:
        parts = []
        for path, unit, div in SHOWN:
            node: Any = mmxu
            for key in path.split("."):
                node = node.get(key, {}) if isinstance(node, dict) else {}
            mag = _mag(node)
            if mag is not None:
                parts.append(f"{path}={mag / div:.2f}{unit}")
        if "SupWh" in mmtr and "actVal" in mmtr["SupWh"]:
            parts.append(f"SupWh={mmtr['SupWh']['actVal']}")
        fields = sum(len(v) if isinstance(v, dict) else 1 for v in mmxu.values()) + len(mmtr)
        text += f"  {fields:>2} fields  " + "  ".join(parts)
    analytics = body.get("meterAnalytics", {}) if isinstance(body, dict) else {}
    for name, node in analytics.items():  # rule outputs: loading, demand, derived points
        mag = _mag(node)
        if mag is not None:
            text += f"  {name}={mag:.2f}"
    event = body.get("meterEvent", {}) if isinstance(body, dict) else {}
    for kind, detail in event.items():  # an alarm, a demand interval, a settlement read
        if kind == "alarm":
            text += f"  ALARM {detail.get('name')} {detail.get('state')} ({detail.get('priority')})"
        elif kind == "demand":
            text += f"  demand {detail.get('kW')} kW (peak {detail.get('peakKW')} kW)"
        else:
            text += f"  {kind}"
    text += "  verified" + (f" [{', '.join(flags)}]" if flags else "")
    return text


def run_demo(
    *, duration: float | None = None, broker: str | None = None, data_dir: str | None = None
) -> int:
    logging.getLogger("edgetwin").setLevel(logging.WARNING)
    tmp = None
    if data_dir is None:
        tmp = tempfile.mkdtemp(prefix="edgetwin-demo-")
        data_dir = tmp
    try:
        data = Path(data_dir).resolve()
        return asyncio.run(_demo(data, _prepare_keys(data), broker, duration))
    except KeyboardInterrupt:
        return 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _prepare_keys(data: Path) -> Path:
    """The agent's key (kept across runs in ``data``) and the central side's trust folder."""
    data.mkdir(parents=True, exist_ok=True)
    key = data / "keys" / f"{AGENT_ID}.key"
    if not key.exists():
        generate(key)
    trust = data / "trust"
    trust.mkdir(exist_ok=True)
    shutil.copy(key.with_name(f"{AGENT_ID}.pub.pem"), trust / f"{AGENT_ID}.pem")
    return trust


async def _demo(data: Path, trust: Path, broker_url: str | None, duration: float | None) -> int:
    from edgetwin.firmware_sim.meter import MeterSimulator

    async with contextlib.AsyncExitStack() as stack:
        if broker_url in (None, "embedded"):
            if broker_url is None and mosquitto_path():
                mosq = Mosquitto(data / "broker").start()
                stack.callback(mosq.stop)
                broker_url, kind = mosq.url, "mosquitto"
            else:
                from edgetwin.agent.tools.embedded_broker import EmbeddedBroker

                emb = EmbeddedBroker(port=free_port())
                await emb.start()
                stack.push_async_callback(emb.stop)
                broker_url, kind = emb.url, "embedded Python broker"
        else:
            kind = "given broker"
        host, mqtt_port, _ = parse_url(broker_url)
        meter_port = free_port()
        http_port = free_port()
        sim = MeterSimulator(port=meter_port)
        await stack.enter_async_context(sim)
        cfg_path = data / "edgetwin.toml"
        cfg_path.write_text(
            "# Generated by `edgetwin demo`.\n"
            + site_config(
                agent_id=AGENT_ID,
                data_dir=".",
                key_file=f"keys/{AGENT_ID}.key",
                status_interval_s=10,
                mqtt={"host": host, "port": mqtt_port},
                meters=[("meter1", meter_port)],
                device={"poll_interval_s": 1.0, "timeout_s": 0.5},
                reporting={"integrity_period_s": 30, "deadband_pct": 0.2},
                twin=SIM_METER_ANALYTICS,
                top={"http": {"port": http_port}},
            )
        )
        config = load_config(cfg_path)
        print(f"EdgeTwin demo: simulated meter on 127.0.0.1:{meter_port}, {kind} at {broker_url}")
        print(f"  config {cfg_path}, keys and outbox in {data}")
        print(f"  status page http://127.0.0.1:{http_port}/ (and /metrics, /healthz, /readyz)")
        print(f"  subscribed to openfmb/#, verifying against {trust}; Ctrl-C stops\n")

        summary: Counter[str] = Counter()
        loop = asyncio.get_running_loop()

        def on_report(report: Report) -> None:
            summary["messages"] += 1
            summary["verified" if report.get("valid") else "refused"] += 1
            for flag in ("gap", "duplicate", "hist"):
                summary[flag] += 1 if report.get(flag) else 0
            line = live_line(report)
            loop.call_soon_threadsafe(print, line)

        sub = Subscription(broker_url, Verifier(load_trust_dir(trust)), ["openfmb/#"], on_report)
        await asyncio.to_thread(sub.start)
        stack.callback(sub.stop)

        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        agent = Agent(config)
        await agent.run(stop)
        await asyncio.sleep(0.3)  # let the last acknowledged messages reach the subscriber
        st = agent.status()
        print(
            f"\nsummary: {summary['messages']} messages, {summary['verified']} verified, "
            f"{summary['refused']} refused, {summary['gap']} gaps, "
            f"{summary['duplicate']} duplicates; meter polled {st['devices']['meter1']['polls']}"
            f" times; outbox depth {st['outbox']['depth']}"
        )
        return 0 if summary["refused"] == 0 else 1
