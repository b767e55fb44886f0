"""Physics of a simulated three-phase revenue meter (480Y/277 V, 60 Hz), independent of Modbus.

A load profile (daily shape plus slow random walk) drives the apparent power per phase; voltages
carry small noise; currents, W, VAr, VA and PF per phase are derived so that they agree with each
other (VA = V * I, W = VA * PF, VAr = sqrt(VA^2 - W^2)); totals are sums; energy registers
integrate power over the elapsed time and so only ever grow. Deterministic for a given seed and
sequence of times.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

PHASES = ("phsA", "phsB", "phsC")


@dataclass
class MeterState:
    """One consistent snapshot of the meter's measurements (SI units, Wh for energy)."""

    volts: dict[str, float] = field(default_factory=dict)
    amps: dict[str, float] = field(default_factory=dict)
    watts: dict[str, float] = field(default_factory=dict)
    vars: dict[str, float] = field(default_factory=dict)
    va: dict[str, float] = field(default_factory=dict)
    pf: dict[str, float] = field(default_factory=dict)
    hz: float = 60.0
    import_wh: float = 0.0
    export_wh: float = 0.0
    import_varh: float = 0.0


class MeterModel:
    """Advance with ``step(now)``; read ``state``. ``nominal_v`` is line-to-neutral."""

    def __init__(
        self,
        *,
        seed: int = 1,
        nominal_v: float = 277.0,
        nominal_hz: float = 60.0,
        peak_kva: float = 150.0,
        start_energy_wh: float = 12_345_678.0,
    ) -> None:
        self._rng = random.Random(seed)
        self.nominal_v = nominal_v
        self.nominal_hz = nominal_hz
        self.peak_kva = peak_kva
        self._walk = 0.0
        self._last: float | None = None
        self.state = MeterState(import_wh=start_energy_wh, import_varh=start_energy_wh / 4)
        self.voltage_factor = 1.0  # tests and fault scenarios set this (0 = outage)
        self._imbalance = {"phsA": 1.0, "phsB": 0.93, "phsC": 1.06}

    def _load_fraction(self, now: float) -> float:
        hour = (now / 3600.0) % 24.0
        daily = 0.55 + 0.35 * math.sin((hour - 9.0) / 24.0 * 2 * math.pi)
        self._walk = max(-0.15, min(0.15, self._walk + self._rng.gauss(0, 0.01)))
        return max(0.05, min(1.0, daily + self._walk))

    def step(self, now: float) -> MeterState:
        """Advance the model to ``now`` (seconds) and return the new state."""
        st = self.state
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        load = self._load_fraction(now)
        for ph in PHASES:
            v = self.nominal_v * self.voltage_factor * (1 + self._rng.gauss(0, 0.002))
            va = 0.0 if v < 1.0 else self.peak_kva * 1000 / 3 * load * self._imbalance[ph]
            pf = min(0.999, max(0.80, 0.95 + self._rng.gauss(0, 0.01)))
            st.volts[ph] = v
            st.va[ph] = va
            st.amps[ph] = va / v if v >= 1.0 else 0.0
            st.pf[ph] = pf if va else 1.0
            st.watts[ph] = va * st.pf[ph]
            st.vars[ph] = math.sqrt(max(0.0, va * va - st.watts[ph] ** 2))
        st.volts["net"] = sum(st.volts[p] for p in PHASES) / 3
        for quantity in (st.watts, st.vars, st.va):
            quantity["net"] = sum(quantity[p] for p in PHASES)
        st.pf["net"] = st.watts["net"] / st.va["net"] if st.va["net"] else 1.0
        # neutral current: phasor sum of three currents 120 degrees apart
        re = sum(st.amps[p] * math.cos(k * 2 * math.pi / 3) for k, p in enumerate(PHASES))
        im = sum(st.amps[p] * math.sin(k * 2 * math.pi / 3) for k, p in enumerate(PHASES))
        st.amps["neut"] = math.hypot(re, im)
        st.hz = self.nominal_hz + self._rng.gauss(0, 0.01) if self.voltage_factor > 0 else 0.0
        st.import_wh += st.watts["net"] * dt / 3600.0
        st.import_varh += st.vars["net"] * dt / 3600.0
        return st
