"""Meter twin: an OpenFMB ``MeterReadingProfile`` (readingMMXU, readingMMTR) from a point map.

Everything a meter reports is described by its point map, so this module only names the profile.
Published on ``<prefix>/metermodule/MeterReadingProfile/<mRID>``; rule events (alarms, demand,
settlement reads) on ``<prefix>/metermodule/MeterEventProfile/<mRID>``. A meter twin accepts
``read`` on ``MeterControlProfile``: an on-demand read (move-in, move-out) of registers named by
OBIS code, answered with the values as the command's result (``twins.control.ReadControl``).
"""

from __future__ import annotations

from typing import ClassVar

from edgetwin.twins.base import PointMapTwin
from edgetwin.twins.control import ReadControl
from edgetwin.wire.control import METER, ReadRequest
from edgetwin.wire.openfmb import METER_CONTROL, METER_EVENT, METER_READING


class MeterTwin(ReadControl, PointMapTwin):
    profiles = (METER_READING,)
    event_profile = METER_EVENT  # alarms and analytics events (EdgeTwin extension)
    control_profile = METER_CONTROL  # on-demand reads (``twins.control.ReadControl``)
    control: ClassVar[ReadRequest] = METER
