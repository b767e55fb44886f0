"""Report-by-exception: deadbands against the last *reported* value, quality, integrity period.

A field is reported when any of these holds:

* it has never been reported;
* its quality differs from the last reported quality (always, whatever the deadband);
* a boolean or integer-coded state (``kind="state"``) differs at all;
* a number differs from the last **reported** value by more than its deadband -- absolute
  (``deadband_abs``, in the field's units) or percent of the configured range
  (``deadband_pct`` x (high - low) / 100); with neither, any change is reported;
* the integrity period has passed since it was last reported.

``min_interval_s`` holds back a chattering field: a value change (not a quality change) is not
reported sooner than that after the field's previous report. Comparing with the last reported
value (OPC UA's definition, not the previous sample) means a slow ramp is still reported step by
step. The filter never looks at the clock itself: callers pass ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edgetwin.core.models import Quality, Reading, Value


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """How one field is reported. ``range`` is (low, high), needed for ``deadband_pct``."""

    deadband_abs: float | None = None
    deadband_pct: float | None = None
    range: tuple[float, float] | None = None
    integrity_period_s: float | None = 300.0
    min_interval_s: float = 0.0
    kind: str = "analog"  # "analog" | "state" | "counter"

    def __post_init__(self) -> None:
        if self.deadband_pct is not None and self.range is None:
            raise ValueError("deadband_pct needs a range (low, high)")

    @property
    def threshold(self) -> float:
        """The absolute change that must be exceeded; 0 means any change."""
        if self.deadband_abs is not None:
            return self.deadband_abs
        if self.deadband_pct is not None and self.range is not None:
            low, high = self.range
            return self.deadband_pct / 100.0 * (high - low)
        return 0.0


@dataclass(slots=True)
class _Reported:
    value: Value
    quality: Quality
    at: float


def _changed(policy: ReportPolicy, old: Value, new: Value) -> bool:
    if old is None or new is None or isinstance(new, bool) or isinstance(old, bool):
        return old != new
    if policy.kind == "state":
        return old != new
    return abs(float(new) - float(old)) > policy.threshold


class ReportByException:
    """The report filter of one twin: ``policies`` per field, ``default`` for the rest."""

    def __init__(
        self, policies: Mapping[str, ReportPolicy], default: ReportPolicy | None = None
    ) -> None:
        self._policies = dict(policies)
        self._default = default or ReportPolicy()
        self._last: dict[str, _Reported] = {}
        #: field -> (the sample last looked at, when it must be looked at again): a sample that
        #: is the same object as last time can only become due by time (integrity period, a
        #: change held back by min_interval_s), so thousands of steady fields cost a lookup each
        self._looked: dict[str, tuple[Reading, float]] = {}

    def add(self, field: str, policy: ReportPolicy) -> None:
        """Give ``field`` its own policy (e.g. a rule output added after construction)."""
        self._policies[field] = policy
        self._looked.pop(field, None)

    def policy(self, field: str) -> ReportPolicy:
        return self._policies.get(field, self._default)

    def due(self, field: str, sample: Reading, now: float) -> bool:
        """Whether ``sample`` of ``field`` should be reported at ``now`` (no side effect)."""
        last = self._last.get(field)
        if last is None or (sample.quality is not last.quality and sample.quality != last.quality):
            return True
        policy = self.policy(field)
        if policy.integrity_period_s is not None and now - last.at >= policy.integrity_period_s:
            return True
        if now - last.at < policy.min_interval_s:
            return False
        return _changed(policy, last.value, sample.value)

    def select(self, samples: Mapping[str, Reading], now: float) -> list[str]:
        chosen = []
        looked = self._looked
        for field, sample in samples.items():
            seen = looked.get(field)
            if seen is not None and seen[0] is sample and now < seen[1]:
                continue
            if self.due(field, sample, now):
                chosen.append(field)
                self._last[field] = _Reported(sample.value, sample.quality, now)
            looked[field] = (sample, self._recheck_at(field, now))
        return chosen

    def _recheck_at(self, field: str, now: float) -> float:
        """When an unchanged sample of ``field`` may next be due: its integrity period, or the
        end of ``min_interval_s`` while a change is held back."""
        last, policy = self._last[field], self.policy(field)
        at = float("inf")
        if policy.integrity_period_s is not None:
            at = last.at + policy.integrity_period_s
        if now - last.at < policy.min_interval_s:
            at = min(at, last.at + policy.min_interval_s)
        return at

    def forget(self) -> None:
        """Report everything at the next selection (e.g. after a rebirth request)."""
        self._last.clear()
        self._looked.clear()
