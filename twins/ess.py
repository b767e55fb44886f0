"""Battery / energy storage (ESS) twin: ``ESSReadingProfile`` and ``ESSStatusProfile`` from the
point map, operating state and health derived, and ``ESSControlProfile`` schedules.

Inputs (point-map fields, not published): ``@St`` -- the operating state as the EdgeTwin ESS
state enum (0 off, 1 standby, 2 charging, 3 discharging, 4 fault; a device with another enum
maps it with its point map's transform or a custom twin) -- and optionally ``@Fault``.
``essStatusZBAT.Soc`` (state of charge, %) comes straight from the map. Derived:

* ``essStatusZBAT.BatSt``: the battery system is on (not off and not faulted);
* under ``essStatusZGEN.eSSEventAndStatusZGEN`` (``twins.solar.unit_status``): ``GnSynSt``
  while charging or discharging, ``PointStatus.state`` (``on`` charging / discharging,
  ``standby``, ``off``), ``EEHealth`` (``Alarm`` in fault state or with the fault flag).

Control: schedules through ``essControl.essControlFSCC`` (``twins.control.ScheduleControl``);
a point map offers e.g. ``@set.W_net_mag`` (active power, positive discharges). Results are
``ESSEventProfile`` events.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgetwin.core.models import Reading
from edgetwin.twins.base import PointMapTwin, combine
from edgetwin.twins.control import ScheduleControl
from edgetwin.twins.solar import unit_status
from edgetwin.wire.control import ESS
from edgetwin.wire.openfmb import (
    ESS_READING,
    ESS_STATUS,
    ESS_ZBAT,
    ESS_ZGEN,
)

OFF, STANDBY, CHARGING, DISCHARGING, FAULT = range(5)
BAT_ST = f"{ESS_ZBAT}.BatSt"


class EssTwin(PointMapTwin, ScheduleControl):
    profiles = (ESS_READING, ESS_STATUS)
    #: every status field but Soc, which the point map feeds
    derived_fields = dict.fromkeys(
        (f for f in ESS_STATUS.fields if f != f"{ESS_ZBAT}.Soc"), "state"
    )
    control = ESS
    control_profile = ESS.control
    event_profile = ESS.event

    def derive(self, samples: Mapping[str, Reading]) -> dict[str, Reading]:
        st = samples.get("@St")
        if st is None:
            return {}
        state = int(st.value) if st.value is not None else None
        fault = samples.get("@Fault")
        out = unit_status(
            ESS_ZGEN,
            [st] + ([fault] if fault is not None else []),
            producing=state in (CHARGING, DISCHARGING),
            state="on"
            if state in (CHARGING, DISCHARGING)
            else "standby"
            if state == STANDBY
            else "off",
            alarm=state == FAULT or bool(fault is not None and fault.value),
        )
        out[BAT_ST] = combine([st], state not in (OFF, FAULT, None), BAT_ST)
        return out
