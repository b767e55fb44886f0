"""Birth and death certificates: retained, signed, paired by bdSeq, the death left as MQTT will."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.meter import MeterSimulator
from tests.conftest import METER_MRID
from tests.helpers import until
from tests.test_end_to_end import agent_process, running, subscribed

STATE = "openfmb/edgetwin/AgentState/test-agent"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own: retained state from other tests would be signed by other keys."""
    with Mosquitto(tmp_path / "broker") as b:
        yield b


def states(got) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [r for r in got.on(STATE) if r["valid"]]


async def test_birth_describes_the_agent_and_death_follows_a_clean_stop(
    broker: Mosquitto, keys: dict[str, Path], make_config: Callable[..., Path]
) -> None:
    async with MeterSimulator(port=free_port()) as sim:
        cfg = make_config(mqtt_port=broker.port, devices=[("meter1", sim.port)])
        async with running(cfg):
            with subscribed(broker.url, keys["trust"]) as late:  # after the birth: retained
                await until(lambda: states(late), what="retained birth")
        birth = states(late)[0]
        assert birth["bd"] is True and birth["payload"]["state"] == "online"
        (twin,) = birth["payload"]["twins"]
        assert twin["mRID"] == METER_MRID and twin["kind"] == "meter"
        assert twin["profiles"] == [
            {
                "name": "MeterReadingProfile",
                "topic": f"openfmb/metermodule/MeterReadingProfile/{METER_MRID}",
            }
        ]
        assert {"field": "readingMMXU.PhV.phsA", "units": "V"} in twin["points"]
        with subscribed(broker.url, keys["trust"]) as after:
            await until(lambda: states(after), what="retained death")
        death = states(after)[0]
        assert death["payload"] == {
            "state": "offline",
            "agentId": "test-agent",
            "bdSeq": birth["payload"]["bdSeq"],
        }
        assert death["seq"] == birth["seq"]  # the header's seq is the bdSeq for state messages


async def test_killed_agent_is_declared_dead_by_its_will_and_rebirth_increments(
    broker: Mosquitto, keys: dict[str, Path], make_config: Callable[..., Path], tmp_path: Path
) -> None:
    async with MeterSimulator(port=free_port()) as sim:
        cfg = make_config(mqtt_port=broker.port, devices=[("meter1", sim.port)])
        with subscribed(broker.url, keys["trust"]) as got:
            proc = await asyncio.to_thread(agent_process, cfg, tmp_path / "agent.log")
            await until(lambda: any(r["payload"]["state"] == "online" for r in states(got)))
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            await until(
                lambda: any(r["payload"]["state"] == "offline" for r in states(got)),
                what="the will",
            )
            proc = await asyncio.to_thread(agent_process, cfg, tmp_path / "agent.log")
            try:
                await until(
                    lambda: [r["payload"]["state"] for r in states(got)][-1] == "online",
                    what="rebirth",
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 15)
    seen = [(r["payload"]["state"], r["payload"]["bdSeq"]) for r in states(got)]
    first = seen[0][1]
    assert seen[:3] == [("online", first), ("offline", first), ("online", first + 1)]
