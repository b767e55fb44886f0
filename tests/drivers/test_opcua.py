"""The OPC UA driver against the simulated substation (a real asyncua server on loopback)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgetwin.agent.runtime.running import RunningDevice
from edgetwin.agent.tools.broker import free_port
from edgetwin.core.clock import ManualClock
from edgetwin.core.errors import DeviceError
from edgetwin.core.models import Validity
from edgetwin.core.points import PointSpec
from edgetwin.drivers.opcua import OpcUaConfig, OpcUaDriver
from edgetwin.firmware_sim.opcua_substation import NAMESPACE, SubstationSimulator
from tests.agent.test_running import Sink
from tests.helpers import until

logging.getLogger("asyncua").setLevel(logging.CRITICAL)

W = PointSpec("w", f"nsu={NAMESPACE};s=Feeder1.W")
POSITION = PointSpec("pos", "ns=2;s=Breaker1.Position")
TAP = PointSpec("tap", f"nsu={NAMESPACE};s=Transformer1.TapPosition")
MISSING = PointSpec("missing", "ns=2;s=Feeder9.W")


def cfg(url: str, **kw: Any) -> OpcUaConfig:
    settings: dict[str, Any] = {
        "timeout_s": 2.0,
        "poll_interval_s": 1.0,
        "backoff_initial_s": 2.0,
        "backoff_max_s": 2.0,
        "publishing_interval_ms": 50,
        **kw,
    }
    return OpcUaConfig(name="sub", driver="opcua", url=url, **settings)


@pytest.fixture
async def plain() -> AsyncIterator[SubstationSimulator]:
    async with SubstationSimulator(port=free_port()) as sim:
        yield sim


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_values_and_qualities(plain: SubstationSimulator, mode: str) -> None:
    points = [W, POSITION, TAP, MISSING]
    async with OpcUaDriver(cfg(plain.url, mode=mode), points) as drv:
        await asyncio.sleep(0.3)  # let values move and (subscribe) notifications arrive
        got = {r.point: r for r in await drv.read(points)}
        assert got["w"].value == pytest.approx(await plain.read("Feeder1.W"), rel=0.05)
        assert got["pos"].value is True and got["tap"].value == 0
        assert got["missing"].value is None
        assert got["missing"].quality.validity is Validity.INVALID
        assert "badReference" in got["missing"].quality.detail


async def test_subscription_follows_changes_without_polling_the_server(
    plain: SubstationSimulator,
) -> None:
    async with OpcUaDriver(cfg(plain.url, mode="subscribe"), [W]) as drv:
        await drv.read([W])
        requests = drv.stats["requests"]
        await asyncio.sleep(0.3)
        first = (await drv.read([W]))[0].value
        await until(lambda: plain.values["Feeder1.W"] != first)
        await asyncio.sleep(0.2)
        (latest,) = await drv.read([W])
        assert latest.value == pytest.approx(plain.values["Feeder1.W"], rel=0.05)
        assert drv.stats["requests"] == requests  # reads come from the notifications


async def test_write_reaches_the_server(plain: SubstationSimulator) -> None:
    async with OpcUaDriver(cfg(plain.url), [POSITION, TAP]) as drv:
        await drv.write(POSITION, False)
        await drv.write(TAP, 3)
    assert await plain.read("Breaker1.Position") is False
    assert await plain.read("Transformer1.TapPosition") == 3


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[tuple[SubstationSimulator, Path]]:
    async with SubstationSimulator(port=free_port(), secure=True, cert_dir=tmp_path / "srv") as sim:
        trust = tmp_path / "trust"
        trust.mkdir()
        shutil.copy(sim.server_cert, trust / "substation.der")
        yield sim, tmp_path


def secure_cfg(sim: SubstationSimulator, folder: Path, **kw: Any) -> OpcUaConfig:
    settings: dict[str, Any] = {
        "security": "sign_and_encrypt",
        "certificate": folder / "agent" / "cert.der",
        "private_key": folder / "agent" / "key.pem",
        "trust_dir": folder / "trust",
        "username": "edgetwin",
        "password": "s3cret",
        **kw,
    }
    return cfg(sim.url, **settings)


@pytest.mark.parametrize("security", ["sign", "sign_and_encrypt"])
async def test_basic256sha256_with_username(
    secure: tuple[SubstationSimulator, Path], security: str
) -> None:
    sim, folder = secure
    async with OpcUaDriver(secure_cfg(sim, folder, security=security), [W]) as drv:
        (r,) = await drv.read([W])
    assert r.quality.is_good and r.value > 0  # type: ignore[operator]
    assert (folder / "agent" / "cert.der").exists()  # the agent's certificate was generated
    key_mode = (folder / "agent" / "key.pem").stat().st_mode & 0o777
    assert key_mode == 0o600, oct(key_mode)  # asyncua alone writes it 0644


@pytest.mark.parametrize(
    "problem",
    ["wrong-password", "untrusted-server", "no-security"],
)
async def test_refused_connections(secure: tuple[SubstationSimulator, Path], problem: str) -> None:
    sim, folder = secure
    if problem == "wrong-password":
        config = secure_cfg(sim, folder, password="guess")
    elif problem == "untrusted-server":
        other = folder / "other"  # trusts some other server's certificate, not this one
        async with SubstationSimulator(port=free_port(), secure=True, cert_dir=other / "srv") as o:
            (other / "trust").mkdir()
            shutil.copy(o.server_cert, other / "trust" / "other.der")
        config = secure_cfg(sim, folder, trust_dir=other / "trust")
    else:
        config = cfg(sim.url)  # the server offers no unsecured endpoint
    with pytest.raises(DeviceError):
        await OpcUaDriver(config, [W]).connect()


async def test_an_empty_trust_folder_is_a_clear_refusal(
    secure: tuple[SubstationSimulator, Path],
) -> None:
    sim, folder = secure
    (folder / "empty").mkdir()
    with pytest.raises(DeviceError, match="no trusted server certificate"):
        await OpcUaDriver(secure_cfg(sim, folder, trust_dir=folder / "empty"), [W]).connect()


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_server_restart_heals_and_node_ids_are_resolved_again(
    plain: SubstationSimulator, mode: str
) -> None:
    clock, sink = ManualClock(), Sink()
    config = cfg(plain.url, mode=mode)
    dev = RunningDevice(config, OpcUaDriver(config, [W]), [W], sink, clock)
    task = asyncio.create_task(dev.run())
    await until(lambda: dev.stats.polls == 1)
    plain.extra_namespaces = ("urn:another:vendor",)  # our namespace moves from ns=2 to ns=3
    await plain.restart(down_s=0.2)
    assert plain.ns == 3
    for _ in range(20):
        clock.advance(1.0)
        await asyncio.sleep(0.05)
        if dev.stats.failures >= 1 and dev.stats.available:
            break
    await until(lambda: dev.stats.failures >= 1 and dev.stats.available, what="recovery")
    polls = dev.stats.polls
    clock.advance(1.0)
    await until(lambda: dev.stats.polls > polls)
    last = sink.of("sub")[-1][1][0]
    assert last.quality.is_good and last.value > 0  # type: ignore[operator]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("fault", ["silent", "slow"])
async def test_a_server_that_stops_answering_or_answers_slowly(
    plain: SubstationSimulator, fault: str
) -> None:
    from edgetwin.firmware_sim.proxy import FaultProxy

    async with FaultProxy(port=free_port(), target_port=plain.port) as proxy:
        url = plain.url.replace(str(plain.port), str(proxy.port))
        async with OpcUaDriver(cfg(url, timeout_s=0.5), [W]) as drv:
            assert (await drv.read([W]))[0].quality.is_good
            proxy.mode = "silent" if fault == "silent" else ("slow", 1.0)
            with pytest.raises(DeviceError):
                await drv.read([W])
        proxy.mode = "pass"
        async with OpcUaDriver(cfg(url, timeout_s=0.5), [W]) as drv:  # the runtime reconnects
            assert (await drv.read([W]))[0].quality.is_good


async def test_dropped_connections_are_noticed(plain: SubstationSimulator) -> None:
    from edgetwin.firmware_sim.proxy import FaultProxy

    async with FaultProxy(port=free_port(), target_port=plain.port) as proxy:
        url = plain.url.replace(str(plain.port), str(proxy.port))
        drv = OpcUaDriver(cfg(url, timeout_s=0.5), [W])
        await drv.connect()
        proxy.drop()
        await asyncio.sleep(0.2)
        with pytest.raises(DeviceError):
            await drv.read([W])
        await drv.close()


async def test_a_steady_opc_ua_value_stays_good_and_the_first_report_is_not_invalid(
    tmp_path: Path,
    keys: dict[str, Path],
    mosquitto,  # type: ignore[no-untyped-def]
) -> None:
    """Servers move SourceTimestamp only when a value changes: a closed breaker read every
    0.1 s must not turn questionable/oldData after 3 polls (it read invalid before). And the
    first connect at agent start must not time out into an all-invalid first message."""
    from edgetwin.agent.tools.broker import Mosquitto  # noqa: F401  (the session broker fixture's type)
    from tests.helpers import opcua_breaker, until, write_config
    from tests.test_end_to_end import running, subscribed

    mrid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    async with SubstationSimulator(port=free_port()) as sub:
        cfg = write_config(tmp_path, keys, mosquitto.port, opcua_breaker(sub.url, mrid, 0.1))
        topic = f"openfmb/breakermodule/BreakerStatusProfile/{mrid}"
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg) as agent:
                await until(lambda: agent.devices[0].stats.polls >= 10, 30, "10 polls")
                pos = agent.config.twins[0].state().points["@Pos"]
                await until(lambda: len(got.on(topic)) >= 1, 30, "the first status message")
        assert pos.value is True and pos.quality.is_good, pos.quality
        assert agent.devices[0].stats.failures == 0  # the first connect did not time out
        first = got.on(topic)[0]["payload"]["breakerStatus"]["statusAndEventXCBR"]["Pos"]
        assert first["q"]["validity"] == "good" and first["stVal"] == "closed", first
