"""The meter ability: what a driver for smart meters offers beyond point reads.

A driver implementing ``MeterSource`` (DLMS/COSEM today) lets the runtime's data concentrator
(``agent.runtime.ami``) read a meter's own memory: its clock, and the rows of its profiles (load
profile, billing profile, event logs) between two times. The types here are the contract; they
hold the meter's values as it gave them (times in UTC, numbers already scaled, the status
octet of each row as the meter set it) so that the runtime decides what is published.

What it leaves to others: the protocol (the driver), schedules, high-water marks, messages
(the runtime).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

OBIS_PATTERN = r"^\d{1,3}(\.\d{1,3}){5}$"


class MeteringSettings(BaseModel):
    """What the data concentrator collects from a meter, as fields of its device config
    (a meter driver's config model inherits them)."""

    load_profile: str | None = Field("1.0.99.1.0.255", pattern=OBIS_PATTERN)
    billing_profile: str | None = Field(None, pattern=OBIS_PATTERN)
    billing_registers: list[str] = Field(
        default_factory=list, max_length=32,
        description="a meter without a billing profile: these registers, read at billing_time",
    )  # fmt: skip
    billing_time: str = Field("00:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="UTC")
    event_logs: list[str] = Field(default_factory=list, max_length=8)
    backfill_days: float = Field(7.0, gt=0, le=400, description="how far back the first read")
    clock_max_drift_s: float = Field(10.0, gt=0, le=3600)
    read_window_s: float | None = Field(
        None, gt=0, le=86_400, description="reads spread over this long after each period end"
    )
    read_delay_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="the earliest read after a period ends (the meter's "
        "capture and clock differences)",
    )


@dataclass(frozen=True, slots=True)
class Column:
    """One capture object of a profile: ``class_id``/``obis``/``attribute`` and, for
    registers, its unit (``Wh``) -- values in rows are already multiplied by the scaler."""

    class_id: int
    obis: str
    attribute: int
    unit: str | None = None
    scaler: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"obis": self.obis, "classId": self.class_id,
                               "attribute": self.attribute}  # fmt: skip
        if self.unit:
            out["unit"] = self.unit
        return out


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One entry of a profile buffer: its capture time (the interval *end* for a load
    profile), the values of the other columns in order, and the status octet when the profile
    has an AMR status column (else ``None``)."""

    time: dt.datetime
    values: tuple[Any, ...]
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """A profile's shape: its columns after the clock (the status column excluded), its
    capture period (0 = captured on events, a log), and the rows read."""

    obis: str
    period_s: int
    columns: tuple[Column, ...]
    rows: Sequence[ProfileRow] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Register:
    """A register read on demand: its value scaled (``None`` when the meter refused it)."""

    obis: str
    value: Any
    unit: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"obis": self.obis, "value": self.value, "unit": self.unit,
                "quality": "good" if self.value is not None else "invalid"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Push:
    """A notification the meter sent by itself (a DLMS data-notification: a last gasp, an
    alarm): when the meter says it happened (if it says), and its values as decoded."""

    time: dt.datetime | None
    values: Any


@runtime_checkable
class PushSource(Protocol):
    """A meter driver that recognises and opens (deciphers, checks) what its meter pushes."""

    def open_push(self, peer: str, apdu: bytes) -> Push | None:
        """The push, when ``apdu`` from ``peer`` (an IP address) is this meter's and genuine;
        ``None`` when it is another meter's. Raises ``ValueError`` for one that claims to be
        this meter's but fails its checks (forged, replayed, malformed)."""
        ...


@runtime_checkable
class MeterSource(Protocol):
    """A driver that reads a meter's memory (always between polls: the runtime serialises)."""

    async def meter_time(self) -> dt.datetime:
        """The meter's clock now (UTC)."""
        ...

    async def set_meter_time(self, when: dt.datetime) -> None:
        """Set the meter's clock; ``DeviceRejected`` when it refuses."""
        ...

    async def registers(self, codes: Sequence[str]) -> list[Register]:
        """A fresh read of registers by OBIS code (value attribute, scaled, with its unit)."""
        ...

    async def profile(self, obis: str, start: dt.datetime, end: dt.datetime) -> Profile:
        """The rows captured with ``start <= time <= end`` (selective access by range),
        oldest first."""
        ...
