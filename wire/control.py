"""Control profiles as both sides build and read them: which map a command carries for each
controllable kind, and where in it the command sits.

Two families (the twins' ``twins.control`` reads them; the central side builds them):

* ``Discrete`` (switch, breaker, recloser): ``open`` / ``close`` as
  ``<body>.<ln>.Pos.ctlVal`` (false / true).
* ``ReadRequest`` (meter): ``read`` -- an on-demand read of registers named by OBIS code,
  ``<body>.readRequest.registers`` (an empty list: every register the twin maps); the answer
  is the command's result event, with the values read.
* ``Schedule`` (solar, ESS, generic setpoints): OpenFMB's
  ``<body>.<fscc>.controlFSCC.controlScheduleFSCH.ValACSG.schPts`` -- curve points, each with a
  ``startTime`` and ``scheduleParameter`` entries ``{scheduleParameterType, value}``.

``CONTROLS`` names the shape of every built-in controllable twin kind. ``Discrete.body`` and
``Schedule.body`` give the part below the profile's body key; ``Profile.frame`` wraps it in the
message info and the conducting equipment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgetwin.wire import openfmb as p
from edgetwin.wire.openfmb import Profile, timestamp

#: (start, {scheduleParameterType: value}) per curve point; start in seconds since the epoch.
CurvePoints = Sequence[tuple[float, Mapping[str, float]]]


@dataclass(frozen=True, slots=True)
class Discrete:
    """``open`` / ``close`` through ``<control body>.<ln>.Pos.ctlVal``."""

    control: Profile  # what the central side publishes
    event: Profile  # where the twin answers (command results)
    ln: str  # the logical node, e.g. "breakerDiscreteControlXCBR"
    actions: tuple[str, ...] = ("open", "close")

    def path(self) -> tuple[str, ...]:
        return (self.control.body, self.ln, "Pos", "ctlVal")

    def body(
        self, action: str, schedule: CurvePoints = (), registers: Sequence[str] = ()
    ) -> dict[str, Any]:
        if action not in self.actions or schedule or registers:
            raise ValueError(f"{self.control.name} accepts the actions open and close")
        return {self.ln: {"Pos": {"ctlVal": action == "close"}}}


@dataclass(frozen=True, slots=True)
class Schedule:
    """Curve points with start times through OpenFMB's ``controlScheduleFSCH``."""

    control: Profile
    event: Profile
    fscc: str  # e.g. "essControlFSCC"
    actions: tuple[str, ...] = ("schedule",)

    def path(self) -> tuple[str, ...]:
        return (self.control.body, *self._below())

    def _below(self) -> tuple[str, ...]:
        return (self.fscc, "controlFSCC", "controlScheduleFSCH", "ValACSG", "schPts")

    def body(
        self, action: str, schedule: CurvePoints = (), registers: Sequence[str] = ()
    ) -> dict[str, Any]:
        if action != "schedule" or not schedule or registers:
            raise ValueError(f"{self.control.name} accepts the action schedule with curve points")
        pts = [
            {
                "scheduleParameter": [
                    {"scheduleParameterType": kind, "value": float(value)}
                    for kind, value in params.items()
                ],
                "startTime": timestamp(start),
            }
            for start, params in schedule
        ]
        body: dict[str, Any] = {}
        node = body
        *parents, leaf = self._below()
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = pts
        return body


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """``read``: registers by OBIS code through ``<control body>.readRequest.registers``."""

    control: Profile
    event: Profile
    actions: tuple[str, ...] = ("read",)

    def path(self) -> tuple[str, ...]:
        return (self.control.body, "readRequest", "registers")

    def body(
        self, action: str, schedule: CurvePoints = (), registers: Sequence[str] = ()
    ) -> dict[str, Any]:
        if action != "read" or schedule:
            raise ValueError(f"{self.control.name} accepts the action read with registers")
        return {"readRequest": {"registers": list(registers)}}


Shape = Discrete | Schedule | ReadRequest

SWITCH = Discrete(p.SWITCH_CONTROL, p.SWITCH_EVENT, "switchDiscreteControlXSWI")
BREAKER = Discrete(p.BREAKER_CONTROL, p.BREAKER_EVENT, "breakerDiscreteControlXCBR")
RECLOSER = Discrete(p.RECLOSER_CONTROL, p.RECLOSER_EVENT, "recloserDiscreteControlXCBR")
SOLAR = Schedule(p.SOLAR_CONTROL, p.SOLAR_EVENT, "solarControlFSCC")
ESS = Schedule(p.ESS_CONTROL, p.ESS_EVENT, "essControlFSCC")
GENERIC = Schedule(p.GENERIC_CONTROL, p.GENERIC_EVENT, "genericControlFSCC")
METER = ReadRequest(p.METER_CONTROL, p.METER_EVENT)

#: twin kind (as in the agent's config) -> its control shape
CONTROLS: Mapping[str, Shape] = {
    "switch": SWITCH,
    "breaker": BREAKER,
    "recloser": RECLOSER,
    "solar": SOLAR,
    "ess": ESS,
    "generic": GENERIC,
    "meter": METER,
}
