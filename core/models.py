"""Value types shared by every stage of the data path: quality and readings.

Quality follows IEC 61850 / OpenFMB: ``validity`` (good, invalid, questionable), ``detailQual``
flags, ``source`` (process, substituted), ``test`` and ``operatorBlocked``. These types carry no
behaviour beyond conversion to the wire form; drivers create them, twins and rules consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

Value = float | int | bool | None


class Validity(StrEnum):
    GOOD = "good"
    INVALID = "invalid"
    QUESTIONABLE = "questionable"


_GOOD = Validity.GOOD

DETAIL_FLAGS = (
    "overflow",
    "outOfRange",
    "badReference",
    "oscillatory",
    "failure",
    "oldData",
    "inconsistent",
    "inaccurate",
)


@dataclass(frozen=True, slots=True)
class Quality:
    """An IEC 61850 quality. Instances are immutable and compare by value."""

    validity: Validity = Validity.GOOD
    detail: frozenset[str] = field(default_factory=frozenset)
    source: str = "process"
    test: bool = False
    operator_blocked: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.detail) - set(DETAIL_FLAGS)
        if unknown:
            raise ValueError(f"unknown detailQual flags: {sorted(unknown)}")

    @property
    def is_good(self) -> bool:
        return self.validity is _GOOD  # a module constant: enum member lookup is slow

    def to_wire(self) -> dict[str, Any]:
        """OpenFMB ``Quality`` as a map. Like protobuf 3, fields at their default are left out:
        ``source`` only when not "process", detail flags only when set, ``test`` and
        ``operatorBlocked`` only when true. ``validity`` is always written. Good quality, by far
        the most common, is one shared map: callers must not change what they get."""
        if self is GOOD:
            return _GOOD_WIRE
        wire: dict[str, Any] = {"validity": self.validity.value}
        if self.source != "process":
            wire["source"] = self.source
        if self.detail:
            wire["detailQual"] = {flag: True for flag in DETAIL_FLAGS if flag in self.detail}
        if self.test:
            wire["test"] = True
        if self.operator_blocked:
            wire["operatorBlocked"] = True
        return wire


GOOD = Quality()
_GOOD_WIRE: dict[str, Any] = {"validity": "good"}
#: The device did not answer or raised an error: the value is not usable.
FAILURE = Quality(Validity.INVALID, frozenset({"failure"}))
#: The device answered but refused this address (e.g. Modbus illegal data address).
BAD_REFERENCE = Quality(Validity.INVALID, frozenset({"badReference"}))
#: A decoded value is not a finite number (NaN / infinity from a float register).
OVERFLOW = Quality(Validity.INVALID, frozenset({"overflow"}))
#: A value held over from an earlier poll.
OLD_DATA = Quality(Validity.QUESTIONABLE, frozenset({"oldData"}))


class Reading(NamedTuple):
    """One point's value as read from a device.

    ``point`` is the key the runtime gave the driver; ``ts`` is the source time (seconds since the
    epoch, taken when the device's answer arrived). ``value`` is None when quality is invalid.
    Immutable; a named tuple because every sample of every point makes one (it is made twice as
    fast as a frozen dataclass).
    """

    point: str
    value: Value
    quality: Quality
    ts: float
