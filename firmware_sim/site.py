"""Agent configurations for a site of simulated meters (demo, tests and benchmarks use it).

``site_config`` renders one TOML config: one ``modbus_tcp`` device per simulated meter, and
``twins_per_meter`` meter twins (built-in ``sim_meter`` point map) on each. Settings a caller
does not give keep the agent's own defaults.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgetwin.core.tomlwrite import toml_value


def _table(name: str, values: Mapping[str, Any]) -> str:
    body = "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items() if v is not None)
    return f"[{name}]\n{body}"


#: Twin settings that turn on the built-in analytics for a simulated meter (480Y/277 V): its
#: tamper switch (bit 0 of register 113) as a point, outage, ANSI C84.1 sag / swell, tamper,
#: 15-minute demand and the loading of a 150 kVA transformer. ``edgetwin demo`` uses them.
SIM_METER_ANALYTICS: dict[str, Any] = {
    "points": [
        {
            "field": "@Tamper",
            "address": 113,
            "table": "holding",
            "dtype": "uint16",
            "mask": 1,
            "kind": "state",
        }
    ],
    "analytics": {
        "nominal_v": 277.0,
        "outage": {},
        "voltage": {"on_delay_s": 5.0},
        "tamper": {"flag": "@Tamper"},
        "demand": {},
        "loading": {"rating_kva": 150.0},
    },
}


def meter_mrid(meter: int, twin: int = 0) -> str:
    """A stable mRID for twin ``twin`` of simulated meter ``meter``."""
    return str(uuid.UUID(int=0x5F0A3C2E_8D1B_4F7A_9C3E_000000000000 + meter * 1000 + twin))


def site_config(
    *,
    agent_id: str,
    data_dir: Path | str,
    key_file: Path | str,
    mqtt: Mapping[str, Any],
    meters: Sequence[tuple[str, int]],
    twins_per_meter: int = 1,
    device: Mapping[str, Any] | None = None,
    reporting: Mapping[str, Any] | None = None,
    outbox: Mapping[str, Any] | None = None,
    status_interval_s: float | None = None,
    twin: Mapping[str, Any] | None = None,
    top: Mapping[str, Any] | None = None,
) -> str:
    """TOML for ``meters`` = [(device name, Modbus TCP port), ...] on 127.0.0.1; ``twin`` adds
    keys to every twin (e.g. ``analytics``, ``rules``, inline ``points``); ``top`` adds top-level
    agent settings (e.g. ``rules_save_interval_s``)."""
    head = {
        "agent_id": agent_id,
        "data_dir": data_dir,
        "status_interval_s": status_interval_s,
        **(top or {}),
    }
    parts = ["".join(f"{k} = {toml_value(v)}\n" for k, v in head.items() if v is not None)]
    parts.append(_table("mqtt", mqtt))
    parts.append(_table("signing", {"key_file": key_file, "key_id": agent_id}))
    if outbox:
        parts.append(_table("outbox", outbox))
    if reporting:
        parts.append(_table("reporting", reporting))
    for m, (name, port) in enumerate(meters):
        settings = {"name": name, "driver": "modbus_tcp", "host": "127.0.0.1", "port": port}
        parts.append(_table("[devices]", {**settings, **(device or {})}))
        for t in range(twins_per_meter):
            parts.append(
                _table(
                    "[twins]",
                    {
                        "mrid": meter_mrid(m, t),
                        "kind": "meter",
                        "name": f"simulated meter {name}" + (f" #{t}" if t else ""),
                        "device": name,
                        "point_map": "sim_meter",
                        **(twin or {}),
                    },
                )
            )
    return "\n".join(parts)
