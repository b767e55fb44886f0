"""The simulated meter's physics: consistent quantities, growing energy, outage behaviour."""

from __future__ import annotations

import math

import pytest

from edgetwin.firmware_sim.meter_model import PHASES, MeterModel


def test_quantities_are_mutually_consistent_over_a_day() -> None:
    model = MeterModel(seed=7)
    for t in range(0, 86_400, 900):
        st = model.step(float(t))
        for ph in PHASES:
            assert 0.97 * 277 < st.volts[ph] < 1.03 * 277
            assert st.va[ph] == pytest.approx(st.volts[ph] * st.amps[ph], rel=1e-9)
            assert st.watts[ph] == pytest.approx(st.va[ph] * st.pf[ph], rel=1e-9)
            assert math.hypot(st.watts[ph], st.vars[ph]) == pytest.approx(st.va[ph], rel=1e-9)
        assert st.watts["net"] == pytest.approx(sum(st.watts[p] for p in PHASES))
        assert 59.9 < st.hz < 60.1
        assert st.amps["neut"] < max(st.amps[p] for p in PHASES)  # imbalance only


def test_energy_only_grows_by_power_times_time() -> None:
    model = MeterModel(seed=3)
    model.step(0.0)
    last = model.state.import_wh
    for t in range(1, 600):
        st = model.step(float(t))
        assert st.import_wh >= last
        assert st.import_wh - last == pytest.approx(st.watts["net"] / 3600, rel=1e-9)
        last = st.import_wh


def test_outage_drops_voltage_current_and_frequency() -> None:
    model = MeterModel()
    model.voltage_factor = 0.0
    st = model.step(0.0)
    assert all(st.volts[p] == 0 and st.amps[p] == 0 for p in PHASES) and st.hz == 0.0


def test_same_seed_same_values() -> None:
    a, b = MeterModel(seed=5), MeterModel(seed=5)
    assert [a.step(float(t)).watts["net"] for t in range(10)] == [
        b.step(float(t)).watts["net"] for t in range(10)
    ]
