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

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgetwin.core.models import Reading
from edgetwin.wire.topics import profile_topic

WYE_PHASES = ("net", "phsA", "phsB", "phsC", "neut")


_MRIDS = random.Random()  # seeded from the OS's entropy once, at import


def new_mrid() -> str:
    """A fresh random (version 4) UUID for a message. The identifiers need to be unique, not
    secret, so they come from a generator seeded once from ``os.urandom`` rather than a system
    call per message (which costs more than building the rest of the message)."""
    return str(uuid.UUID(int=_MRIDS.getrandbits(128), version=4))


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
        return profile_topic(prefix, self.module, self.name, mrid)

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
        return self.frame(mrid=mrid, body=body, now=now, name=name)

    def frame(
        self,
        *,
        mrid: str,
        body: dict[str, Any],
        now: float,
        name: str | None = None,
        message_mrid: str | None = None,
    ) -> dict[str, Any]:
        """``body`` inside the profile's message info and conducting equipment."""
        equipment: dict[str, Any] = {"mRID": mrid}
        if name is not None:
            equipment["namedObject"] = {"name": name}
        return {
            self.message_info: {
                "messageInfo": {
                    "identifiedObject": {"mRID": message_mrid or new_mrid()},
                    "messageTimeStamp": timestamp(now),
                }
            },
            self.equipment: {"conductingEquipment": equipment},
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


def event_body(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """An event profile's body ``{kind: {...}}`` from a rule's event: keys ending in ``At``
    (seconds since the epoch) become OpenFMB timestamps; None values are left out."""
    wire = {
        k: timestamp(v) if k.endswith("At") and isinstance(v, int | float) else v
        for k, v in body.items()
        if v is not None
    }
    return {kind: wire}


def analytics_profile(reading: Profile, fields: Mapping[str, str]) -> Profile:
    """``<Prefix>AnalyticsProfile`` of ``reading``'s module -- an EdgeTwin extension, shaped like
    a reading profile -- carrying the twin's published rule outputs (``fields``: name -> type)."""
    prefix = reading.name.removesuffix("ReadingProfile")
    body = reading.body.removesuffix("Reading")
    return Profile(reading.module, f"{prefix}AnalyticsProfile", "readingMessageInfo",
                   reading.equipment, f"{body}Analytics", dict(fields))  # fmt: skip


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

#: OpenFMB's metermodule has only the reading profile; meter events (alarms, demand, settlement
#: reads) go to this EdgeTwin extension on ``<prefix>/metermodule/MeterEventProfile/<mRID>``.
METER_EVENT = Profile(
    module="metermodule",
    name="MeterEventProfile",
    message_info="eventMessageInfo",
    equipment="meter",
    body="meterEvent",
    fields={},
)


#: A data concentrator's interval blocks (a load profile's intervals, each once, with their
#: status and quality) and billing snapshots: EdgeTwin extensions of the metermodule.
METER_INTERVAL = Profile(
    module="metermodule",
    name="MeterIntervalProfile",
    message_info="intervalMessageInfo",
    equipment="meter",
    body="intervalBlock",
    fields={},
)
#: On-demand reads asked of a meter twin (``wire.control.ReadRequest``): EdgeTwin extension.
METER_CONTROL = Profile(
    module="metermodule",
    name="MeterControlProfile",
    message_info="controlMessageInfo",
    equipment="meter",
    body="meterControl",
    fields={},
)
METER_BILLING = Profile(
    module="metermodule",
    name="MeterBillingProfile",
    message_info="billingMessageInfo",
    equipment="meter",
    body="billingRead",
    fields={},
)


def _status_fields(ln: str) -> dict[str, str]:
    """Operating state and health of a generating unit (solar, ESS): ``<ln>.GnSynSt``,
    ``<ln>.PointStatus.state`` and ``<ln>.logicalNodeForEventAndStatus.EEHealth``."""
    return {
        f"{ln}.GnSynSt": "SPS",  # synchronised to the grid and producing / absorbing
        f"{ln}.PointStatus.state": "ENS",  # StateKind: off / on / standby
        f"{ln}.logicalNodeForEventAndStatus.EEHealth": "ENS",  # HealthKind: OK / Alarm
    }


def _family(
    module: str, prefix: str, equipment: str, body: str, status: Mapping[str, str], control: str
) -> tuple[Profile, Profile, Profile, Profile]:
    """Reading, status, event and control (``Control`` or ``DiscreteControl``) profiles of one
    OpenFMB module. The event profile carries command results; the control profile is what
    central systems publish."""
    return (
        Profile(module, f"{prefix}ReadingProfile", "readingMessageInfo", equipment,
                f"{body}Reading", _reading_fields()),
        Profile(module, f"{prefix}StatusProfile", "statusMessageInfo", equipment,
                f"{body}Status", status),
        Profile(module, f"{prefix}EventProfile", "eventMessageInfo", equipment,
                f"{body}Event", {}),
        Profile(module, f"{prefix}{control}Profile", "controlMessageInfo", equipment,
                f"{body}{control}", {}),
    )  # fmt: skip


_ZGEN = "solarStatusZGEN.solarEventAndStatusZGEN"
SOLAR_READING, SOLAR_STATUS, SOLAR_EVENT, SOLAR_CONTROL = _family(
    "solarmodule", "Solar", "solarInverter", "solar", _status_fields(_ZGEN), "Control"
)

ESS_ZBAT = "essStatusZBAT"
ESS_ZGEN = "essStatusZGEN.eSSEventAndStatusZGEN"
ESS_READING, ESS_STATUS, ESS_EVENT, ESS_CONTROL = _family(
    "essmodule",
    "ESS",
    "ess",
    "ess",
    {
        f"{ESS_ZBAT}.Soc": "MV",  # state of charge, %
        f"{ESS_ZBAT}.BatSt": "SPS",  # battery system on
        **_status_fields(ESS_ZGEN),
    },
    "Control",
)


def _switch_status(ln: str) -> dict[str, str]:
    return {
        f"{ln}.Pos": "ENS",  # DbPosKind: closed / open / transient / invalid
        f"{ln}.logicalNodeForEventAndStatus.EEHealth": "ENS",  # OK / Alarm
        f"{ln}.OpCnt": "MV",  # operations counter
    }


SWITCH_READING, SWITCH_STATUS, SWITCH_EVENT, SWITCH_CONTROL = _family(
    "switchmodule", "Switch", "protectedSwitch", "switch",
    _switch_status("switchStatusXSWI"), "DiscreteControl",
)  # fmt: skip
BREAKER_READING, BREAKER_STATUS, BREAKER_EVENT, BREAKER_CONTROL = _family(
    "breakermodule", "Breaker", "breaker", "breaker",
    _switch_status("statusAndEventXCBR"), "DiscreteControl",
)  # fmt: skip
RECLOSER_READING, RECLOSER_STATUS, RECLOSER_EVENT, RECLOSER_CONTROL = _family(
    "reclosermodule", "Recloser", "recloser", "recloser",
    _switch_status("statusAndEventXCBR"), "DiscreteControl",
)  # fmt: skip


#: EdgeTwin extension module for assets no OpenFMB profile fits (``twins.generic``): its reading
#: profile's fields are the point map's, so only the event and control profiles are fixed here.
GENERIC_MODULE = "genericmodule"
GENERIC_EVENT = Profile(GENERIC_MODULE, "GenericEventProfile", "eventMessageInfo", "asset",
                        "genericEvent", {})  # fmt: skip
GENERIC_CONTROL = Profile(GENERIC_MODULE, "GenericControlProfile", "controlMessageInfo", "asset",
                          "genericControl", {})  # fmt: skip
