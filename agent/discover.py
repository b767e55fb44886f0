"""``edgetwin discover``: look at a device on the network and print a config section for it.

``discover_modbus`` finds a SunSpec device's models (the ``sunspec`` driver's discovery), reads
its common model (manufacturer, model, serial number) and proposes one twin per model EdgeTwin
has a point map for. The output is TOML to paste into a config, with new mRIDs; nothing is
written anywhere. Talks only to the address it is given.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from drivers.sunspec import FoundModel, SunSpecConfig, SunSpecDriver
from drivers.sunspec_models import decode_point, model_def
from firmware_sim.site import toml_value

#: model id -> (twin kind, built-in point map)
TWIN_FOR_MODEL: dict[int, tuple[str, str]] = {
    **{m: ("solar", "sunspec_inverter") for m in (101, 102, 103, 111, 112, 113)},
    701: ("solar", "sunspec_der_ac"),
    **{m: ("meter", "sunspec_meter") for m in (201, 202, 203, 204)},
    **{m: ("meter", "sunspec_meter_float") for m in (211, 212, 213, 214)},
}


@dataclass
class Discovery:
    host: str
    port: int
    unit: int
    models: list[FoundModel]
    common: dict[str, str]


async def discover_modbus(host: str, port: int, unit: int, per_request_s: float = 2.0) -> Discovery:
    """Connect, find the SunSpec models, read the common model; raises DeviceError."""
    cfg = SunSpecConfig(
        name="discover",
        driver="sunspec",
        host=host,
        port=port,
        unit_id=unit,
        timeout_s=per_request_s,
    )
    async with SunSpecDriver(cfg, []) as drv:
        common: dict[str, str] = {}
        first = next((m for m in drv.models if m.id == 1), None)
        if first is not None:
            regs = await drv.read_registers(first.address, first.length + 2)
            if regs is not None:
                for name in ("Mn", "Md", "SN", "Vr"):
                    value = decode_point(model_def(1), regs, name)
                    if isinstance(value, str):
                        common[name] = value
        return Discovery(host, port, unit, drv.models, common)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-").lower() or "sunspec-device"


def config_section(d: Discovery) -> str:
    """TOML for the device and a twin per recognised model, with a commented model list."""
    label = " ".join(d.common.get(k, "") for k in ("Mn", "Md", "SN")).strip() or d.host
    device = _slug(f"{d.common.get('Md', 'sunspec')}-{d.common.get('SN', d.unit)}")
    out = [f"# SunSpec device at {d.host}:{d.port} unit {d.unit}: {label}"]
    for m in d.models:
        try:
            title = model_def(m.id).label or model_def(m.id).name
        except KeyError:
            title = "unknown model"
        twin = TWIN_FOR_MODEL.get(m.id)
        note = f" -> twin kind {twin[0]!r}, point map {twin[1]!r}" if twin else ""
        out.append(f"#   model {m.id} {title} at {m.address}, {m.length} registers{note}")
    out.append("")
    fields = {
        "name": device,
        "driver": "sunspec",
        "host": d.host,
        "port": d.port,
        "unit_id": d.unit,
        "poll_interval_s": 1.0,
        "timeout_s": 1.0,
    }
    out.append("[[devices]]")
    out += [f"{k} = {toml_value(v)}" for k, v in fields.items()]
    for m in d.models:
        if m.id not in TWIN_FOR_MODEL:
            continue
        kind, point_map = TWIN_FOR_MODEL[m.id]
        out += [
            "",
            "[[twins]]",
            f'mrid = "{uuid.uuid4()}"',
            f"kind = {toml_value(kind)}",
            f"name = {toml_value(label)}",
            f"device = {toml_value(device)}",
            f"point_map = {toml_value(point_map)}",
        ]
    return "\n".join(out) + "\n"
