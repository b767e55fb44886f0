"""Breakers as real RTUs and IEDs report them, end to end: a double-point position and a separate
command point over DNP3, IEC 60870-5-104, OPC UA (Position 0-3 and a Command node) and Modbus (a
command register), operated by a signed command through the agent, confirmed when the position
arrives, every change of position published in order, and the outstation's own refusal carried
in the result."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgetwin.agent.runtime.config import load_config
from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.agent.tools.commission import commission
from edgetwin.firmware_sim.breaker import BreakerSimulator
from edgetwin.firmware_sim.dnp3_outstation import Dnp3Station
from edgetwin.firmware_sim.iec104_station import Iec104Station
from edgetwin.firmware_sim.opcua_substation import SubstationSimulator
from tests.helpers import signed_command, until, write_config
from tests.test_end_to_end import running, subscribed

BREAKER = "5b0e2b8a-8d6f-4c55-9d4e-3f1f0c2a7e11"
STATUS = f"openfmb/breakermodule/BreakerStatusProfile/{BREAKER}"


def device(protocol: str, port: int) -> str:
    if protocol == "opcua":
        return f"""
[[devices]]
name = "rtu1"
driver = "opcua"
url = "opc.tcp://127.0.0.1:{port}/edgetwin/substation"
poll_interval_s = 0.1
timeout_s = 2
"""
    if protocol == "modbus":
        return f"""
[[devices]]
name = "rtu1"
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll_interval_s = 0.05
timeout_s = 2
"""
    if protocol == "dnp3":
        return f"""
[[devices]]
name = "rtu1"
driver = "dnp3"
host = "127.0.0.1"
port = {port}
outstation = 10
poll_interval_s = 0.1
timeout_s = 2
"""
    return f"""
[[devices]]
name = "rtu1"
driver = "iec104"
host = "127.0.0.1"
port = {port}
poll_interval_s = 0.1
timeout_s = 2
t1_s = 5
t2_s = 2
"""


POINTS = {  # (position, command) per protocol
    "dnp3": ("dbi:0", "bo:0"),
    "iec104": ("dp:100", "dc:1100"),
    "opcua": ("ns=2;s=Breaker1.Position", "ns=2;s=Breaker1.Command"),
}
ANSWER = {"dnp3": "LOCAL", "iec104": "negative confirmation"}  # a breaker in local mode


def twin(protocol: str) -> str:
    head = f'[[twins]]\nmrid = "{BREAKER}"\nkind = "breaker"\ndevice = "rtu1"\n'
    if protocol == "modbus":
        return head + 'point_map = "sim_breaker_dp"\n'
    position, command = POINTS[protocol]
    return (
        head
        + f"""points = [
  {{ field = "@DPos", address = "{position}", dtype = "uint16", kind = "state" }},
  {{ field = "@Cmd", address = "{command}", dtype = "bool", kind = "state" }},
]
"""
    )


@contextlib.asynccontextmanager
async def station(protocol: str, port: int) -> AsyncIterator[Any]:
    if protocol == "opcua":
        async with SubstationSimulator(port=port, double_point=True) as sub:
            yield sub
    elif protocol == "modbus":
        async with BreakerSimulator(port=port, travel_s=0.3) as sim:
            yield sim
    else:
        with Dnp3Station(port, travel_s=0.3) if protocol == "dnp3" else Iec104Station(port) as sim:
            yield sim


def positions(reports: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in reports:
        pos = r["payload"]["breakerStatus"]["statusAndEventXCBR"].get("Pos")
        if pos is not None:
            out.append(pos["stVal"])
    return out


@pytest.mark.parametrize("protocol", ["dnp3", "iec104", "opcua", "modbus"])
async def test_signed_open_of_a_double_point_breaker_and_a_local_mode_refusal(
    tmp_path: Path,
    keys: dict[str, Path],
    central: dict[str, Any],
    mosquitto: Mosquitto,
    protocol: str,
) -> None:
    port = free_port()
    async with station(protocol, port) as sim:
        cfg = write_config(
            tmp_path,
            keys,
            mosquitto.port,
            f"""
[control]
trust_file = "{central["trust"]}"
operate_timeout_s = 10
"""
            + device(protocol, port)
            + twin(protocol),
        )
        assert (await commission(load_config(cfg), BREAKER)).ok
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg) as agent:
                await until(lambda: agent._listener is not None
                            and agent._listener.subscribed.is_set(), 30)  # fmt: skip
                await until(lambda: "closed" in positions(got.on(STATUS)), 30, "closed published")

                def command(action: str) -> Any:
                    return signed_command(mosquitto.url, keys["trust"], central["scada"],
                                          kind="breaker", mrid=BREAKER, action=action)  # fmt: skip

                result = await command("open")
                assert result is not None
                assert (result["result"], result["readback"]) == ("executed", {"DPos": 1})
                await until(lambda: positions(got.on(STATUS))[-1:] == ["open"], 30, "open")
                seen = positions(got.on(STATUS))
                # every change kept, in order: closed, then the travel, then open
                changes = [p for i, p in enumerate(seen) if i == 0 or seen[i - 1] != p]
                assert changes[-3:] == ["closed", "transient", "open"]

                if protocol not in ANSWER:
                    return
                sim.local_mode(10, 0) if protocol == "dnp3" else sim.local_mode(0)
                refused = await command("close")
                assert refused is not None
                assert refused["result"] == "failed"
                assert refused["reason"] == "refused_by_device"
                assert refused["answer"] == ANSWER[protocol]
