"""OpenFMB profile shapes: which fields a profile has, what value type each holds, and how the
profile map is laid out on the wire. Pure data and pure functions; no I/O.

A field is named by its path below the profile's reading object, e.g. ``readingMMXU.PhV.phsA``.
Value types (IEC 61850 common data classes as OpenFMB encodes them):

* ``CMV``  complex measured value  -> ``{"cVal": {"mag": v}, "q": quality, "t": time}``
* ``MV``   measured value          -> ``{"mag": v, "q": quality, "t": time}``
* ``BCR``  binary counter reading  -> ``{"actVal": int, "q": quality, "t": time}``
* ``SPS``  single point status     -> ``{"stVal": bool, "q": quality, "t": time}``
* ``ENS``  enumerated status       -> ``{"stVal": "<enum name>", "q": quality, "t": time}``

An invalid sample carries ``q`` and ``t`` but no value.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.models import Reading

WYE_PHASES = ("net", "phsA", "phsB", "phsC", "neut")


def timestamp(ts: float) -> dict[str, int]:
    """OpenFMB ``Timestamp``: whole seconds and nanoseconds since the epoch."""
    ns = round(ts * 1e9)
    return {"seconds": ns // 1_000_000_000, "nanoseconds": ns % 1_000_000_000}


@dataclass(frozen=True)
class Profile:
    """One OpenFMB profile: its module, name, top-level keys and typed fields."""

    module: str
    name: str
    message_info: str  # e.g. "readingMessageInfo"
    equipment: str  # e.g. "meter"
    body: str  # e.g. "meterReading"
    fields: Mapping[str, str]  # field path -> CMV | MV | BCR

    def topic(self, prefix: str, mrid: str) -> str:
        return f"{prefix}/{self.module}/{self.name}/{mrid}"

    def build(
        self, *, mrid: str, name: str, samples: Mapping[str, Reading], now: float
    ) -> dict[str, Any]:
        """The profile map carrying ``samples`` (field -> sample), with a fresh message mRID."""
        body: dict[str, Any] = {}
        for field, sample in samples.items():
            node = body
            *parents, leaf = field.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = encode_value(self.fields[field], sample)
        return {
            self.message_info: {
                "messageInfo": {
                    "identifiedObject": {"mRID": str(uuid.uuid4())},
                    "messageTimeStamp": timestamp(now),
                }
            },
            self.equipment: {"conductingEquipment": {"mRID": mrid, "namedObject": {"name": name}}},
            self.body: body,
        }


def encode_value(cdc: str, sample: Reading) -> dict[str, Any]:
    out: dict[str, Any] = {"q": sample.quality.to_wire(), "t": timestamp(sample.ts)}
    if sample.value is None:
        return out
    if cdc == "CMV":
        out["cVal"] = {"mag": float(sample.value)}
    elif cdc == "MV":
        out["mag"] = float(sample.value)
    elif cdc == "BCR":
        out["actVal"] = int(sample.value)
    elif cdc == "SPS":
        out["stVal"] = bool(sample.value)
    elif cdc == "ENS":
        out["stVal"] = sample.value
    else:
        raise ValueError(f"unknown value type {cdc!r}")
    return out


DEL_PHASES = ("net", "phsAB", "phsBC", "phsCA")


def _reading_fields() -> dict[str, str]:
    """readingMMXU (WYE quantities, PPV as DEL, Hz) and readingMMTR counters."""
    fields = {
        f"readingMMXU.{q}.{ph}": "CMV"
        for q in ("PhV", "A", "W", "VAr", "VA", "PF")
        for ph in WYE_PHASES
    }
    fields.update({f"readingMMXU.PPV.{ph}": "CMV" for ph in DEL_PHASES})
    fields["readingMMXU.Hz"] = "MV"
    for counter in ("TotWh", "SupWh", "DmdWh", "TotVArh", "SupVArh", "DmdVArh", "TotVAh"):
        fields[f"readingMMTR.{counter}"] = "BCR"
    return fields


METER_READING = Profile(
    module="metermodule",
    name="MeterReadingProfile",
    message_info="readingMessageInfo",
    equipment="meter",
    body="meterReading",
    fields=_reading_fields(),
)

SOLAR_READING = Profile(
    module="solarmodule",
    name="SolarReadingProfile",
    message_info="readingMessageInfo",
    equipment="solarInverter",
    body="solarReading",
    fields=_reading_fields(),
)

_ZGEN = "solarStatusZGEN.solarEventAndStatusZGEN"
SOLAR_STATUS = Profile(
    module="solarmodule",
    name="SolarStatusProfile",
    message_info="statusMessageInfo",
    equipment="solarInverter",
    body="solarStatus",
    fields={
        f"{_ZGEN}.GnSynSt": "SPS",  # synchronised to the grid and producing
        f"{_ZGEN}.PointStatus.state": "ENS",  # StateKind: off / on / standby
        f"{_ZGEN}.logicalNodeForEventAndStatus.EEHealth": "ENS",  # HealthKind: OK / Alarm
    },
)

SWITCH_READING = Profile(
    module="switchmodule",
    name="SwitchReadingProfile",
    message_info="readingMessageInfo",
    equipment="protectedSwitch",
    body="switchReading",
    fields=_reading_fields(),
)

SWITCH_STATUS = Profile(
    module="switchmodule",
    name="SwitchStatusProfile",
    message_info="statusMessageInfo",
    equipment="protectedSwitch",
    body="switchStatus",
    fields={
        "switchStatusXSWI.Pos": "ENS",  # DbPosKind: closed / open / transient / invalid
        "switchStatusXSWI.logicalNodeForEventAndStatus.EEHealth": "ENS",  # OK / Alarm
        "switchStatusXSWI.OpCnt": "MV",  # operations counter
    },
)

#: where command results go: one event per command, never dropped before telemetry
SWITCH_EVENT = Profile(
    module="switchmodule",
    name="SwitchEventProfile",
    message_info="eventMessageInfo",
    equipment="protectedSwitch",
    body="switchEvent",
    fields={},
)

#: the control profile a switch twin listens to (central systems publish it)
SWITCH_CONTROL = Profile(
    module="switchmodule",
    name="SwitchDiscreteControlProfile",
    message_info="controlMessageInfo",
    equipment="protectedSwitch",
    body="switchDiscreteControl",
    fields={},
)

PROFILES: dict[str, Profile] = {
    p.name: p for p in (METER_READING, SOLAR_READING, SOLAR_STATUS, SWITCH_READING, SWITCH_STATUS)
}
