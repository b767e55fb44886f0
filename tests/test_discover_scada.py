"""``edgetwin discover dnp3`` / ``discover iec104`` against the simulated RTUs: every point is
listed with its value and quality, and the printed section, pasted into a config, runs: the
breakers and the feeder measurements are published."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.dnp3_outstation import Dnp3Station
from edgetwin.firmware_sim.iec104_station import Iec104Station
from tests.helpers import discover_into_config, until
from tests.test_end_to_end import running, subscribed


@pytest.mark.parametrize("protocol", ["dnp3", "iec104"])
async def test_discovered_rtu_runs_as_breakers_and_feeder_measurements(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto, protocol: str
) -> None:
    port = free_port()
    sim = Dnp3Station(port) if protocol == "dnp3" else Iec104Station(port)
    with sim:
        argv = [protocol, f"127.0.0.1:{port}"] + (
            ["--outstation", "10"] if protocol == "dnp3" else []
        )
        cfg, section = await discover_into_config(argv, tmp_path, keys, mosquitto.port)
        listed = [line.split()[1:3] for line in section.splitlines() if line.startswith("# ")][2:]
        if protocol == "dnp3":  # 2 breakers, 2 feeders: every point type of the outstation
            assert {kind for kind, _ in listed} == {"ai", "ao", "bi", "bo", "c", "dbi"}
            assert ["dbi", "1"] in listed and 'address = "bo:1"' in section
        else:
            assert {kind for kind, _ in listed} >= {"dp", "sp", "float", "sva", "nva", "it"}
            assert ["dp", "101"] in listed
        assert section.count('kind = "breaker"') == 2 and section.count('kind = "generic"') == 1
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg):

                def published(module: str) -> bool:
                    return any(r["topic"].startswith(f"openfmb/{module}/") for r in got.reports)

                await until(lambda: published("breakermodule"), 30, "breaker status")
                await until(lambda: published("genericmodule"), 30, "feeder measurements")
        status = [r for r in got.reports if "BreakerStatusProfile" in r["topic"]]
        assert all(r["valid"] for r in status)
        pos = status[0]["payload"]["breakerStatus"]["statusAndEventXCBR"]["Pos"]["stVal"]
        assert pos == "closed"


async def test_an_rtu_that_does_not_answer_is_a_clear_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgetwin.agent", "discover", "dnp3",
        f"127.0.0.1:{free_port()}", "--outstation", "10",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode != 0 and out == b""
    assert b"127.0.0.1" in err and b"Traceback" not in err


async def test_discovered_dlms_meter_runs_with_intervals_and_readings(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    """``discover dlms`` as the public client (no security): the clock, registers with scaler
    and unit, the profiles with capture objects and period; its section collects intervals."""
    from edgetwin.firmware_sim.dlms_meter import DlmsMeter, MeterState

    async with DlmsMeter(free_port(), state=MeterState(history_days=8), security="lls") as m:
        cfg, section = await discover_into_config(["dlms", f"127.0.0.1:{m.port}"], tmp_path,
                                                  keys, mosquitto.port)  # fmt: skip
        assert "# 1.0.32.7.0.255" in section and "-1  V" in section
        assert "# 1.0.99.1.0.255   every 900 s" in section and "3/1.0.1.8.0.255/2" in section
        assert 'load_profile = "1.0.99.1.0.255"' in section
        assert 'billing_profile = "0.0.98.1.0.255"' in section
        assert 'field = "readingMMTR.SupWh", address = "1.0.1.8.0.255"' in section
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg):

                def published(profile: str) -> bool:
                    return any(profile in r["topic"] and r["valid"] for r in got.reports)

                await until(lambda: published("MeterIntervalProfile"), 30, "interval blocks")
                await until(lambda: published("MeterBillingProfile"), 30, "billing reads")
                await until(lambda: published("MeterReadingProfile"), 30, "register readings")
    blocks = [r["payload"]["intervalBlock"] for r in got.reports if "MeterInterval" in r["topic"]]
    assert sum(len(b["intervals"]) for b in blocks) >= 7 * 96  # backfill_days default: 7


@pytest.mark.parametrize("extra", [[], ["--password-file", "/nonexistent"]])
async def test_a_dlms_meter_that_does_not_answer_is_a_clear_error(extra: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgetwin.agent", "discover", "dlms", f"127.0.0.1:{free_port()}",
        *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode != 0 and out == b""
    assert b"Traceback" not in err and len(err.decode().strip().splitlines()) == 1
    assert (b"/nonexistent: No such file" if extra else b"127.0.0.1") in err
