"""Containers with a real Docker engine (``make test-containers``; not in the default run):
the agent's image runs non-root with its state on a volume and its broker from the environment,
publishes verified messages and turns healthy; ``edgetwin supervise`` starts asset containers,
restarts a failed one, rolls an image upgrade one asset at a time, and rolls back an upgrade
that never becomes healthy."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgetwin.agent.operations.supervise import Supervisor
from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.meter import MeterSimulator
from edgetwin.firmware_sim.site import meter_mrid, site_config
from tests.helpers import until
from tests.test_end_to_end import subscribed

pytestmark = pytest.mark.containers
UID = 10001  # the image's edgetwin user


def agent_config(
    folder: Path, meter_port: int, http_port: int, agent_id: str = "test-agent"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "edgetwin.toml"
    path.write_text(
        site_config(
            agent_id=agent_id,
            data_dir="/var/lib/edgetwin",
            key_file="/etc/edgetwin/keys/agent.key",
            mqtt={"port": 1, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},  # env sets it
            meters=[("meter1", meter_port)],
            device={"poll_interval_s": 0.5},
            top={"http": {"port": http_port}},
        )
    )
    return path


def key_folder(keys: dict[str, Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(keys["private"], folder / "agent.key")
    os.chown(folder / "agent.key", UID, UID)  # readable by the container's user only
    os.chmod(folder / "agent.key", 0o600)
    return folder


@pytest.fixture
def cleanup(docker_client: Any) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for c in docker_client.containers.list(all=True, filters={"label": "edgetwin.asset"}):
        c.remove(force=True)
    for name in names:
        try:
            docker_client.containers.get(name).remove(force=True)
        except Exception:
            pass


def health(container: Any) -> str:
    container.reload()
    return str((container.attrs["State"].get("Health") or {}).get("Status", ""))


async def test_image_runs_the_agent_non_root_with_state_on_a_volume(
    docker_client: Any, agent_image: str, mosquitto: Mosquitto, keys: dict[str, Path],
    tmp_path: Path, cleanup: list[str],
) -> None:  # fmt: skip
    async with MeterSimulator(port=free_port()) as sim:
        http_port = free_port()
        cfg = agent_config(tmp_path / "cfg", sim.port, http_port)
        kdir = key_folder(keys, tmp_path / "keys")
        with subscribed(mosquitto.url, keys["trust"]) as got:
            container = docker_client.containers.run(
                agent_image,
                name="edgetwin-image-test",
                detach=True,
                network_mode="host",
                environment={"EDGETWIN_MQTT_PORT": str(mosquitto.port),
                             "EDGETWIN_HTTP_PORT": str(http_port)},
                volumes={str(cfg): {"bind": "/etc/edgetwin/edgetwin.toml", "mode": "ro"},
                         str(kdir): {"bind": "/etc/edgetwin/keys", "mode": "ro"},
                         "edgetwin-image-test-state": {"bind": "/var/lib/edgetwin", "mode": "rw"}},
            )  # fmt: skip
            cleanup.append("edgetwin-image-test")
            topic = f"openfmb/metermodule/MeterReadingProfile/{meter_mrid(0)}"
            await until(
                lambda: len(got.on(topic)) >= 2, timeout=60, what="messages from the container"
            )
            assert all(r["valid"] for r in got.on(topic))
            await until(lambda: health(container) == "healthy", timeout=60, what="healthy")
        top = container.top()
        user = top["Processes"][0][top["Titles"].index("UID")]
        assert user in ("10001", "edgetwin")
        container.stop(timeout=30)
        assert container.wait()["StatusCode"] == 0  # SIGTERM: a clean stop
        # the outbox is on the volume, owned by the agent's user
        probe = docker_client.containers.run(
            agent_image, entrypoint=["ls", "-n", "/var/lib/edgetwin"], remove=True,
            volumes={"edgetwin-image-test-state": {"bind": "/var/lib/edgetwin", "mode": "rw"}},
        ).decode()  # fmt: skip
        assert "outbox.db" in probe and " 10001 " in probe
        container.remove()
        docker_client.volumes.get("edgetwin-image-test-state").remove()


def fleet_file(
    folder: Path, image: str, assets: list[tuple[str, Path, Path, int]], mqtt_port: int
) -> Path:
    lines = ["[supervisor]", "interval_s = 1", "healthy_timeout_s = 60", "",
             "[models.sim-meter]", f'image = "{image}"', ""]  # fmt: skip
    for name, cfg, keys, http in assets:  # host network: each agent its own HTTP port
        env = f'{{ EDGETWIN_MQTT_PORT = "{mqtt_port}", EDGETWIN_HTTP_PORT = "{http}" }}'
        lines += ["[[assets]]", f'name = "{name}"', 'model = "sim-meter"', f'config = "{cfg}"',
                  f'keys = "{keys}"', f"env = {env}", ""]  # fmt: skip
    path = folder / "fleet.toml"
    path.write_text("\n".join(lines))
    return path


async def test_supervise_restarts_rolls_an_upgrade_and_rolls_back(
    docker_client: Any, agent_image: str, mosquitto: Mosquitto, keys: dict[str, Path],
    tmp_path: Path, cleanup: list[str],
) -> None:  # fmt: skip
    import asyncio

    async with MeterSimulator(port=free_port()) as m1, MeterSimulator(port=free_port()) as m2:
        kdir = key_folder(keys, tmp_path / "keys")
        ports = [free_port(), free_port()]
        assets = [
            (f"meter-{i}", agent_config(tmp_path / f"a{i}", sim.port, ports[i]), kdir, ports[i])
            for i, sim in enumerate((m1, m2))
        ]
        fleet = fleet_file(tmp_path, agent_image, assets, mosquitto.port)
        sup = Supervisor(fleet, client=docker_client)

        state = await asyncio.to_thread(sup.reconcile)
        assert {a.status for a in state.assets.values()} == {"running"}
        assert {a.image for a in state.assets.values()} == {agent_image}

        # a failed asset container is restarted
        docker_client.containers.get("edgetwin-meter-0").kill()  # exit 137
        state = await asyncio.to_thread(sup.reconcile)
        assert state.assets["meter-0"].restarts == 1
        assert state.assets["meter-0"].status == "running"

        # upgrade the model: every asset follows, one at a time, each healthy before the next
        docker_client.images.get(agent_image).tag("edgetwin", "test-v2")
        fleet_file(tmp_path, "edgetwin:test-v2", assets, mosquitto.port)
        state = await asyncio.to_thread(sup.reconcile)
        assert {a.image for a in state.assets.values()} == {"edgetwin:test-v2"}
        assert {a.health for a in state.assets.values()} == {"healthy"}
        second = docker_client.containers.get("edgetwin-meter-1")
        created = second.attrs["Created"]
        first_done = state.assets["meter-0"].upgraded_at
        assert first_done is not None
        assert (
            time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            >= int(first_done) - 1
        )

        # an upgrade that never turns healthy is rolled back and the roll stops
        broken = io.BytesIO(b'FROM edgetwin:test-v2\nCMD ["run", "/nonexistent.toml"]\n')
        docker_client.images.build(fileobj=broken, tag="edgetwin:test-broken", rm=True)
        fleet_file(tmp_path, "edgetwin:test-broken", assets, mosquitto.port)
        state = await asyncio.to_thread(sup.reconcile)
        assert state.halted.startswith("meter-0: edgetwin:test-broken did not become healthy")
        assert state.assets["meter-0"].image == "edgetwin:test-v2"  # rolled back
        assert state.assets["meter-1"].image == "edgetwin:test-v2"  # never touched
        await until(lambda: health(docker_client.containers.get("edgetwin-meter-0")) == "healthy",
                    timeout=60, what="the rolled-back asset healthy again")  # fmt: skip
        assert (tmp_path / "supervise.json").exists()
