"""Operations with real parts: the agent's HTTP endpoints (health, readiness, Prometheus
metrics) against a simulated meter and mosquitto; the technician's status page rendered by a
real headless Chromium (Debian's ``chromium``); systemd's notify protocol spoken to a real
datagram socket (systemd itself does not run in this container, so the test plays its part:
it listens where ``NOTIFY_SOCKET`` points, as systemd would); JSON logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.meter import MeterSimulator
from tests.helpers import meter_config, until, wait_until, write_config
from tests.test_end_to_end import running


def config(tmp_path: Path, keys: dict[str, Path], mqtt_port: int, meter_port: int) -> Path:
    return meter_config(
        tmp_path,
        keys,
        mqtt_port,
        meter_port,
        device={"poll_interval_s": 0.2, "timeout_s": 0.3, "backoff_initial_s": 0.1,
                "backoff_max_s": 0.3},
        top={"http": {"port": 0}},
    )  # fmt: skip


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, ctype, text = get(port, "/metrics")
    assert ctype.startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def aget(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    return await asyncio.to_thread(get, port, path, method)


async def test_health_readiness_and_metrics(
    mosquitto: Mosquitto, keys: dict[str, Path], tmp_path: Path
) -> None:
    async with MeterSimulator(port=free_port()) as sim:
        cfg = config(tmp_path, keys, mosquitto.port, sim.port)
        async with running(cfg) as agent:
            assert agent.http is not None
            port = agent.http.port
            code, _, body = await aget(port, "/healthz")
            assert (code, json.loads(body)) == (200, {"alive": True})

            async def ready() -> bool:
                return (await aget(port, "/readyz"))[0] == 200

            for _ in range(100):
                if await ready():
                    break
                await asyncio.sleep(0.05)
            code, _, body = await aget(port, "/readyz")
            assert (code, json.loads(body)) == (200, {"ready": True, "problems": []})
            await until(lambda: agent.publisher.acked > 0, what="a message acknowledged")  # type: ignore[union-attr]
            m = await asyncio.to_thread(metrics, port)
            assert m[("edgetwin_device_available", (("device", "meter1"),))] == 1
            assert m[("edgetwin_device_polls_total", (("device", "meter1"),))] >= 1
            assert m[("edgetwin_points_read_total", ())] >= 28
            assert m[("edgetwin_mqtt_connected", ())] == 1
            assert m[("edgetwin_acknowledged_total", ())] >= 1
            assert ("edgetwin_outbox_depth", ()) in m
            assert ("edgetwin_outbox_oldest_age_seconds", ()) in m
            assert m[("edgetwin_outbox_dropped_total", (("class", "telemetry"),))] == 0
            last = m[("edgetwin_device_last_poll_duration_seconds", (("device", "meter1"),))]
            assert 0 < last < 1
            count = m[("edgetwin_device_poll_duration_seconds_count", (("device", "meter1"),))]
            inf = m[
                (
                    "edgetwin_device_poll_duration_seconds_bucket",
                    (("device", "meter1"), ("le", "+Inf")),
                )
            ]
            assert count == inf >= 1  # every successful poll is in the histogram
            assert m[("edgetwin_device_poll_duration_seconds_sum", (("device", "meter1"),))] > 0
            # read-only: nothing but GET / HEAD; unknown paths are 404
            assert (await aget(port, "/healthz", "POST"))[0] == 405
            assert (await aget(port, "/nope"))[0] == 404

            await sim.stop()  # the meter goes away: not ready, and the metric says which device
            await until(lambda: not agent.devices[0].stats.available, what="unavailable")
            m = await asyncio.to_thread(metrics, port)
            assert m[("edgetwin_device_available", (("device", "meter1"),))] == 0
            for _ in range(150):  # 3 poll intervals, at least 5 s, without a good poll
                if not await ready():
                    break
                await asyncio.sleep(0.05)
            code, _, body = await aget(port, "/readyz")
            assert code == 503
            assert json.loads(body)["problems"] == ["device meter1: no successful poll in 5 s"]
            assert (await aget(port, "/healthz"))[0] == 200  # alive all the same


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(url: str, budget_ms: int) -> str:
    assert CHROMIUM is not None
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


async def test_status_page_shows_the_meter_and_updates_in_headless_chromium(
    mosquitto: Mosquitto, keys: dict[str, Path], tmp_path: Path
) -> None:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: run scripts/system-deps.sh (make test does)")
    async with MeterSimulator(port=free_port()) as sim:
        cfg = config(tmp_path, keys, mosquitto.port, sim.port)
        async with running(cfg) as agent:
            assert agent.http is not None
            await until(lambda: agent.devices[0].stats.polls >= 2, what="polls")
            url = f"http://127.0.0.1:{agent.http.port}/"
            dom = await asyncio.to_thread(dump_dom, url, 7000)
    # the meter's phase A voltage, as the simulator has it, with good quality
    row = re.search(r"readingMMXU\.PhV\.phsA</td><td class=\"num value\">([0-9.]+)</td>"
                    r"<td>V</td><td class=\"good\">good</td>", dom)  # fmt: skip
    assert row is not None, dom[:3000]
    assert abs(float(row.group(1)) - sim.model.nominal_v) < 5
    assert "simulated meter meter1" in dom and "meter1" in dom
    # the page refreshed itself several times while it was open (every 2 s of virtual time)
    refreshes = int(re.search(r'data-refreshes="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    assert refreshes >= 3


def test_systemd_notify_ready_watchdog_and_stopping(
    mosquitto: Mosquitto, keys: dict[str, Path], tmp_path: Path
) -> None:
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(10)
    cfg = write_config(tmp_path, keys, mosquitto.port, "", meters=[("meter1", free_port())])
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"}
    agent = subprocess.Popen([sys.executable, "-m", "edgetwin.agent", "run", str(cfg)], env=env)
    got: list[str] = []
    try:
        while sum(m == "WATCHDOG=1" for m in got) < 2:
            got.append(sock.recv(4096).decode())
        assert got[0].startswith("READY=1\nSTATUS=polling 1 devices")
        agent.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in got:
            got.append(sock.recv(4096).decode())
        assert agent.wait(15) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        sock.close()


def test_json_logs(keys: dict[str, Path], tmp_path: Path) -> None:
    cfg = write_config(tmp_path, keys, free_port(), "", meters=[("meter1", free_port())])
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetwin.agent", "--log-format", "json", "run", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, Any]] = []
    assert proc.stderr is not None
    wait_until(
        lambda: bool(lines.append(json.loads(proc.stderr.readline())) or True) and len(lines) >= 2
    )  # type: ignore[union-attr, func-returns-value]
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
