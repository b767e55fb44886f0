"""Generic twin, for assets no OpenFMB profile fits (a transformer monitor, a weather station,
a relay's spare I/O): every published point-map field goes to one ``GenericReadingProfile`` on
``<prefix>/genericmodule/GenericReadingProfile/<mRID>`` -- an EdgeTwin extension shaped like
OpenFMB reading profiles, with the field names the point map chooses.

A field's value type follows its point: ``bool`` -> ``SPS``, ``counter`` -> ``BCR``, anything
else -> ``MV``. Setpoints: ``@set.<name>`` fields are written by ``GenericControlProfile``
schedules (``twins.control.ScheduleControl``; a single curve point starting now is an
immediate setpoint), with results on ``GenericEventProfile``.
"""

from __future__ import annotations

from twins.base import INPUT, PointMapTwin, TwinSpec
from twins.control import ScheduleControl
from twins.profiles import Profile

MODULE = "genericmodule"
GENERIC_EVENT = Profile(
    MODULE, "GenericEventProfile", "eventMessageInfo", "asset", "genericEvent", {}
)
GENERIC_CONTROL = Profile(
    MODULE, "GenericControlProfile", "controlMessageInfo", "asset", "genericControl", {}
)


def reading_profile(spec: TwinSpec) -> Profile:
    fields = {
        e.field: "SPS" if e.dtype == "bool" else "BCR" if e.kind == "counter" else "MV"
        for e in spec.points
        if not e.field.startswith(INPUT)
    }
    return Profile(
        MODULE, "GenericReadingProfile", "readingMessageInfo", "asset", "genericReading", fields
    )


class GenericTwin(PointMapTwin, ScheduleControl):
    control_profile = GENERIC_CONTROL
    event_profile = GENERIC_EVENT
    control_fscc = "genericControlFSCC"

    def __init__(self, spec: TwinSpec) -> None:
        self.profiles = (reading_profile(spec),)  # type: ignore[misc]
        super().__init__(spec)
