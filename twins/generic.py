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

from edgetwin.twins.base import INPUT, PointMapTwin, TwinSpec
from edgetwin.twins.control import ScheduleControl
from edgetwin.wire.control import GENERIC
from edgetwin.wire.openfmb import GENERIC_MODULE, Profile


def reading_profile(spec: TwinSpec) -> Profile:
    fields = {
        e.field: "SPS" if e.dtype == "bool" else "BCR" if e.kind == "counter" else "MV"
        for e in spec.points
        if not e.field.startswith(INPUT)
    }
    return Profile(
        GENERIC_MODULE,
        "GenericReadingProfile",
        "readingMessageInfo",
        "asset",
        "genericReading",
        fields,
    )


class GenericTwin(PointMapTwin, ScheduleControl):
    control = GENERIC
    control_profile = GENERIC.control
    event_profile = GENERIC.event

    def __init__(self, spec: TwinSpec) -> None:
        self.profiles = (reading_profile(spec),)  # type: ignore[misc]
        super().__init__(spec)
