"""Shared fixtures: a real mosquitto broker, keys, simulated meters and config files.

Everything binds to 127.0.0.1 on free ports. Broker tests are part of the default run.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetwin.agent.tools.broker import Mosquitto, free_port, mosquitto_path
from edgetwin.firmware_sim.meter import MeterSimulator
from edgetwin.firmware_sim.site import meter_mrid, site_config
from edgetwin.wire.keys import generate, load_private, load_trust_dir

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

METER_MRID = meter_mrid(0)  # the twin on the first device
OTHER_MRID = meter_mrid(1)  # the twin on the second device


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if mosquitto_path() is None:
        pytest.fail("mosquitto is not installed: run scripts/system-deps.sh (make test does)")
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """An agent key pair and a trust folder holding its public key under kid ``test-agent``."""
    priv, pub = generate(tmp_path / "keys" / "test-agent.key")
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(pub, trust / "test-agent.pem")
    return {"private": priv, "public": pub, "trust": trust}


@pytest.fixture
def trust(keys: dict[str, Path]):  # type: ignore[no-untyped-def]
    return load_trust_dir(keys["trust"])


@pytest.fixture
async def meter() -> AsyncIterator[MeterSimulator]:
    async with MeterSimulator(port=free_port()) as sim:
        yield sim


def config_text(
    *,
    data_dir: Path,
    key: Path,
    mqtt_port: int,
    devices: list[tuple[str, int]],
    poll_s: float = 0.2,
    deadband_pct: float | None = 0.2,
    integrity_s: float = 60,
    mqtt_extra: dict[str, object] | None = None,
) -> str:
    """A test-agent config: one meter twin per (device name, Modbus port), fast retries."""
    return site_config(
        agent_id="test-agent",
        data_dir=data_dir,
        key_file=key,
        status_interval_s=3600,
        mqtt={
            "port": mqtt_port,
            "reconnect_initial_s": 0.1,
            "reconnect_max_s": 0.5,
            **(mqtt_extra or {}),
        },
        meters=devices,
        device={
            "poll_interval_s": poll_s,
            "timeout_s": 0.3,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.4,
        },
        reporting={"integrity_period_s": integrity_s, "deadband_pct": deadband_pct},
        outbox={"commit_interval_ms": 10, "hist_after_s": 2},
    )


ROOT = Path(__file__).resolve().parents[1]


def example_config(folder: Path, meter_port: int = 5020) -> Path:
    """The shipped example config, copied to ``folder/packaging`` with the Modbus port set and a
    key generated where it points (``folder/var/example/keys``)."""
    text = (ROOT / "packaging" / "edgetwin.example.toml").read_text()
    path = folder / "packaging" / "edgetwin.example.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text.replace("port = 5020", f"port = {meter_port}"))
    generate(folder / "var" / "example" / "keys" / "substation-demo-01.key")
    return path


@pytest.fixture
def make_config(tmp_path: Path, keys: dict[str, Path]) -> Callable[..., Path]:
    def make(**kwargs: object) -> Path:
        kwargs.setdefault("data_dir", tmp_path / "data")
        kwargs.setdefault("key", keys["private"])
        path = tmp_path / "edgetwin.toml"
        path.write_text(config_text(**kwargs))  # type: ignore[arg-type]
        return path

    return make


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real pair of connected pseudo-terminals from socat: (device end, agent end)."""
    import subprocess
    import time

    if shutil.which("socat") is None:
        pytest.fail("socat is not installed: run scripts/system-deps.sh (make test does)")
    a, b = tmp_path / "ttyDEV", tmp_path / "ttyAGENT"
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while not (a.exists() and b.exists()):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("socat did not create the pty pair")
        time.sleep(0.01)
    yield str(a), str(b)
    proc.terminate()
    proc.wait()


#: the breaker the control tests operate (planner-1 may open only this one)
CONTROLLED_BREAKER = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


@pytest.fixture
def central(tmp_path: Path) -> dict[str, Any]:
    """Two central keys: scada-1 may open and close anything; planner-1 may only open."""
    scada, _ = generate(tmp_path / "central" / "scada-1.key")
    planner, _ = generate(tmp_path / "central" / "planner-1.key")
    trust = tmp_path / "central" / "trust.toml"
    trust.write_text(
        '[[keys]]\nkid = "scada-1"\npublic_key = "scada-1.pub.pem"\ntwins = ["*"]\n'
        'actions = ["open", "close"]\n\n'
        f'[[keys]]\nkid = "planner-1"\npublic_key = "planner-1.pub.pem"\ntwins = ["{CONTROLLED_BREAKER}"]\n'
        'actions = ["open"]\n'
    )
    return {"scada": load_private(scada), "planner": load_private(planner), "trust": trust}
