"""The IEC 62056-21 mode C driver against a simulated meter on a real serial pty pair (socat):
the readout with its baud-rate change, OBIS codes with and without the medium prefix, a code the
meter does not have, a value that is not a number, a corrupt block check character and a meter
that does not answer; hostile data blocks parse or are ignored, never crash."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgetwin.agent.runtime.config import load_config
from edgetwin.core.errors import DeviceUnavailable
from edgetwin.core.points import PointSpec
from edgetwin.drivers.iec62056_21 import (
    Iec6205621Config,
    Iec6205621Driver,
    bcc,
    check_obis,
    parse_data_block,
)
from edgetwin.firmware_sim.iec62056_21_meter import Iec6205621Meter
from edgetwin.wire.keys import generate

POINTS = [PointSpec("kwh", "1.8.0"), PointSpec("volts", "1-0:32.7.0"), PointSpec("amps", "31.7.0"),
          PointSpec("missing", "3.8.0"), PointSpec("clock", "0.9.1")]  # fmt: skip


def config(port: str, **kw: object) -> Iec6205621Config:
    settings: dict[str, object] = {"timeout_s": 2.0, **kw}
    return Iec6205621Config(name="probe", driver="iec62056_21", serial_port=port,
                            **settings)  # type: ignore[arg-type]  # fmt: skip


async def test_a_readout_gives_the_meters_registers(serial_pair: tuple[str, str]) -> None:
    device_end, agent_end = serial_pair
    with Iec6205621Meter(device_end) as meter:
        driver = Iec6205621Driver(config(agent_end), POINTS)
        await driver.connect()
        try:
            first = {r.point: r for r in await driver.read(POINTS)}
            second = {r.point: r for r in await driver.read(POINTS)}
        finally:
            await driver.close()
    assert driver.identification == "EDG5ETWIN21" and meter.readouts == 2
    assert first["kwh"].value == pytest.approx(1234.692) and first["kwh"].quality.is_good
    assert second["kwh"].value == pytest.approx(first["kwh"].value + 0.125)  # it advanced
    assert first["volts"].value == 230.1 and first["amps"].value == 12.34  # prefix optional
    assert first["missing"].value is None and first["missing"].quality.detail == {"badReference"}
    assert first["clock"].value is None and first["clock"].quality.detail == {"badReference"}


@pytest.mark.parametrize("fault", ["bad_bcc", "silent"])
async def test_a_corrupt_or_silent_meter_is_unavailable(
    serial_pair: tuple[str, str], fault: str
) -> None:
    device_end, agent_end = serial_pair
    with Iec6205621Meter(device_end) as meter:
        meter.fault = fault
        driver = Iec6205621Driver(config(agent_end, timeout_s=0.5), POINTS)
        await driver.connect()
        try:
            with pytest.raises(DeviceUnavailable):
                await driver.read(POINTS)
            meter.fault = None
            assert {r.point: r for r in await driver.read(POINTS)}["kwh"].quality.is_good
        finally:
            await driver.close()
    assert driver.stats["bcc_errors"] == (1 if fault == "bad_bcc" else 0)


def test_block_check_character_and_codes() -> None:
    assert bcc(b"1.8.0(1*kWh)\r\n!\r\n\x03") == bcc(b"1.8.0(1*kWh)\r\n!\r\n\x03")
    assert bcc(b"\x01\x02") == 0x03
    with pytest.raises(ValueError, match="OBIS code"):
        check_obis("1.8.0; DROP")
    assert parse_data_block("1.6.0(0012.34*kW)(24-11-30 14:15)\r\n!\r\n") == {
        "1.6.0": ("0012.34", "kW")
    }


@given(st.text(max_size=400))
def test_any_data_block_parses_without_crashing(text: str) -> None:
    for code, (value, unit) in parse_data_block(text).items():
        assert "(" not in code and ")" not in value and len(value) <= 128
        assert len(code) <= 32 and ")" not in unit


async def test_discovery_prints_the_readout_and_a_section_that_loads(
    serial_pair: tuple[str, str], tmp_path: Path
) -> None:
    device_end, agent_end = serial_pair
    with Iec6205621Meter(device_end):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgetwin.agent", "discover", "iec62056-21", agent_end,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    section = out.decode()
    assert "# meter EDG5ETWIN21: 6 data sets" in section and "0.9.1" in section
    assert 'address = "1.8.0", units = "kWh", kind = "counter"' in section
    assert 'address = "0.9.1"' not in section  # a time is listed, not made a point
    cfg = tmp_path / "c.toml"
    key, _ = generate(tmp_path / "k" / "a.key")
    cfg.write_text(f'agent_id = "a"\ndata_dir = "{tmp_path}/d"\n[signing]\nkey_file = "{key}"\n'
                   f'key_id = "a"\n' + section)  # fmt: skip
    twins = load_config(cfg).twins
    assert [len(t.bound_points()) for t in twins] == [5]
