"""Quality rules, applied to every point as the twin ingests it (before any other rule):

* **old data**: a point whose value has not been refreshed for ``old_after_polls`` polls of its
  device -- its source timestamp did not advance, as when an OPC UA server stops updating a
  variable while the subscription still answers -- is marked ``questionable`` + ``oldData``;
* **out of range**: a number outside the point's physical ``range`` (from its point map) is
  marked ``questionable`` + ``outOfRange``, its value kept for the technician to see.

Both clear by themselves with the next fresh or in-range value. The flags are added to what
the driver said; an invalid sample is left as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from edgetwin.core.models import Quality, Validity, Value


class QualitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    old_after_polls: int | None = Field(3, ge=1, description="None: never mark oldData")
    range_check: bool = True


_FLAGGED: dict[tuple[Quality, str], Quality] = {}


def flagged(quality: Quality, flag: str) -> Quality:
    """``quality`` with ``flag`` set; good becomes questionable. The same object for the same
    result, so comparing qualities (report-by-exception does, at every sample) stays cheap."""
    key = (quality, flag)
    out = _FLAGGED.get(key)
    if out is None:
        validity = Validity.QUESTIONABLE if quality.is_good else quality.validity
        out = Quality(validity, quality.detail | {flag}, quality.source, quality.test,
                      quality.operator_blocked)  # fmt: skip
        if len(_FLAGGED) < 1024:  # the combinations are few; never grow without bound
            _FLAGGED[key] = out
    return out


@dataclass(slots=True)
class _Seen:
    ts: float
    polls: int = 0  # polls since ``ts`` advanced


class QualityRules:
    """The quality rules of one twin; ``ranges`` are the points' physical ranges by field."""

    def __init__(
        self, settings: QualitySettings, ranges: Mapping[str, tuple[float, float] | None]
    ) -> None:
        self.old_after = settings.old_after_polls
        self.ranges = (
            {f: r for f, r in ranges.items() if r is not None} if settings.range_check else {}
        )
        self._seen: dict[str, _Seen] = {}

    def check(self, field: str, value: Value, quality: Quality, ts: float) -> Quality:
        """The quality of a sample of ``field`` arriving with this poll."""
        if quality.validity is Validity.INVALID:
            self._seen.pop(field, None)
            return quality
        if self.old_after is not None:
            seen = self._seen.get(field)
            if seen is None:
                self._seen[field] = _Seen(ts)
            elif ts > seen.ts:
                seen.ts, seen.polls = ts, 0
            else:
                seen.polls += 1
                if seen.polls >= self.old_after:
                    quality = flagged(quality, "oldData")
        rng = self.ranges.get(field)
        if (
            rng is not None
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and not rng[0] <= value <= rng[1]
        ):
            quality = flagged(quality, "outOfRange")
        return quality
