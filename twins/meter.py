"""Meter twin: an OpenFMB ``MeterReadingProfile`` (readingMMXU, readingMMTR) from a point map.

Everything a meter reports is described by its point map, so this module only names the profile.
Published on ``<prefix>/metermodule/MeterReadingProfile/<mRID>``; rule events (alarms, demand,
settlement reads) on ``<prefix>/metermodule/MeterEventProfile/<mRID>``.
"""

from __future__ import annotations

from edgetwin.twins.base import PointMapTwin
from edgetwin.wire.openfmb import METER_EVENT, METER_READING


class MeterTwin(PointMapTwin):
    profiles = (METER_READING,)
    event_profile = METER_EVENT  # alarms and analytics events (EdgeTwin extension)
