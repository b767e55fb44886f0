"""The report filter skips a steady sample (the same reading as at the last selection) until it
can be due by time alone; property: it chooses exactly what checking every sample would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgetwin.core.models import GOOD, Quality, Reading, Validity
from edgetwin.edge_rules.deadband import ReportByException, ReportPolicy, _Reported

BAD = Quality(Validity.INVALID)
POLICIES = {
    "a": ReportPolicy(deadband_abs=1.0, integrity_period_s=5.0),
    "b": ReportPolicy(deadband_abs=0.5, integrity_period_s=None, min_interval_s=2.0),
    "s": ReportPolicy(kind="state", integrity_period_s=3.0, min_interval_s=1.0),
}

steps = st.lists(
    st.tuples(
        st.floats(0, 4),  # time advance
        st.dictionaries(  # fields given a new reading this step; the others keep theirs
            st.sampled_from(sorted(POLICIES)),
            st.tuples(st.integers(-3, 3), st.booleans()),
        ),
    ),
    max_size=40,
)


class FullCheck(ReportByException):
    """The straightforward filter: every sample checked at every selection."""

    def select(self, samples: dict[str, Reading], now: float) -> list[str]:  # type: ignore[override]
        chosen = [f for f, r in samples.items() if self.due(f, r, now)]
        for f in chosen:
            self._last[f] = _Reported(samples[f].value, samples[f].quality, now)
        return chosen


@settings(max_examples=300)
@given(steps)
def test_skipping_steady_samples_chooses_what_a_full_check_chooses(plan: list) -> None:
    fast, reference = ReportByException(POLICIES), FullCheck(POLICIES)
    samples = {f: Reading(f, 0, GOOD, 0.0) for f in POLICIES}
    now = 0.0
    for advance, new in plan:
        now += advance
        for field, (value, good) in new.items():
            samples[field] = Reading(field, value, GOOD if good else BAD, now)
        assert fast.select(samples, now) == reference.select(samples, now)
