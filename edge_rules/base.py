"""Contracts for edge rules.

A ``ReportFilter`` decides which of a twin's fields leave the twin now. The twin calls
``select`` after every ingest and on the runtime's reporting tick, from one task at a time; the
filter keeps its own memory of what it last reported, so the twin need not.

The other rule contracts live with what runs them: ``edge_rules.engine.Rule`` (threshold,
derived, rate, stats and the analytics), ``edge_rules.quality.QualityRules`` (applied at ingest)
and ``edge_rules.interlock.Interlock`` (checked by the control path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from edgetwin.core.models import Reading


class ReportFilter(Protocol):
    def select(self, samples: Mapping[str, Reading], now: float) -> list[str]:
        """Return the fields of ``samples`` to report now, and remember them as reported."""
        ...
