"""The control contract between twins and the agent: what a twin accepts and what it means.

A controllable twin names the profile it listens to (``control_profile``), the one its command
results go to (``event_profile``), the actions it accepts (``actions()``, from its point map:
a twin whose map has no writable input offers none), and turns a control profile map into a
``Command``: writes to point-map input fields, now (``writes``) or at times (``schedule``).
The shape of each kind's control map (``wire.control``) is shared with the central side, which
builds commands from it (``central.command``). No I/O here: ``agent.runtime.control``
checks commands and executes their writes; ``agent.runtime.schedule`` runs schedules.

Two families:

* ``DiscreteControl`` (switch, breaker, recloser): ``open`` / ``close`` through
  ``<body>.<ln>.Pos.ctlVal`` (false / true). A point map with a command point ``@Cmd`` (a DNP3
  CROB, an IEC 104 double command, an OPC UA Command node, a Modbus command register) writes it
  and confirms the command when the position (``@DPos``, a double point, or ``@Pos``) reaches
  the commanded state; without one, ``@Pos`` is written and read back.
* ``ScheduleControl`` (solar, ESS, generic setpoints): OpenFMB's
  ``<body>.<fscc>.controlFSCC.controlScheduleFSCH.ValACSG.schPts`` -- curve points, each with a
  ``startTime`` and ``scheduleParameter`` entries ``{scheduleParameterType, value}``. The twin
  writes a parameter to its point-map field ``@set.<scheduleParameterType>`` (e.g.
  ``@set.W_net_mag``), which is also what makes the parameter accepted. Start times must be
  strictly increasing (else ``out_of_order``), values finite and inside the point's ``range``
  (else ``out_of_range``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from edgetwin.twins.base import BoundPoint, TwinSpec, TwinState
from edgetwin.wire.control import Discrete, ReadRequest, Schedule
from edgetwin.wire.openfmb import Profile

SETPOINT = "@set."  # prefix of point-map fields a schedule parameter writes
MAX_CURVE_POINTS = 288  # a day at 5-minute resolution


@dataclass(frozen=True, slots=True)
class Confirm:
    """What confirms a write to a command point: ``field`` reading ``value`` (the position
    reaching the commanded state), within the control's ``operate_timeout_s``."""

    field: str
    value: bool | int | float


@dataclass(frozen=True, slots=True)
class Write:
    field: str  # the point-map field written, e.g. "@Pos" or "@set.W_net_mag"
    value: bool | int | float  # in engineering units (the point's transform is undone)
    #: None: the written point itself is read back and must hold ``value``
    confirm: Confirm | None = None


@dataclass(frozen=True, slots=True)
class CurvePoint:
    start: float  # seconds since the epoch
    writes: tuple[Write, ...]


@dataclass(frozen=True, slots=True)
class Command:
    action: str
    writes: tuple[Write, ...] = ()  # executed at once
    schedule: tuple[CurvePoint, ...] = ()  # replaces the schedule in force, runs at its times
    #: ``read``: the OBIS codes to read now (empty: every register the twin maps)
    reads: tuple[str, ...] | None = None


class BadCommand(ValueError):
    """A control map this twin cannot accept; ``reason`` is the refusal reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class Controllable(Protocol):
    control_profile: ClassVar[Profile]
    event_profile: ClassVar[Profile]
    spec: TwinSpec

    def actions(self) -> tuple[str, ...]: ...

    def parse_command(self, body: Mapping[str, Any]) -> Command: ...

    def bound_points(self) -> Sequence[BoundPoint]: ...

    def state(self) -> TwinState: ...


def is_controllable(twin: object) -> bool:
    return hasattr(twin, "control_profile") and bool(getattr(twin, "actions", tuple)())


MAX_MRID_CHARS = 64  # a UUID has 36
MAX_START_S = 2**40  # curve point start times: about the year 36,800


@dataclass(frozen=True, slots=True)
class Frame:
    """What every control map carries besides the command: its own mRID and the twin's."""

    command_mrid: str | None
    equipment_mrid: str


def parse_frame(body: Any, profile: Profile) -> Frame:
    """The frame of a control map for ``profile`` -- ``controlMessageInfo.messageInfo.
    identifiedObject.mRID`` (optional) and ``<equipment>.conductingEquipment.mRID`` -- each
    checked for type and length; raises ``BadCommand('malformed', ...)``."""
    if not isinstance(body, Mapping):
        raise BadCommand("malformed", "the payload is not a control profile map")
    equipment = _dig(body, (profile.equipment, "conductingEquipment", "mRID"))
    if not isinstance(equipment, str) or len(equipment) > MAX_MRID_CHARS:
        raise BadCommand(
            "malformed", f"{profile.equipment}.conductingEquipment.mRID must be a short string"
        )
    command = None
    info = body.get(profile.message_info)
    if info is not None:
        command = _dig(info, ("messageInfo", "identifiedObject", "mRID"))
        if not isinstance(command, str) or len(command) > MAX_MRID_CHARS:
            raise BadCommand("malformed", "the command's mRID must be a short string")
    return Frame(command, equipment)


def _dig(node: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            raise BadCommand("malformed", f"no {'.'.join(path)} in the control map")
        node = node[key]
    return node


#: IEC 61850 Dbpos of a double-point position (``@DPos``): 0 intermediate, 1 open, 2 closed,
#: 3 bad state
DBPOS_OPEN, DBPOS_CLOSED = 1, 2


class DiscreteControl:
    """``open`` / ``close`` (``wire.control.Discrete``): writes ``@Cmd`` (confirmed by the
    position) or ``@Pos`` (read back)."""

    control: ClassVar[Discrete]
    spec: TwinSpec

    def bound_points(self) -> Sequence[BoundPoint]:
        raise NotImplementedError

    def _fields(self) -> set[str]:
        return {bp.field for bp in self.bound_points()}

    def actions(self) -> tuple[str, ...]:
        fields = self._fields()
        operable = "@Pos" in fields or ("@Cmd" in fields and fields & {"@DPos", "@Pos"})
        return ("open", "close") if operable else ()

    def parse_command(self, body: Mapping[str, Any]) -> Command:
        ctl = _dig(body, self.control.path())
        if not isinstance(ctl, bool):
            raise BadCommand("malformed", f"Pos.ctlVal must be true or false, not {ctl!r}")
        if not self.actions():
            raise BadCommand(
                "unknown_action", "this twin's point map has no writable @Pos and no @Cmd"
            )
        action = "close" if ctl else "open"
        fields = self._fields()
        if "@Cmd" not in fields:
            return Command(action, writes=(Write("@Pos", ctl),))
        if "@DPos" in fields:
            confirm = Confirm("@DPos", DBPOS_CLOSED if ctl else DBPOS_OPEN)
        else:
            confirm = Confirm("@Pos", ctl)
        return Command(action, writes=(Write("@Cmd", ctl, confirm),))


MAX_READ_REGISTERS = 32
OBIS = re.compile(r"\d{1,3}(\.\d{1,3}){5}")


class ReadControl:
    """``read`` (``wire.control.ReadRequest``): an on-demand read of registers by OBIS code."""

    control: ClassVar[ReadRequest]

    def actions(self) -> tuple[str, ...]:
        return ("read",)

    def parse_command(self, body: Mapping[str, Any]) -> Command:
        codes = _dig(body, self.control.path())
        if not isinstance(codes, list) or len(codes) > MAX_READ_REGISTERS:
            raise BadCommand("malformed", f"registers must be a list of at most "
                             f"{MAX_READ_REGISTERS} OBIS codes")  # fmt: skip
        for code in codes:
            if not isinstance(code, str) or not OBIS.fullmatch(code):
                raise BadCommand("malformed", f"{str(code)[:40]!r} is not an OBIS code A.B.C.D.E.F")
        return Command("read", reads=tuple(dict.fromkeys(codes)))


class ScheduleControl:
    """Curve points with start times (``wire.control.Schedule``): writes ``@set.<parameter>``."""

    control: ClassVar[Schedule]
    spec: TwinSpec

    def bound_points(self) -> Sequence[BoundPoint]:
        raise NotImplementedError

    def setpoints(self) -> dict[str, BoundPoint]:
        """Schedule parameter type -> the point it writes."""
        return {
            bp.field.removeprefix(SETPOINT): bp
            for bp in self.bound_points()
            if bp.field.startswith(SETPOINT)
        }

    def actions(self) -> tuple[str, ...]:
        return ("schedule",) if self.setpoints() else ()

    def parse_command(self, body: Mapping[str, Any]) -> Command:
        points = _dig(body, self.control.path())
        if not isinstance(points, list) or not points:
            raise BadCommand("malformed", "schPts must be a non-empty list")
        if len(points) > MAX_CURVE_POINTS:
            raise BadCommand("malformed", f"at most {MAX_CURVE_POINTS} curve points")
        setpoints = self.setpoints()
        curve: list[CurvePoint] = []
        for i, point in enumerate(points):
            start = _start_time(point, i)
            if curve and start <= curve[-1].start:
                raise BadCommand(
                    "out_of_order", f"schPts[{i}] does not start after schPts[{i - 1}]"
                )
            params = point.get("scheduleParameter") if isinstance(point, Mapping) else None
            if not isinstance(params, list) or not params:
                raise BadCommand("malformed", f"schPts[{i}] has no scheduleParameter")
            writes = tuple(_setpoint(setpoints, p, i) for p in params)
            curve.append(CurvePoint(start, writes))
        return Command("schedule", schedule=tuple(curve))


def _start_time(point: Any, i: int) -> float:
    ts = point.get("startTime") if isinstance(point, Mapping) else None
    seconds = ts.get("seconds") if isinstance(ts, Mapping) else None
    nanos = ts.get("nanoseconds", 0) if isinstance(ts, Mapping) else None
    if not _whole(seconds, MAX_START_S) or not _whole(nanos, 999_999_999):
        raise BadCommand(
            "malformed",
            f"schPts[{i}].startTime needs seconds in [0, {MAX_START_S}] and nanoseconds "
            "in [0, 999999999]",
        )
    return seconds + nanos / 1e9  # type: ignore[operator]


def _whole(value: Any, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


def _setpoint(setpoints: Mapping[str, BoundPoint], param: Any, i: int) -> Write:
    if not isinstance(param, Mapping):
        raise BadCommand("malformed", f"schPts[{i}]: a scheduleParameter must be a map")
    kind, value = param.get("scheduleParameterType"), param.get("value")
    bp = setpoints.get(str(kind))
    if bp is None:
        accepted = ", ".join(setpoints) or "none"
        raise BadCommand("unknown_action", f"parameter {kind!r} (this twin accepts {accepted})")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadCommand("malformed", f"schPts[{i}]: {kind} needs a finite number")
    low_high = bp.entry.range
    if low_high is not None and not low_high[0] <= value <= low_high[1]:
        raise BadCommand(
            "out_of_range", f"schPts[{i}]: {kind} = {value} outside [{low_high[0]}, {low_high[1]}]"
        )
    return Write(bp.field, value)
