"""SIGTERM always stops ``edgetwin run`` within its bound, at high poll rates, broker up or down.

Ten simulated meters (one process) polled every 0.05 s by a real agent process, stopped again
and again at varying moments: each stop must log "stopped" and exit 0 well inside the stop
bound (10 s), with nothing left uncommitted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgetwin.agent.tools.broker import Mosquitto, free_port, free_port_block
from tests.helpers import wait_until

METERS = 10


@pytest.fixture(scope="module")
def meters() -> Iterator[int]:
    port = free_port_block(METERS)  # ten consecutive ports, all free
    sim = subprocess.Popen(
        [sys.executable, "-m", "edgetwin.firmware_sim", "meter", "--port", str(port), "--count",
         str(METERS)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert sim.stdout is not None
    wait_until(lambda: b"simulated meter" in sim.stdout.readline(), 30)  # type: ignore[union-attr]
    yield port
    sim.terminate()
    sim.wait(10)


def polls(http_port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
    except OSError:
        return 0
    return sum(
        float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("edgetwin_device_polls_total")
    )


@pytest.mark.parametrize("broker", ["up", "down"])
def test_sigterm_stops_the_agent_within_its_bound_every_time(
    meters: int,
    mosquitto: Mosquitto,
    make_config: Callable[..., Path],
    tmp_path: Path,
    broker: str,
) -> None:
    mqtt_port = mosquitto.port if broker == "up" else free_port()  # nothing listens there
    devices = [(f"meter{i}", meters + i) for i in range(METERS)]
    cfg = make_config(mqtt_port=mqtt_port, devices=devices, poll_s=0.05)
    http_port = free_port()
    cfg.write_text(cfg.read_text() + f"\n[http]\nport = {http_port}\n")
    for run in range(6):
        agent = subprocess.Popen(
            [sys.executable, "-m", "edgetwin.agent", "run", str(cfg)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # stop at a different point of the polling each time: after 20, 60, 100... polls
            wait_until(lambda: polls(http_port) >= 20 + 40 * run, 60, "polling")  # noqa: B023
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(30)  # the bound is 10 s; never SIGKILL here
        finally:
            if agent.poll() is None:
                agent.kill()
        err = agent.stderr.read() if agent.stderr else ""
        assert code == 0, f"run {run}: exit {code}\n{err[-3000:]}"
        assert "stopped" in err, err[-3000:]
        status = json.loads((tmp_path / "data" / "status.json").read_text())
        assert status["outbox"]["pending"] == 0, status["outbox"]  # everything read committed
