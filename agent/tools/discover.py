"""``edgetwin discover``: look at a device on the network and print a config section for it.

``discover_modbus`` finds a SunSpec device's models (the ``sunspec`` driver's discovery), reads
its common model (manufacturer, model, serial number) and proposes one twin per model EdgeTwin
has a point map for. ``browse_opcua`` walks an OPC UA server's Objects folder and lists its
variables (node ids in the ``nsu=`` form, which survives namespace renumbering); the chosen ones
become points, and an object holding feeder quantities (W, VAr, A, V, Hz) becomes a meter
twin. The output is TOML to paste into a config, with new mRIDs; nothing is written anywhere.
Talks only to the address it is given.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from edgetwin.core.tomlwrite import toml_value
from edgetwin.drivers.sunspec import FoundModel, SunSpecConfig, SunSpecDriver
from edgetwin.drivers.sunspec_models import decode_point, model_def

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


@dataclass
class UaVariable:
    path: str  # browse names from Objects, e.g. Substation/Feeder1/W
    node_id: str  # nsu=<namespace uri>;s=...
    data_type: str
    value: object


#: variable name -> MeterReadingProfile field, for objects that look like a feeder
FEEDER_FIELDS = {
    "W": "readingMMXU.W.net",
    "VAr": "readingMMXU.VAr.net",
    "VA": "readingMMXU.VA.net",
    "A": "readingMMXU.A.net",
    "V": "readingMMXU.PhV.net",
    "PF": "readingMMXU.PF.net",
    "Hz": "readingMMXU.Hz",
}


async def browse_opcua(config: Any, max_depth: int = 8) -> list[UaVariable]:
    """Every variable below Objects (the Server object excepted), depth first."""
    from asyncua import ua

    from edgetwin.drivers.opcua import OpcUaDriver

    driver = OpcUaDriver(config, [])
    await driver.connect()
    try:
        client = driver.session
        namespaces = await client.get_namespace_array()
        found: list[UaVariable] = []

        async def walk(node: Any, path: list[str], depth: int) -> None:
            for child in await node.get_children():
                if child.nodeid == ua.NodeId(ua.ObjectIds.Server):  # type: ignore[arg-type]
                    continue
                name = (await child.read_browse_name()).Name
                node_class = await child.read_node_class()
                if node_class == ua.NodeClass.Variable:
                    nid = child.nodeid
                    ident = nid.to_string().split(";", 1)[-1]
                    uri = namespaces[nid.NamespaceIndex]
                    try:
                        value = await child.read_value()
                        vtype = (await child.read_data_type_as_variant_type()).name
                    except ua.UaError:
                        value, vtype = None, "?"
                    found.append(
                        UaVariable("/".join([*path, name]), f"nsu={uri};{ident}", vtype, value)
                    )
                elif node_class == ua.NodeClass.Object and depth < max_depth:
                    await walk(child, [*path, name], depth + 1)

        await walk(client.nodes.objects, [], 0)
        return found
    finally:
        await driver.close()


def opcua_section(url: str, variables: list[UaVariable], device: str = "opcua-server") -> str:
    """TOML: the device, a meter twin per feeder-like object, the other variables listed."""
    out = [f"# OPC UA server {url}: {len(variables)} variables"]
    out += [f"#   {v.path:<40} {v.data_type:<8} {v.node_id}  (now {v.value!r})" for v in variables]
    out += [
        "",
        "[[devices]]",
        f"name = {toml_value(device)}",
        'driver = "opcua"',
        f"url = {toml_value(url)}",
        'mode = "subscribe"',
        "poll_interval_s = 1.0",
    ]
    by_object: dict[str, list[UaVariable]] = {}
    for v in variables:
        by_object.setdefault(v.path.rsplit("/", 1)[0], []).append(v)
    for obj, members in by_object.items():
        points = [
            (FEEDER_FIELDS[v.path.rsplit("/", 1)[1]], v)
            for v in members
            if v.path.rsplit("/", 1)[1] in FEEDER_FIELDS
        ]
        if len(points) < 2:
            continue
        out += [
            "",
            "[[twins]]",
            f'mrid = "{uuid.uuid4()}"',
            'kind = "meter"',
            f"name = {toml_value(obj)}",
            f"device = {toml_value(device)}",
            "points = [",
        ]
        out += [
            f"    {{ field = {toml_value(f)}, address = {toml_value(v.node_id)} }},"
            for f, v in points
        ]
        out.append("]")
    return "\n".join(out) + "\n"
