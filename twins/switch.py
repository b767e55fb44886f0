"""Switch / breaker / recloser twin: position and health from the point map, and control.

Inputs (point-map fields, not published): ``@Pos`` -- the position, true = closed -- and
optionally ``@Fault`` (a protection fault flag) and ``@Transient`` (the mechanism is moving).
Derived, in ``SwitchStatusProfile``: ``Pos`` (``closed`` / ``open`` / ``transient`` /
``invalid``) and ``EEHealth`` (``Alarm`` while the fault flag is set). Readings of currents and
voltages, if mapped, go to ``SwitchReadingProfile``.

Control: the twin listens to ``SwitchDiscreteControlProfile`` on its mRID. A command's action is
``open`` or ``close`` (``switchDiscreteControlXSWI.Pos.ctlVal`` false / true); executing it
writes ``@Pos`` and confirms by reading it back. Results are ``SwitchEventProfile`` events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from agent.models import Reading
from twins.base import PointMapTwin
from twins.profiles import SWITCH_CONTROL, SWITCH_EVENT, SWITCH_READING, SWITCH_STATUS, Profile
from twins.solar import _combine

POS = "switchStatusXSWI.Pos"
HEALTH = "switchStatusXSWI.logicalNodeForEventAndStatus.EEHealth"


class SwitchTwin(PointMapTwin):
    profiles = (SWITCH_READING, SWITCH_STATUS)
    derived_fields = {POS: "state", HEALTH: "state"}
    control_profile: ClassVar[Profile] = SWITCH_CONTROL
    event_profile: ClassVar[Profile] = SWITCH_EVENT
    #: action -> (input field written, value)
    controls: ClassVar[dict[str, tuple[str, Any]]] = {
        "open": ("@Pos", False),
        "close": ("@Pos", True),
    }

    def derive(self, samples: Mapping[str, Reading]) -> dict[str, Reading]:
        pos = samples.get("@Pos")
        if pos is None:
            return {}
        moving = samples.get("@Transient")
        if moving is not None and moving.value:
            name = "transient"
        else:
            name = "closed" if pos.value else "open"
        out = {POS: _combine([pos] + ([moving] if moving else []), name, POS)}
        fault = samples.get("@Fault")
        if fault is not None:
            out[HEALTH] = _combine([fault], "Alarm" if fault.value else "OK", HEALTH)
        return out

    @staticmethod
    def action_of(control: Mapping[str, Any]) -> str | None:
        """The action a SwitchDiscreteControlProfile map asks for, or None if it asks none."""
        try:
            ctl = control["switchDiscreteControl"]["switchDiscreteControlXSWI"]["Pos"]["ctlVal"]
        except (KeyError, TypeError):
            return None
        return "close" if ctl is True else "open" if ctl is False else None
