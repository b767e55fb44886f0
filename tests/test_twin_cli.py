"""Technician commands: ``twin list|show`` on a running agent, ``commission`` against the device."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from edgetwin.agent.tools.broker import Mosquitto, free_port, wait_port
from edgetwin.firmware_sim.meter import MeterSimulator
from tests.conftest import METER_MRID, OTHER_MRID
from tests.helpers import until
from tests.test_end_to_end import running


def edgetwin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgetwin.agent", *args], capture_output=True, text=True, timeout=60
    )


async def test_twin_list_and_show_the_live_state(
    mosquitto: Mosquitto, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    async with MeterSimulator(port=free_port()) as sim:
        cfg = make_config(
            mqtt_port=mosquitto.port, devices=[("meter1", sim.port), ("meter2", free_port())]
        )
        text = cfg.read_text().replace("status_interval_s = 3600", "status_interval_s = 0.2")
        cfg.write_text(text)
        twins = tmp_path / "data" / "twins.json"
        async with running(cfg):
            await until(
                lambda: (
                    twins.exists()
                    and json.loads(twins.read_text())[METER_MRID]["points"]
                    .get("readingMMXU.Hz", {})
                    .get("value")
                    is not None
                )
            )
            listing = edgetwin("twin", "list", str(cfg))
            shown = edgetwin("twin", "show", str(cfg), METER_MRID)
    assert listing.returncode == 0, listing.stderr
    head, *rows = listing.stdout.splitlines()
    assert head.startswith("# agent running; written ")  # how fresh, and from a live agent
    lines = {line.split()[0]: line for line in rows[1:]}
    assert " yes " in lines[METER_MRID] and " NO " in lines[OTHER_MRID]  # meter2 is unreachable
    assert lines[OTHER_MRID].split()[5] == "28"  # all of its points are bad
    assert shown.returncode == 0, shown.stderr
    hz = next(line for line in shown.stdout.splitlines() if "readingMMXU.Hz" in line)
    assert "Hz" in hz and "good" in hz and 59 < float(hz.split()[1]) < 61


def test_commission_checks_the_device_and_records_the_twin(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "edgetwin.firmware_sim", "meter", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        cfg = make_config(mqtt_port=1, devices=[("meter1", port), ("meter2", free_port())])
        ok = edgetwin("commission", str(cfg), METER_MRID)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "[ok] device reachable" in ok.stdout and "[ok] values plausible" in ok.stdout
        records = json.loads((tmp_path / "data" / "commissioning.json").read_text())
        assert set(records) == {METER_MRID}
        dead = edgetwin("commission", str(cfg), OTHER_MRID)
        assert dead.returncode == 4 and "[FAIL] device reachable" in dead.stdout
        assert "NOT commissioned" in dead.stdout
        unknown = edgetwin("commission", str(cfg), "00000000-0000-4000-8000-000000000000")
        assert unknown.returncode == 2 and "no twin with mRID" in unknown.stderr
    finally:
        sim.terminate()
        sim.wait()


def test_after_the_agent_is_killed_every_reader_says_it_is_not_running(
    mosquitto: Mosquitto, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Killed, the agent leaves status, twins and alarms saying its devices were available:
    the readers must say the agent is not running and how old their files are."""
    import signal

    from tests.helpers import wait_until

    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "edgetwin.firmware_sim", "meter", "--port", str(port)],
                           stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(port)
        cfg = make_config(mqtt_port=mosquitto.port, devices=[("meter1", port)])
        cfg.write_text(
            cfg.read_text().replace("status_interval_s = 3600", "status_interval_s = 0.2")
        )
        agent = subprocess.Popen([sys.executable, "-m", "edgetwin.agent", "run", str(cfg)],
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        status = tmp_path / "data" / "status.json"
        wait_until(
            lambda: (
                status.exists() and json.loads(status.read_text())["devices"]["meter1"]["available"]
            ),
            30,
        )
        live = json.loads(edgetwin("status", str(cfg)).stdout)
        assert live["state"]["agent_running"] is True and live["devices"]["meter1"]["available"]
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    finally:
        sim.terminate()
        sim.wait(10)
    dead = edgetwin("status", str(cfg))
    report = json.loads(dead.stdout)
    assert report["state"]["agent_running"] is False and report["state"]["age_s"] >= 0
    assert report["devices"]["meter1"]["available"] is None  # not "true" from a dead agent
    assert "AGENT NOT RUNNING" in dead.stderr
    listing = edgetwin("twin", "list", str(cfg)).stdout.splitlines()
    assert listing[0].startswith("# AGENT NOT RUNNING: nothing here is live; written ")
    assert " ? " in listing[2]  # availability unknown
    alarms = edgetwin("alarms", str(cfg)).stdout
    assert alarms.startswith("# AGENT NOT RUNNING")
