"""``edgetwin supervise``: container-managed twin agents, one container per asset.

A fleet file lists asset models (an image each) and assets (a model, an agent config)::

    [supervisor]
    interval_s = 5            # how often the fleet is reconciled
    healthy_timeout_s = 60    # an upgraded container must be healthy within this
    network = "host"          # the containers' network mode

    [models.sim-meter]
    image = "edgetwin:0.1.0"  # upgrade the model: change this; every asset of it follows

    [[assets]]
    name = "feeder12-meter"   # container edgetwin-<name>, volume edgetwin-<name>-state
    model = "sim-meter"
    config = "feeder12.toml"  # mounted read-only at /etc/edgetwin/edgetwin.toml
    keys = "keys"             # folder mounted read-only at /etc/edgetwin/keys
    env = { EDGETWIN_MQTT_HOST = "127.0.0.1" }

Each pass of ``reconcile``: an asset with no container gets one; a container that exited with
an error is restarted (counted); assets whose container runs another image than their model's
are upgraded **one at a time**: the old container is replaced by one of the new image on the
same state volume (the outbox survives the upgrade), and the roll continues only once the new
one reports healthy (the image's HEALTHCHECK) -- if it does not within ``healthy_timeout_s``,
that asset is rolled back to the image it ran, the roll stops and the state says why. Every
asset's state is written to ``supervise.json`` next to the fleet file.

The Docker engine is reached through the ``docker`` package (``DOCKER_HOST`` or the local
socket); containers carry the labels ``edgetwin.asset`` and ``edgetwin.model``.
"""

from __future__ import annotations

import json
import logging
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgetwin.core.errors import ConfigError, validation_problems

log = logging.getLogger(__name__)
LABEL = "edgetwin.asset"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SupervisorSettings(_Strict):
    interval_s: float = Field(5.0, gt=0)
    healthy_timeout_s: float = Field(60.0, gt=0)
    network: str = "host"


class ModelSettings(_Strict):
    image: str = Field(min_length=1)


class AssetSettings(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    model: str
    config: Path
    keys: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)


class Fleet(_Strict):
    supervisor: SupervisorSettings = SupervisorSettings()
    models: dict[str, ModelSettings]
    assets: list[AssetSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Fleet:
        names = set()
        for a in self.assets:
            if a.model not in self.models:
                raise ValueError(f"asset {a.name}: unknown model {a.model!r}")
            if a.name in names:
                raise ValueError(f"asset {a.name}: duplicate name")
            names.add(a.name)
        return self


def load_fleet(path: Path) -> Fleet:
    try:
        raw = tomllib.loads(path.read_text())
        fleet = Fleet.model_validate(raw)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError([f"{path}: {err}"]) from err
    except ValidationError as err:
        raise ConfigError(
            [
                f"{path}: {'.'.join(map(str, loc)) or '(top level)'}: {msg}"
                for loc, msg in validation_problems(err)
            ]
        ) from err
    base = path.resolve().parent
    assets = [
        a.model_copy(
            update={
                "config": a.config if a.config.is_absolute() else base / a.config,
                "keys": None
                if a.keys is None
                else a.keys
                if a.keys.is_absolute()
                else base / a.keys,
            }
        )
        for a in fleet.assets
    ]
    return fleet.model_copy(update={"assets": assets})


@dataclass
class AssetState:
    name: str
    model: str
    image: str = ""  # the image its container runs
    status: str = "missing"  # missing | running | exited | ...
    health: str = ""  # healthy | unhealthy | starting | "" (no health check)
    restarts: int = 0
    upgraded_at: float | None = None
    note: str = ""


@dataclass
class FleetState:
    assets: dict[str, AssetState] = field(default_factory=dict)
    rolling: str = ""  # the model whose upgrade is under way, if any
    halted: str = ""  # why a roll stopped

    def to_json(self) -> dict[str, Any]:
        return {
            "assets": {k: asdict(v) for k, v in self.assets.items()},
            "rolling": self.rolling,
            "halted": self.halted,
        }


class Supervisor:
    def __init__(self, fleet_path: Path, client: Any = None, sleep: Any = time.sleep) -> None:
        import docker

        self.path = fleet_path
        self.fleet = load_fleet(fleet_path)
        self.client = client or docker.from_env()
        self.sleep = sleep
        self.state = FleetState({a.name: AssetState(a.name, a.model) for a in self.fleet.assets})
        self.state_file = fleet_path.with_name("supervise.json")

    # -- the engine ----------------------------------------------------------------------
    def _container(self, name: str) -> Any:
        import docker.errors

        try:
            return self.client.containers.get(f"edgetwin-{name}")
        except docker.errors.NotFound:
            return None

    def _start(self, asset: AssetSettings, image: str) -> Any:
        volumes = {
            str(asset.config): {"bind": "/etc/edgetwin/edgetwin.toml", "mode": "ro"},
            f"edgetwin-{asset.name}-state": {"bind": "/var/lib/edgetwin", "mode": "rw"},
        }
        if asset.keys is not None:
            volumes[str(asset.keys)] = {"bind": "/etc/edgetwin/keys", "mode": "ro"}
        return self.client.containers.run(
            image,
            name=f"edgetwin-{asset.name}",
            detach=True,
            network_mode=self.fleet.supervisor.network,
            volumes=volumes,
            environment=asset.env,
            labels={LABEL: asset.name, "edgetwin.model": asset.model},
        )

    def _remove(self, container: Any) -> None:
        container.stop(timeout=30)  # SIGTERM: the agent commits its outbox and says goodbye
        container.remove()

    @staticmethod
    def _image_ref(container: Any) -> str:
        tags = container.image.tags
        return str(container.attrs["Config"]["Image"] or (tags[0] if tags else container.image.id))

    def _observe(self, asset: AssetSettings) -> Any:
        st = self.state.assets[asset.name]
        c = self._container(asset.name)
        if c is None:
            st.status, st.health, st.image = "missing", "", ""
            return None
        c.reload()
        st.status = c.status
        st.health = (c.attrs["State"].get("Health") or {}).get("Status", "")
        st.image = self._image_ref(c)
        return c

    # -- one pass ------------------------------------------------------------------------
    def reconcile(self) -> FleetState:
        """Create missing containers, restart failed ones, then roll upgrades one at a time."""
        self.fleet = load_fleet(self.path)  # an edited fleet file (a new image) takes effect
        for asset in self.fleet.assets:
            self.state.assets.setdefault(asset.name, AssetState(asset.name, asset.model))
            st = self.state.assets[asset.name]
            c = self._observe(asset)
            if c is None:
                log.info("supervise: starting %s (%s)", asset.name, self._image(asset))
                self._start(asset, self._image(asset))
            elif c.status == "exited" and c.attrs["State"]["ExitCode"] != 0:
                st.restarts += 1
                st.note = f"exited with {c.attrs['State']['ExitCode']}; restarted"
                log.warning("supervise: %s failed (exit %s): restarting", asset.name,
                            c.attrs["State"]["ExitCode"])  # fmt: skip
                c.start()
            self._observe(asset)
        self._roll()
        self._write()
        return self.state

    def _image(self, asset: AssetSettings) -> str:
        return self.fleet.models[asset.model].image

    def _roll(self) -> None:
        stale = [a for a in self.fleet.assets if self.state.assets[a.name].image not in
                 ("", self._image(a))]  # fmt: skip
        if not stale:
            self.state.rolling = self.state.halted = ""
            return
        if self.state.halted:
            return  # a failed roll waits for a person: fix the image or put the old one back
        for asset in stale:  # one at a time: each must be healthy before the next
            st = self.state.assets[asset.name]
            old, new = st.image, self._image(asset)
            self.state.rolling = asset.model
            log.info("supervise: upgrading %s: %s -> %s", asset.name, old, new)
            container = self._container(asset.name)
            if container is not None:
                self._remove(container)
            self._start(asset, new)
            if self._wait_healthy(asset):
                st.upgraded_at = time.time()
                st.note = f"upgraded from {old}"
                self._write()
                continue
            st.note = f"{new} did not become healthy; rolled back to {old}"
            log.error("supervise: %s", st.note)
            container = self._container(asset.name)
            if container is not None:
                self._remove(container)
            self._start(asset, old)
            self._observe(asset)
            self.state.halted = f"{asset.name}: {st.note}"
            break
        else:
            self.state.rolling = ""

    def _wait_healthy(self, asset: AssetSettings) -> bool:
        """Healthy by the image's HEALTHCHECK; an image without one: still running after 5 s."""
        start = time.monotonic()
        while time.monotonic() - start < self.fleet.supervisor.healthy_timeout_s:
            self._observe(asset)
            st = self.state.assets[asset.name]
            if st.status in ("exited", "dead") or st.health == "unhealthy":
                return False
            if st.status == "running" and (
                st.health == "healthy" or (st.health == "" and time.monotonic() - start > 5)
            ):
                return True
            self.sleep(0.5)
        return False

    def _write(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.to_json(), indent=2))
        tmp.replace(self.state_file)

    def run(self, stop: Any) -> None:
        """Reconcile every ``interval_s`` until ``stop.is_set()``."""
        while not stop.is_set():
            try:
                self.reconcile()
            except Exception as err:  # the engine may be restarting: keep supervising
                log.error("supervise: %s", err)
            stop.wait(self.fleet.supervisor.interval_s)


def report(state: dict[str, Any]) -> str:
    lines = [f"{'asset':<24} {'status':<9} {'health':<10} {'restarts':>8}  image / note"]
    for name, a in state["assets"].items():
        lines.append(
            f"{name:<24} {a['status']:<9} {a['health'] or '-':<10} {a['restarts']:>8}  "
            f"{a['image']}{'  ' + a['note'] if a['note'] else ''}"
        )
    if state.get("rolling"):
        lines.append(f"rolling an upgrade of model {state['rolling']}")
    if state.get("halted"):
        lines.append(f"HALTED: {state['halted']}")
    return "\n".join(lines)
