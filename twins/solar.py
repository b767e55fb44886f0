"""Solar inverter twin: ``SolarReadingProfile`` from the point map, ``SolarStatusProfile`` derived
from the inverter's operating state and event bits (the part data cannot say).

Inputs (point-map fields, not published): ``@St`` -- the SunSpec operating state (1 off,
2 sleeping, 3 starting, 4 MPPT, 5 throttled, 6 shutting down, 7 fault, 8 standby) -- and
``@Evt1``, the SunSpec event bitfield (any bit set is a fault or warning condition). Derived:

* ``GnSynSt``: true while producing (MPPT or throttled);
* ``PointStatus.state``: ``on`` (starting, MPPT, throttled), ``standby`` (sleeping, standby),
  ``off`` (off, shutting down, fault);
* ``EEHealth``: ``Alarm`` in fault state or with any event bit set, else ``OK``.

A derived field carries the worst quality of its inputs and the newest of their times.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.models import Reading
from twins.base import PointMapTwin
from twins.profiles import SOLAR_READING, SOLAR_STATUS

ZGEN = "solarStatusZGEN.solarEventAndStatusZGEN"
GN_SYN_ST = f"{ZGEN}.GnSynSt"
STATE = f"{ZGEN}.PointStatus.state"
HEALTH = f"{ZGEN}.logicalNodeForEventAndStatus.EEHealth"

PRODUCING = {4, 5}
ON = {3, 4, 5}
STANDBY = {2, 8}
FAULT = 7


def _combine(inputs: list[Reading], value: object, field: str) -> Reading:
    worst = next((r.quality for r in inputs if not r.quality.is_good), inputs[0].quality)
    ts = max(r.ts for r in inputs)
    return Reading(field, value if worst.is_good else None, worst, ts)  # type: ignore[arg-type]


class SolarTwin(PointMapTwin):
    profiles = (SOLAR_READING, SOLAR_STATUS)
    derived_fields = {GN_SYN_ST: "state", STATE: "state", HEALTH: "state"}

    def derive(self, samples: Mapping[str, Reading]) -> dict[str, Reading]:
        st = samples.get("@St")
        if st is None:
            return {}
        state = int(st.value) if st.value is not None else None
        state_name = "on" if state in ON else "standby" if state in STANDBY else "off"
        out = {
            GN_SYN_ST: _combine([st], state in PRODUCING, GN_SYN_ST),
            STATE: _combine([st], state_name, STATE),
        }
        evt = samples.get("@Evt1")
        inputs = [st] + ([evt] if evt is not None else [])
        alarm = state == FAULT or bool(evt is not None and evt.value)
        out[HEALTH] = _combine(inputs, "Alarm" if alarm else "OK", HEALTH)
        return out
