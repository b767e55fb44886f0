"""Load and validate an agent configuration (one TOML file) before anything starts.

Validation is complete and offline: the file's syntax, every key's type and range, every
driver's own settings (through the driver's config model), every point map, and the cross-checks
(unique device names and mRIDs, twins referencing known devices, no two twins on one topic).
All problems are collected and raised together as one ``ConfigError`` whose lines read
``<file>: <key path>: <what was expected>``. Relative paths resolve against the config's folder.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgetwin.core import registry
from edgetwin.core.errors import ConfigError, PluginError, validation_problems
from edgetwin.core.files import read_config_text, read_small
from edgetwin.drivers.base import DeviceConfig, Host, source_timestamps
from edgetwin.edge_rules import config as rules_config
from edgetwin.edge_rules.config import FloodSettings
from edgetwin.edge_rules.interlock import Interlock, InterlockSettings
from edgetwin.edge_rules.quality import QualitySettings
from edgetwin.twins.base import Twin, TwinSpec
from edgetwin.twins.pointmap import (
    PointEntry,
    ReportingSettings,
    load_raw,
    merged_points,
    resolve_path,
)
from edgetwin.wire.keys import load_private


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TlsConfig(_Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip the broker hostname check (never in prod)")


class MqttConfig(_Strict):
    host: Host = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    max_inflight: int = Field(50, ge=1, le=1000, description="unacknowledged QoS 1 messages")
    topic_prefix: str = Field("openfmb", pattern=r"^[^#+]+$")
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)


class SigningConfig(_Strict):
    key_file: Path
    key_id: str = Field(min_length=1, max_length=128)


class OutboxConfig(_Strict):
    max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, le=2**50, description="the database on disk"
    )
    memory_bytes: int = Field(
        32 * 1024 * 1024, ge=1024 * 1024, le=2**40, description="held while the disk is full"
    )
    reserve_bytes: int = Field(
        4 * 1024 * 1024, ge=0, le=2**32, description="set aside, released when the disk fills"
    )
    commit_interval_ms: int = Field(20, ge=1, le=5000)
    hist_after_s: float = Field(5.0, ge=0, description="older than this when published: hist")


class HttpConfig(_Strict):
    """The local HTTP server: /healthz, /readyz, /metrics and the status page."""

    bind: Host = Field("127.0.0.1", description="0.0.0.0 to reach it from outside the host")
    port: int = Field(9108, ge=0, le=65535, description="0: any free port")


class MeteringConfig(_Strict):
    """Where meters push to (DLMS data notifications: last gasp, alarms), the IEC 62056-47
    wrapper over TCP (``agent.runtime.push``)."""

    push_bind: Host = Field("127.0.0.1", description="0.0.0.0 to hear meters on the network")
    push_port: int = Field(4059, ge=0, le=65535, description="0: any free port")


class TwinConfig(_Strict):
    mrid: str
    kind: str
    name: str = ""
    device: str
    point_map: str | None = None
    points: list[dict[str, Any]] = Field(default_factory=list)
    reporting: ReportingSettings = ReportingSettings()
    overrides: dict[str, ReportingSettings] = Field(default_factory=dict)
    quality: QualitySettings = QualitySettings()
    analytics: dict[str, Any] | None = None  # edge_rules.config.AnalyticsSettings
    rules: list[dict[str, Any]] = Field(default_factory=list)  # validated by each rule kind
    interlocks: list[InterlockSettings] = Field(default_factory=list)
    max_operations_per_minute: int = Field(10, ge=1, le=10_000)

    @field_validator("mrid")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be a UUID (the conducting equipment's mRID)") from None


class ControlConfig(_Strict):
    """Signed control from central systems; absent: the agent accepts no commands."""

    trust_file: Path
    max_age_s: float = Field(
        30.0, gt=0, le=86_400, description="commands without exp expire after this"
    )
    max_lifetime_s: float = Field(
        300.0, gt=0, le=86_400, description="no command is valid longer after its ts, exp or not"
    )
    max_clock_skew_s: float = Field(
        30.0, ge=0, le=3600, description="a ts further ahead of the agent's clock: not_yet_valid"
    )
    max_message_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="larger messages: oversized"
    )
    queue_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, le=1024**3, description="commands awaiting verification"
    )
    refusal_events_per_s: float = Field(5.0, gt=0, description="per twin; the rest are counted")
    operate_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a position's travel after its command point is written"
    )


class AgentFile(_Strict):
    agent_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data_dir: Path = Path("var")
    status_interval_s: float = Field(5.0, gt=0)
    mqtt: MqttConfig = MqttConfig()
    signing: SigningConfig
    outbox: OutboxConfig = OutboxConfig()
    control: ControlConfig | None = None
    http: HttpConfig | None = None
    metering: MeteringConfig | None = None
    reporting: ReportingSettings = ReportingSettings(integrity_period_s=300.0)
    alarm_flood: FloodSettings = FloodSettings()
    rules_save_interval_s: float = Field(5.0, gt=0, description="rule state saved this often")
    devices: list[dict[str, Any]] = Field(min_length=1)
    twins: list[TwinConfig] = Field(min_length=1)


@dataclass(frozen=True)
class AgentConfig:
    """A validated configuration with its plugins resolved."""

    path: Path
    agent: AgentFile
    devices: Sequence[DeviceConfig]
    driver_classes: dict[str, type]
    twins: Sequence[Twin]
    interlocks: Mapping[str, Sequence[Interlock]] = dataclasses.field(
        default_factory=dict
    )  # by mRID

    @property
    def data_dir(self) -> Path:
        return self.agent.data_dir


def _loc(parts: Sequence[int | str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _problems(file: Path, prefix: Sequence[int | str], err: ValidationError) -> list[str]:
    return [f"{file}: {_loc([*prefix, *loc])}: {msg}" for loc, msg in validation_problems(err)]


def _absolute(base: Path, path: Path | None) -> Path | None:
    if path is None or path.is_absolute():
        return path
    return (base / path).resolve()


#: Environment variables that override the file (containers: the broker and secrets come from
#: the orchestrator): variable -> key path. Values are validated like the file's.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "EDGETWIN_AGENT_ID": ("agent_id",),
    "EDGETWIN_DATA_DIR": ("data_dir",),
    "EDGETWIN_MQTT_HOST": ("mqtt", "host"),
    "EDGETWIN_MQTT_PORT": ("mqtt", "port"),
    "EDGETWIN_MQTT_USERNAME": ("mqtt", "username"),
    "EDGETWIN_MQTT_PASSWORD_FILE": ("mqtt", "password_file"),
    "EDGETWIN_SIGNING_KEY_FILE": ("signing", "key_file"),
    "EDGETWIN_SIGNING_KEY_ID": ("signing", "key_id"),
    "EDGETWIN_HTTP_BIND": ("http", "bind"),
    "EDGETWIN_HTTP_PORT": ("http", "port"),
}


def _override(raw: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Apply ``ENV_OVERRIDES`` found in ``environ`` to ``raw``; return the variables used."""
    used = []
    for var, keys in ENV_OVERRIDES.items():
        if var not in environ:
            continue
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = environ[var]
        used.append(var)
    return used


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read, validate and resolve ``path`` with the environment's overrides (``ENV_OVERRIDES``;
    ``environ`` defaults to ``os.environ``); raise ``ConfigError`` listing every problem."""
    file = Path(path)
    try:
        raw = tomllib.loads(read_config_text(file))
    except OSError as err:
        raise ConfigError([f"{file}: cannot read: {err.strerror or err}"]) from err
    except ValueError as err:  # not UTF-8, or not TOML (TOMLDecodeError is a ValueError)
        what = "not valid TOML: " if isinstance(err, tomllib.TOMLDecodeError) else ""
        raise ConfigError([f"{file}: {what}{err}"]) from err
    if not isinstance(raw, dict):
        raise ConfigError([f"{file}: expected a table at the top level"])
    used = _override(raw, os.environ if environ is None else environ)
    problems = [f"{file}: {where}: contains a NUL character" for where in _nuls(raw)]
    try:
        agent = AgentFile.model_validate(raw)
    except ValidationError as err:
        lines = _problems(file, [], err)
        for var in used:  # say so when the bad value came from the environment
            where = ".".join(ENV_OVERRIDES[var])
            lines = [
                p.replace(f"{file}: {where}:", f"{file}: {where} (from ${var}):") for p in lines
            ]
        # go on with what is valid, so one run of `check` reports the later stages' problems
        # too (devices, point maps, rules, the trust file), not one stage at a time
        lenient, errored = _without_errors(raw, err)
        if lenient is None:
            raise ConfigError(lines) from err
        problems.extend(lines)
        agent = lenient
    else:
        errored = set()

    base = file.resolve().parent  # relative paths in the file are relative to its folder
    agent = agent.model_copy(
        update={
            "data_dir": _absolute(base, agent.data_dir),
            "signing": agent.signing.model_copy(
                update={"key_file": _absolute(base, agent.signing.key_file)}
            ),
            "control": agent.control.model_copy(
                update={"trust_file": _absolute(base, agent.control.trust_file)}
            )
            if agent.control
            else None,
            "mqtt": agent.mqtt.model_copy(
                update={
                    "password_file": _absolute(base, agent.mqtt.password_file),
                    "tls": agent.mqtt.tls.model_copy(
                        update={
                            k: _absolute(base, getattr(agent.mqtt.tls, k))
                            for k in ("ca_file", "cert_file", "key_file")
                        }
                    )
                    if agent.mqtt.tls
                    else None,
                }
            ),
        }
    )
    if "signing" not in errored:
        _check_key(file, agent.signing.key_file, problems)
    _check_files(file, agent, problems)
    named: set[str] = set()
    devices, classes = _devices(file, base, agent, problems, named)
    interlocks: dict[str, Sequence[Interlock]] = {}
    twins = _twins(
        file, base, agent, {d.name: d for d in devices}, named, classes, problems, interlocks
    )
    if problems:
        raise ConfigError(problems)
    return AgentConfig(file, agent, devices, classes, twins, interlocks)


def _nuls(node: Any, path: tuple[int | str, ...] = ()) -> Iterator[str]:
    """Where a string holds a NUL (no file name or host may); such entries are removed."""
    # lists back to front, so that removing an entry does not shift those still to visit
    items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))[::-1]
    for key, value in items:
        if isinstance(value, str) and "\x00" in value:
            yield _loc([*path, key])
            del node[key]
        elif isinstance(value, dict | list):
            yield from _nuls(value, (*path, key))


def _without_errors(raw: dict[str, Any], err: ValidationError) -> tuple[AgentFile | None, set[str]]:
    """``raw`` with each part that failed replaced by its default (a device or twin entry that
    failed is left out), validated again -- or None if even that fails -- and the top-level
    sections so replaced."""
    errored: set[str] = set()
    bad_items: dict[str, set[int]] = {}
    for e in err.errors():
        loc = e["loc"]
        if not loc:
            return None, errored
        section = str(loc[0])
        if section in ("devices", "twins") and len(loc) > 1 and isinstance(loc[1], int):
            bad_items.setdefault(section, set()).add(loc[1])
        else:
            errored.add(section)
    lenient = {k: v for k, v in raw.items() if k not in errored}
    for section, bad in bad_items.items():
        items = raw.get(section)
        if isinstance(items, list):
            lenient[section] = [x for i, x in enumerate(items) if i not in bad]
    lenient.setdefault("agent_id", "check")
    lenient.setdefault("signing", {"key_file": "-", "key_id": "check"})
    if "signing" not in raw:
        errored.add("signing")
    try:
        return AgentFile.model_validate(lenient), errored
    except ValidationError:
        return None, errored


def _check_files(file: Path, agent: AgentFile, problems: list[str]) -> None:
    """Everything else ``run`` reads at start: the trust file and its keys, the broker
    password file and TLS files -- read here too, so `check` passes only what `run` accepts."""
    from edgetwin.agent.runtime.trust import load_trust

    if agent.control is not None:
        try:
            load_trust(agent.control.trust_file)
        except ConfigError as err:
            problems.extend(f"{file}: control.trust_file: {line}" for line in err.problems)
    mqtt = agent.mqtt
    reads = {"mqtt.password_file": mqtt.password_file}
    if mqtt.tls is not None:
        reads.update({f"mqtt.tls.{k}": getattr(mqtt.tls, k) for k in ("ca_file", "cert_file",
                                                                       "key_file")})  # fmt: skip
    for key, path in reads.items():
        if path is None:
            continue
        try:
            read_small(path)
        except OSError as err:
            problems.append(f"{file}: {key}: cannot read {path}: {err.strerror or err}")


def _check_key(file: Path, key_file: Path, problems: list[str]) -> None:
    """The signing key must be a readable Ed25519 private key (read locally, nothing sent)."""
    try:
        load_private(key_file)
    except ConfigError as err:
        problems.extend(f"{file}: signing.key_file: {line}" for line in err.problems)


def _devices(
    file: Path, base: Path, agent: AgentFile, problems: list[str], seen_names: set[str]
) -> tuple[list[DeviceConfig], dict[str, type]]:
    devices: list[DeviceConfig] = []
    classes: dict[str, type] = {}
    seen: set[str] = set()
    for i, raw in enumerate(agent.devices):
        if isinstance(raw.get("name"), str):
            seen_names.add(raw["name"])  # known, even if invalid: no follow-on errors for twins
        driver_name = raw.get("driver")
        if not isinstance(driver_name, str):
            problems.append(f"{file}: devices[{i}].driver: required: the driver's name")
            continue
        try:
            cls = registry.load(registry.DRIVERS, driver_name)
        except PluginError as err:
            problems.append(f"{file}: devices[{i}].driver: {err}")
            continue
        try:
            device = cls.config_model.model_validate(raw)
        except ValidationError as err:
            problems.extend(_problems(file, ["devices", i], err))
            continue
        paths = {k: _absolute(base, v) for k, v in device if isinstance(v, Path)}
        device = device.model_copy(update=paths)  # driver files relative to the config
        if device.name in seen:
            problems.append(f"{file}: devices[{i}].name: duplicate device name {device.name!r}")
        seen.add(device.name)
        devices.append(device)
        classes[device.name] = cls
    return devices, classes


def _twins(
    file: Path,
    base: Path,
    agent: AgentFile,
    devices: dict[str, DeviceConfig],
    named: set[str],
    classes: dict[str, type],
    problems: list[str],
    interlocks: dict[str, Sequence[Interlock]],
) -> list[Twin]:
    twins: list[Twin] = []
    mrids: set[str] = set()
    topics: dict[str, str] = {}
    maps: dict[str, list[PointEntry]] = {}
    shared: dict[str, object] = {}  # as the agent will share links: conflicts show up here
    for i, tc in enumerate(agent.twins):
        where = f"{file}: twins[{i}]"
        if tc.mrid in mrids:
            problems.append(f"{where}.mrid: duplicate mRID {tc.mrid}")
        mrids.add(tc.mrid)
        if tc.device not in devices:
            if tc.device in named:
                continue  # that device's own errors are reported already
            known = ", ".join(sorted(named)) or "none"
            problems.append(f"{where}.device: unknown device {tc.device!r} (devices: {known})")
            continue
        entries = _point_entries(file, base, i, tc, problems, maps)
        if entries is None:
            continue
        try:
            twin_cls = registry.load(registry.TWINS, tc.kind)
        except PluginError as err:
            problems.append(f"{where}.kind: {err}")
            continue
        for field in tc.overrides:
            if field not in {e.field for e in entries}:
                problems.append(f"{where}.overrides.{field}: no point feeds this field")
        spec = TwinSpec(
            mrid=tc.mrid,
            name=tc.name or tc.mrid,
            kind=tc.kind,
            device=tc.device,
            topic_prefix=agent.mqtt.topic_prefix,
            points=tuple(entries),
            reporting=_layer(agent.reporting, tc.reporting),
            overrides=tc.overrides,
            quality=_quality_for(tc.quality, classes[tc.device]),
        )
        try:
            twin = twin_cls(spec)
            # the driver checks, offline, that it can serve every point
            classes[tc.device](devices[tc.device], [bp.spec for bp in twin.bound_points()], shared)
        except ValueError as err:
            problems.append(f"{where}: {err}")
            continue
        if not _rules(f"{where}", tc, twin, agent.alarm_flood, problems, interlocks):
            continue
        for profile in twin.profiles:
            topic = profile.topic(spec.topic_prefix, spec.mrid)
            if topic in topics:
                problems.append(f"{where}: topic {topic} is already used by twin {topics[topic]}")
            topics[topic] = tc.mrid
        twins.append(twin)
    return twins


def _rules(
    where: str,
    tc: TwinConfig,
    twin: Twin,
    flood: FloodSettings,
    problems: list[str],
    interlocks: dict[str, Sequence[Interlock]],
) -> bool:
    """Build the twin's rule engine and interlocks (``edge_rules.config``) and attach the
    engine to the twin; False when the twin's rules have problems."""
    points = {bp.field for bp in twin.bound_points()} | set(getattr(twin, "derived_fields", {}))
    engine, locks, found = rules_config.build(points, tc.analytics, tc.rules, tc.interlocks, flood)
    actions = twin.actions() if hasattr(twin, "actions") else ()
    for j, lock in enumerate(tc.interlocks):
        if lock.action not in actions:
            found.append(
                (
                    ("interlocks", j, "action"),
                    f"this {tc.kind} twin accepts {', '.join(actions) or 'no controls'}, "
                    f"not {lock.action!r}",
                )
            )
    if engine is not None and not hasattr(twin, "attach_rules"):
        found.append((("rules",), f"a {tc.kind} twin cannot run rules (no event profile)"))
    problems.extend(f"{where}.{_loc(list(path))}: {msg}" for path, msg in found)
    if found:
        return False
    if engine is not None:
        twin.attach_rules(engine)  # type: ignore[attr-defined]
    interlocks[tc.mrid] = locks
    return True


def _quality_for(settings: QualitySettings, driver_class: type) -> QualitySettings:
    """No oldData-by-timestamp for drivers whose source time marks the last change (a
    steady value is not old there), unless the config asks for it explicitly."""
    if source_timestamps(driver_class) == "change" and "old_after_polls" not in (
        settings.model_fields_set
    ):
        return settings.model_copy(update={"old_after_polls": None})
    return settings


def _layer(agent_default: ReportingSettings, twin: ReportingSettings) -> ReportingSettings:
    """The twin's reporting defaults on top of the agent's."""
    values = agent_default.model_dump()
    values.update({k: v for k, v in twin.model_dump().items() if v is not None})
    return ReportingSettings.model_validate(values)


def _point_entries(
    file: Path,
    base: Path,
    i: int,
    tc: TwinConfig,
    problems: list[str],
    maps: dict[str, list[PointEntry]],
) -> list[PointEntry] | None:
    """The twin's points: its point map file's, then inline ``points`` (replacing same field)."""
    if tc.point_map and not tc.points and tc.point_map in maps:
        return maps[tc.point_map]  # one parsed map shared by every twin of that asset model
    raw_points: dict[str, tuple[str, dict[str, Any]]] = {}
    if tc.point_map:
        pm_path = resolve_path(tc.point_map, base)
        try:
            pm = load_raw(pm_path)
        except OSError as err:
            problems.append(f"{file}: twins[{i}].point_map: cannot read {pm_path}: {err.strerror}")
            return None
        except tomllib.TOMLDecodeError as err:
            problems.append(f"{pm_path}: not valid TOML: {err}")
            return None
        except ValidationError as err:
            problems.extend(_problems(pm_path, [], err))
            return None
        for j, p in enumerate(merged_points(pm)):
            raw_points[str(p.get("field", j))] = (f"{pm_path}: points[{j}]", p)
    for j, p in enumerate(tc.points):
        raw_points[str(p.get("field", f"inline{j}"))] = (f"{file}: twins[{i}].points[{j}]", p)
    if not raw_points:
        problems.append(f"{file}: twins[{i}]: no points: give point_map or points")
        return None
    entries: list[PointEntry] = []
    ok = True
    for where, p in raw_points.values():
        try:
            entries.append(PointEntry.model_validate(p))
        except ValidationError as err:
            ok = False
            for e in err.errors():
                key = f".{_loc(e['loc'])}" if e["loc"] else ""
                problems.append(f"{where}{key}: {e['msg']}")
    if not ok:
        return None
    if tc.point_map and not tc.points:
        maps[tc.point_map] = entries
    return entries
