"""Solar inverter twin: ``SolarReadingProfile`` from the point map, ``SolarStatusProfile`` derived
from the inverter's operating state and event bits (the part data cannot say), and schedules.

Inputs (point-map fields, not published): ``@St`` -- the SunSpec operating state (1 off,
2 sleeping, 3 starting, 4 MPPT, 5 throttled, 6 shutting down, 7 fault, 8 standby) -- and
``@Evt1``, the SunSpec event bitfield (any bit set is a fault or warning condition). Derived
(``unit_status``, shared with the ESS twin):

* ``GnSynSt``: true while producing (MPPT or throttled);
* ``PointStatus.state``: ``on`` (starting, MPPT, throttled), ``standby`` (sleeping, standby),
  ``off`` (off, shutting down, fault);
* ``EEHealth``: ``Alarm`` in fault state or with any event bit set, else ``OK``.

Control: ``SolarControlProfile`` schedules (``twins.control.ScheduleControl``) through
``solarControl.solarControlFSCC``; a point map offers a parameter by mapping
``@set.<parameter>`` (e.g. ``@set.W_net_mag``, an active-power limit). Results are
``SolarEventProfile`` events.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgetwin.core.models import Reading
from edgetwin.twins.base import PointMapTwin, combine
from edgetwin.twins.control import ScheduleControl
from edgetwin.wire.control import SOLAR
from edgetwin.wire.openfmb import SOLAR_READING, SOLAR_STATUS

ZGEN = "solarStatusZGEN.solarEventAndStatusZGEN"
GN_SYN_ST = f"{ZGEN}.GnSynSt"
STATE = f"{ZGEN}.PointStatus.state"
HEALTH = f"{ZGEN}.logicalNodeForEventAndStatus.EEHealth"

PRODUCING = {4, 5}
ON = {3, 4, 5}
STANDBY = {2, 8}
FAULT = 7


def unit_status(
    ln: str, inputs: list[Reading], *, producing: bool, state: str, alarm: bool
) -> dict[str, Reading]:
    """GnSynSt, PointStatus.state and EEHealth of a generating unit, with its inputs' quality."""
    health = f"{ln}.logicalNodeForEventAndStatus.EEHealth"
    return {
        f"{ln}.GnSynSt": combine(inputs[:1], producing, f"{ln}.GnSynSt"),
        f"{ln}.PointStatus.state": combine(inputs[:1], state, f"{ln}.PointStatus.state"),
        health: combine(inputs, "Alarm" if alarm else "OK", health),
    }


class SolarTwin(PointMapTwin, ScheduleControl):
    profiles = (SOLAR_READING, SOLAR_STATUS)
    derived_fields = dict.fromkeys(SOLAR_STATUS.fields, "state")  # all derived
    control = SOLAR
    control_profile = SOLAR.control
    event_profile = SOLAR.event

    def derive(self, samples: Mapping[str, Reading]) -> dict[str, Reading]:
        st = samples.get("@St")
        if st is None:
            return {}
        state = int(st.value) if st.value is not None else None
        evt = samples.get("@Evt1")
        return unit_status(
            ZGEN,
            [st] + ([evt] if evt is not None else []),
            producing=state in PRODUCING,
            state="on" if state in ON else "standby" if state in STANDBY else "off",
            alarm=state == FAULT or bool(evt is not None and evt.value),
        )
