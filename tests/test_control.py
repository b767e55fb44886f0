"""Signed control end to end: a simulated breaker opened and closed by signed commands over
mosquitto, and every kind of bad command refused with its reason and nothing written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetwin.agent.operations.metrics import render
from edgetwin.agent.runtime.config import load_config
from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.agent.tools.commission import commission
from edgetwin.central.command import ResultWaiter, build_command, publish
from edgetwin.firmware_sim.breaker import BreakerSimulator
from edgetwin.wire.keys import load_trust_dir
from tests.helpers import opcua_breaker, signed_command, until, write_config
from tests.test_end_to_end import running, subscribed

BREAKER = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
OTHER = "11111111-2222-4333-8444-555555555555"
STATUS = f"openfmb/switchmodule/SwitchStatusProfile/{BREAKER}"


def breaker_config(
    tmp_path: Path,
    keys: dict[str, Path],
    central: dict[str, Any],
    mqtt_port: int,
    port: int,
    refusal_rate: float = 100,
) -> Path:
    return write_config(
        tmp_path,
        keys,
        mqtt_port,
        f"""
[control]
trust_file = "{central["trust"]}"
max_age_s = 30
refusal_events_per_s = {refusal_rate}

[[devices]]
name = "breaker1"
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll_interval_s = 0.1
timeout_s = 0.5

[[twins]]
mrid = "{BREAKER}"
kind = "switch"
name = "Feeder 12 breaker"
device = "breaker1"
point_map = "sim_breaker"
max_operations_per_minute = 100

[[twins.interlocks]]
action = "close"
field = "@Fault"
equals = true
reason = "protection fault present"
""",
        reporting={"integrity_period_s": 60},
    )


@pytest.fixture
async def site(
    tmp_path: Path, keys: dict[str, Path], central: dict[str, Any], mosquitto: Mosquitto
) -> AsyncIterator[dict[str, Any]]:
    async with BreakerSimulator(port=free_port(), closed=True) as sim:
        cfg = breaker_config(tmp_path, keys, central, mosquitto.port, sim.port)
        async with running(cfg) as agent:
            await until(
                lambda: (
                    agent.control is not None
                    and agent._listener is not None
                    and agent._listener.subscribed.is_set()
                )
            )
            yield {
                "sim": sim,
                "cfg": cfg,
                "agent": agent,
                "url": mosquitto.url,
                "trust": load_trust_dir(keys["trust"]),
            }


async def send(
    site: dict[str, Any], topic: str, envelope: bytes, command_mrid: str
) -> dict[str, Any]:
    def roundtrip() -> dict[str, Any] | None:
        with ResultWaiter(site["url"], site["trust"], kind="switch", mrid=BREAKER) as waiter:
            publish(site["url"], topic, envelope)
            return waiter.wait(command_mrid, 10, envelope)

    result = await asyncio.to_thread(roundtrip)
    assert result is not None, "no result event"
    return result


async def command(
    site: dict[str, Any], key: Ed25519PrivateKey, kid: str, action: str, **kw: Any
) -> dict[str, Any]:
    topic, envelope, cmd = build_command(key, kid, kind="switch", mrid=BREAKER, action=action, **kw)
    return await send(site, topic, envelope, cmd)


async def test_open_and_close_by_signed_command(
    site: dict[str, Any], central: dict[str, Any], keys: dict[str, Path]
) -> None:
    sim, agent = site["sim"], site["agent"]
    refused = await command(site, central["scada"], "scada-1", "open")
    assert refused["result"] == "refused" and refused["reason"] == "not_commissioned"
    assert sim.unit.writes == 0
    assert (await commission(load_config(site["cfg"]), BREAKER)).ok

    def positions(got) -> list[str]:  # type: ignore[no-untyped-def]
        xswi = [
            r["payload"]["switchStatus"]["switchStatusXSWI"] for r in got.on(STATUS) if r["valid"]
        ]
        return [x["Pos"]["stVal"] for x in xswi if "Pos" in x]  # messages carry what changed

    with subscribed(site["url"], keys["trust"]) as got:
        opened = await command(site, central["scada"], "scada-1", "open")
        assert opened["result"] == "executed" and opened["readback"] == {"Pos": False}
        assert sim.unit.closed is False and sim.unit.writes == 1
        await until(lambda: positions(got)[-1:] == ["open"])
        closed = await command(site, central["scada"], "scada-1", "close")
        assert closed["result"] == "executed" and sim.unit.closed is True
        await until(lambda: positions(got)[-1:] == ["closed"])
    assert agent.status()["control"]["executed"] == 2


async def test_bad_commands_are_refused_and_write_nothing(
    site: dict[str, Any], central: dict[str, Any]
) -> None:
    sim = site["sim"]
    assert (await commission(load_config(site["cfg"]), BREAKER)).ok
    ok_topic, ok_envelope, ok_cmd = build_command(
        central["scada"], "scada-1", kind="switch", mrid=BREAKER, action="open"
    )
    assert (await send(site, ok_topic, ok_envelope, ok_cmd))["result"] == "executed"
    writes = sim.unit.writes
    now_ms = int(time.time() * 1000)
    cases = {
        "bad_signature": dict(key=Ed25519PrivateKey.generate(), kid="scada-1", action="close"),
        "unknown_key": dict(key=Ed25519PrivateKey.generate(), kid="intruder", action="close"),
        "unauthorized": dict(key=central["planner"], kid="planner-1", action="close"),
        "expired": dict(
            key=central["scada"], kid="scada-1", action="close", ts_ms=now_ms - 60_000, expires_s=30
        ),
        "topic_mismatch": dict(
            key=central["scada"],
            kid="scada-1",
            action="close",
            signed_topic=f"openfmb/switchmodule/SwitchDiscreteControlProfile/{OTHER}",
        ),
    }
    for reason, kw in cases.items():
        result = await command(site, kw.pop("key"), kw.pop("kid"), kw.pop("action"), **kw)
        assert (result["result"], result["reason"]) == ("refused", reason), result
    replay = await send(site, ok_topic, ok_envelope, ok_cmd)  # the very same signed command
    assert (replay["result"], replay["reason"]) == ("refused", "replayed")

    sim.unit.fault_flag = True  # protection fault: closing is interlocked
    twin = site["agent"].config.twins[0]
    await until(
        lambda: (
            twin.state().points.get("@Fault") is not None
            and twin.state().points["@Fault"].value is True
        )
    )
    interlocked = await command(site, central["scada"], "scada-1", "close")
    assert (interlocked["result"], interlocked["reason"]) == ("refused", "interlock")
    assert interlocked["detail"] == "protection fault present"
    assert sim.unit.writes == writes and sim.unit.closed is False  # nothing reached the breaker
    refusals = site["agent"].status()["control"]["refusals"]
    assert refusals == {r: 1 for r in [*cases, "replayed", "interlock"]}


async def test_a_flood_of_forged_commands_is_refused_without_starving_telemetry(
    tmp_path: Path, keys: dict[str, Path], central: dict[str, Any], mosquitto: Mosquitto
) -> None:
    async with BreakerSimulator(port=free_port()) as sim:
        cfg = breaker_config(tmp_path, keys, central, mosquitto.port, sim.port, refusal_rate=2)
        async with running(cfg) as agent:
            await until(lambda: agent._listener is not None and agent._listener.subscribed.is_set())
            forger = Ed25519PrivateKey.generate()
            forged = [
                build_command(forger, "scada-1", kind="switch", mrid=BREAKER, action="open")[:2]
                for _ in range(300)
            ]
            polls = agent.devices[0].stats.polls

            def flood() -> None:
                from edgetwin.agent.northbound.mqtt import make_client
                from edgetwin.agent.runtime.config import MqttConfig

                client = make_client(MqttConfig(port=mosquitto.port), "forger")
                client.connect("127.0.0.1", mosquitto.port)
                client.loop_start()
                infos = [client.publish(t, e, qos=1) for t, e in forged]
                for info in infos:
                    info.wait_for_publish(10)
                client.disconnect()
                client.loop_stop()

            await asyncio.to_thread(flood)
            await until(lambda: agent.control.counters["received"] == 300)  # type: ignore[union-attr]
            await until(lambda: agent.control.counters["refused"] == 300)  # type: ignore[union-attr]
            control = agent.control.status()  # type: ignore[union-attr]
            assert control["refusals"] == {"bad_signature": 300} and control["executed"] == 0
            assert control["refusal_events_suppressed"] >= 290  # the outbox was not flooded
            metrics = render(agent.status(), 0.0).decode()  # what /metrics says of the flood
            assert "edgetwin_command_signature_failures_total 300.0" in metrics
            assert 'edgetwin_commands_refused_total{reason="bad_signature"} 300.0' in metrics
            # polling goes on through the flood (on a loaded machine the first poll may time
            # out and back off: wait for the next success rather than assume its timing)
            await until(lambda: agent.devices[0].stats.polls > polls, timeout=30)
            assert sim.unit.writes == 0


async def test_a_breaker_on_opc_ua_is_opened_by_signed_command(
    tmp_path: Path, keys: dict[str, Path], central: dict[str, Any], mosquitto: Mosquitto
) -> None:
    """The control path is the driver's: the same signed command writes an OPC UA variable."""
    from edgetwin.firmware_sim.opcua_substation import SubstationSimulator

    async with SubstationSimulator(port=free_port()) as sub:
        assert await sub.read("Breaker1.Position") is True
        cfg = write_config(
            tmp_path,
            keys,
            mosquitto.port,
            f"""
[control]
trust_file = "{central["trust"]}"
"""
            + opcua_breaker(sub.url, BREAKER),
        )
        assert (await commission(load_config(cfg), BREAKER)).ok
        async with running(cfg) as agent:
            await until(lambda: agent._listener is not None and agent._listener.subscribed.is_set())
            result = await signed_command(mosquitto.url, keys["trust"], central["scada"],
                                          kind="breaker", mrid=BREAKER, action="open")  # fmt: skip
        assert result is not None
        assert (result["result"], result["readback"]) == ("executed", {"Pos": False})
        assert await sub.read("Breaker1.Position") is False


@pytest.mark.parametrize("queue_bytes", [16 * 1024 * 1024, 64 * 1024], ids=["roomy", "tiny"])
async def test_valid_commands_get_through_a_forged_flood_and_every_one_is_answered(
    tmp_path: Path,
    keys: dict[str, Path],
    central: dict[str, Any],
    mosquitto: Mosquitto,
    queue_bytes: int,
) -> None:
    """2,000 forged commands that pass every cheap check (trusted kid, right topic, fresh ts),
    with 12 valid ones among them. With room to queue the flood every valid command executes;
    with a queue too small for it (64 KiB), commands are shed, and each valid one is answered:
    executed or ``shed`` by its kid and seq. None vanishes unanswered."""
    async with BreakerSimulator(port=free_port()) as sim:
        cfg = breaker_config(tmp_path, keys, central, mosquitto.port, sim.port, refusal_rate=2)
        cfg.write_text(cfg.read_text().replace(
            "refusal_events_per_s", f"queue_bytes = {queue_bytes}\nrefusal_events_per_s"))  # fmt: skip
        assert (await commission(load_config(cfg), BREAKER)).ok
        async with running(cfg) as agent:
            await until(lambda: agent._listener is not None and agent._listener.subscribed.is_set())
            await until(lambda: agent.devices[0].stats.polls > 0, 30, "the breaker polled")
            forger = Ed25519PrivateKey.generate()
            messages: list[tuple[str, bytes]] = []
            valid: list[tuple[str, bytes]] = []  # (command mRID, envelope)
            for i in range(2000):
                messages.append(build_command(
                    forger, "scada-1", kind="switch", mrid=BREAKER, action="open")[:2])  # fmt: skip
                if i % 166 == 100:
                    action = "close" if len(valid) % 2 else "open"
                    topic, env, cmd = build_command(  # valid long enough for any queue here
                        central["scada"],
                        "scada-1",
                        kind="switch",
                        mrid=BREAKER,
                        action=action,
                        expires_s=240,
                    )
                    messages.append((topic, env))
                    valid.append((cmd, env))

            def flood() -> list[dict[str, Any] | None]:
                from edgetwin.agent.northbound.mqtt import make_client
                from edgetwin.agent.runtime.config import MqttConfig

                with ResultWaiter(
                    mosquitto.url, site_trust(keys), kind="switch", mrid=BREAKER
                ) as w:
                    client = make_client(MqttConfig(port=mosquitto.port), "forger")
                    client.connect("127.0.0.1", mosquitto.port)
                    client.loop_start()
                    for info in [client.publish(t, e, qos=1) for t, e in messages]:
                        info.wait_for_publish(30)
                    client.disconnect()
                    client.loop_stop()
                    deadline = time.monotonic() + 60
                    return [w.wait(cmd, max(0.1, deadline - time.monotonic()), env)
                            for cmd, env in valid]  # fmt: skip

            answers = await asyncio.to_thread(flood)
            assert len(valid) == 12 and all(a is not None for a in answers), answers
            outcomes = [a["result"] if a["result"] != "refused" else a["reason"] for a in answers]  # type: ignore[index]
            control = agent.control.status()  # type: ignore[union-attr]
            if queue_bytes > 1024 * 1024:
                assert outcomes == ["executed"] * 12
                assert control["shed"] == 0
            else:
                assert set(outcomes) <= {"executed", "shed"} and control["shed"] > 0
            assert control["refusals"]["bad_signature"] + control["shed"] >= 2000 - 12
            assert sim.unit.writes == outcomes.count("executed")


def site_trust(keys: dict[str, Path]) -> Any:
    return load_trust_dir(keys["trust"])


async def test_validity_windows_and_no_lock_out_by_a_far_future_seq(
    site: dict[str, Any], central: dict[str, Any]
) -> None:
    """A command signed a day ahead, or with an expiry ten years ahead, executed today; and one
    future-dated seq locked its key out (for a day, across restarts). Now: not_yet_valid beyond
    the clock skew, no command valid longer than max_lifetime_s, and seq is a nonce."""
    sim = site["sim"]
    assert (await commission(load_config(site["cfg"]), BREAKER)).ok
    now = int(time.time() * 1000)
    ahead = await command(site, central["scada"], "scada-1", "open", ts_ms=now + 86_400_000)
    assert (ahead["result"], ahead["reason"]) == ("refused", "not_yet_valid")
    forever = await command(site, central["scada"], "scada-1", "open", ts_ms=now - 400_000,
                            expires_s=10 * 365 * 86_400)  # fmt: skip
    assert (forever["result"], forever["reason"]) == ("refused", "expired")  # capped at 300 s
    assert sim.unit.writes == 0
    far = await command(site, central["scada"], "scada-1", "open", seq=2**62)  # a central bug
    assert far["result"] == "executed"
    again = await command(site, central["scada"], "scada-1", "close")  # the usual ms seq
    assert again["result"] == "executed"  # not locked out
    replay = await command(site, central["scada"], "scada-1", "open", seq=2**62)
    assert (replay["result"], replay["reason"]) == ("refused", "replayed")
