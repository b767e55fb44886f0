"""Files the agent keeps in its data folder for local tools (the CLI, a technician on site).

* ``status.json``: devices, twins, outbox, MQTT session (written every ``status_interval_s``);
* ``twins.json``: every twin's live state -- value, quality and time per field;
* ``commissioning.json``: which twins a technician has commissioned, when, and the checks;
* ``alarms.json``: every twin's alarms that are raised (or chattering) now.

Writes are atomic (temporary file, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.files import state_dir, write_state
from twins.base import Twin, TwinState

STATUS, TWINS, COMMISSIONING = "status.json", "twins.json", "commissioning.json"
ALARMS = "alarms.json"


def write_json(path: Path, obj: Any) -> None:
    """Replace ``path`` atomically with ``obj`` as JSON (mode 0640: ``agent.files``)."""
    write_state(path, json.dumps(obj, indent=2, default=str))


def read_json(data_dir: Path, name: str) -> Any:
    return json.loads((data_dir / name).read_text())


def summary(st: TwinState) -> dict[str, Any]:
    """What status.json and twins.json both say of a twin."""
    return {
        "name": st.name,
        "kind": st.kind,
        "device": st.device,
        "available": st.available,
        "last_update": st.last_update,
    }


def twins_snapshot(twins: Iterable[Twin], commissioned: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for twin in twins:
        st = twin.state()
        out[st.mrid] = {
            **summary(st),
            "commissioned": st.mrid in commissioned,
            "points": {
                field: {
                    "value": r.value,
                    "units": st.units.get(field, ""),
                    "quality": r.quality.to_wire(),
                    "t": r.ts,
                }
                for field, r in sorted(st.points.items())
            },
        }
    return out


def active_alarms(twins: Iterable[Twin]) -> list[dict[str, Any]]:
    """Raised or chattering alarms of every twin, highest priority first, then oldest."""
    from edge_rules.alarm import PRIORITIES

    out = []
    for twin in twins:
        engine = getattr(twin, "rules", None)
        if engine is None:
            continue
        for alarm in engine.alarms():
            if alarm.active or alarm.chattering:
                out.append({"mrid": twin.spec.mrid, "twin": twin.spec.name, **alarm.view()})
    out.sort(key=lambda a: (PRIORITIES.index(a["priority"]), a["raisedAt"] or 0))
    return out


def commissioned(data_dir: Path) -> dict[str, Any]:
    try:
        return dict(read_json(data_dir, COMMISSIONING))
    except FileNotFoundError:
        return {}


def record_commissioning(data_dir: Path, mrid: str, checks: list[dict[str, Any]]) -> None:
    records = commissioned(data_dir)
    records[mrid] = {"ts": time.time(), "checks": checks}
    state_dir(data_dir)
    write_json(data_dir / COMMISSIONING, records)
