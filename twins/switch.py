"""Switch, breaker and recloser twins: position and health from the point map, and control.

Inputs (point-map fields, not published): the position, either ``@DPos`` -- a double point as a
real breaker reports it (IEC 61850 Dbpos: 0 intermediate, 1 open, 2 closed, 3 bad state; DNP3
double-bit input, IEC 104 M_DP, an OPC UA 0-3 position) -- or ``@Pos`` (true = closed);
optionally ``@Cmd``, the separate command point (true = close), and ``@Fault`` (a protection
fault flag), ``@Transient`` (the mechanism is moving) and ``@OpCnt`` (the operations counter).
Derived, in the status profile under the type's logical node (``switchStatusXSWI`` for a switch,
``statusAndEventXCBR`` for a breaker or recloser): ``Pos`` (``closed`` / ``open`` /
``transient`` (intermediate), or ``invalid`` -- with the input's quality -- when the position is
not known, e.g. the device does not answer, or the double point says bad state), ``EEHealth``
(``Alarm`` while the fault flag is set) and ``OpCnt``. Currents and voltages, if mapped, go to
the reading profile. One point map serves all three types.

Control (``twins.control.DiscreteControl``): ``open`` / ``close`` on the type's discrete
control profile; executing one writes ``@Cmd`` and waits for the position to reach the
commanded state, or, without a command point, writes ``@Pos`` and reads it back. Results are
events on the type's event profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from edgetwin.core.models import Reading
from edgetwin.twins.base import PointMapTwin, combine
from edgetwin.twins.control import DiscreteControl
from edgetwin.wire.control import BREAKER, RECLOSER, SWITCH, Discrete
from edgetwin.wire.openfmb import (
    BREAKER_READING,
    BREAKER_STATUS,
    RECLOSER_READING,
    RECLOSER_STATUS,
    SWITCH_READING,
    SWITCH_STATUS,
    Profile,
)

#: a double point's state -> OpenFMB DbPosKind
DBPOS_NAMES = {0: "transient", 1: "open", 2: "closed", 3: "invalid"}


class SwitchTwin(PointMapTwin, DiscreteControl):
    profiles = (SWITCH_READING, SWITCH_STATUS)
    control: ClassVar[Discrete] = SWITCH
    control_profile: ClassVar[Profile] = SWITCH.control
    event_profile: ClassVar[Profile] = SWITCH.event
    status_ln: ClassVar[str] = "switchStatusXSWI"
    derived_fields = dict.fromkeys(SWITCH_STATUS.fields, "state")  # all derived

    def derive(self, samples: Mapping[str, Reading]) -> dict[str, Reading]:
        ln = self.status_ln
        out: dict[str, Reading] = {}
        count = samples.get("@OpCnt")
        if count is not None:
            out[f"{ln}.OpCnt"] = combine([count], count.value, f"{ln}.OpCnt")
        dpos = samples.get("@DPos")
        pos = samples.get("@Pos")
        if dpos is not None:
            good = dpos.quality.is_good
            name = DBPOS_NAMES.get(dpos.value, "invalid") if good else "invalid"  # type: ignore[arg-type]
            out[f"{ln}.Pos"] = Reading(f"{ln}.Pos", name, dpos.quality, dpos.ts)  # type: ignore[arg-type]
        elif pos is not None:
            moving = samples.get("@Transient")
            if moving is not None and moving.value:
                name = "transient"
            else:
                name = "closed" if pos.value else "open"
            inputs = [pos] + ([moving] if moving else [])
            derived = combine(inputs, name, f"{ln}.Pos")
            if not derived.quality.is_good:  # DbPosKind says so itself: the position is unknown
                derived = Reading(derived.point, "invalid", derived.quality, derived.ts)  # type: ignore[arg-type]
            out[f"{ln}.Pos"] = derived
        fault = samples.get("@Fault")
        if fault is not None:
            health = f"{ln}.logicalNodeForEventAndStatus.EEHealth"
            out[health] = combine([fault], "Alarm" if fault.value else "OK", health)
        return out


class BreakerTwin(SwitchTwin):
    profiles = (BREAKER_READING, BREAKER_STATUS)
    control = BREAKER
    control_profile = BREAKER.control
    event_profile = BREAKER.event
    status_ln = "statusAndEventXCBR"
    derived_fields = dict.fromkeys(BREAKER_STATUS.fields, "state")


class RecloserTwin(SwitchTwin):
    profiles = (RECLOSER_READING, RECLOSER_STATUS)
    control = RECLOSER
    control_profile = RECLOSER.control
    event_profile = RECLOSER.event
    status_ln = "statusAndEventXCBR"
    derived_fields = dict.fromkeys(RECLOSER_STATUS.fields, "state")
