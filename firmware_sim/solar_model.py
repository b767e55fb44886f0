"""Physics of a simulated three-phase PV inverter: a clear-sky day with passing clouds.

The sun rises at 06:00 and sets at 18:00 (solar time = UTC + ``utc_offset_h``), irradiance
follows a half sine; a cloud process (random walk with occasional dense clouds) dims it. DC power
from the array (``rated_w`` x 1.15 at full sun) passes a 97 % efficient inverter clipped at
``rated_w``; the AC side splits evenly over three 277 V phases at a power factor near 1; energy
integrates AC power and only grows. At night the inverter sleeps (SunSpec state 2), by day it
tracks the maximum power point (state 4). Deterministic for a seed and a sequence of times.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

SLEEPING, MPPT = 2, 4


@dataclass
class SolarState:
    irradiance: float = 0.0  # 0..1 of full sun
    ac_w: float = 0.0
    ac_va: float = 0.0
    ac_var: float = 0.0
    pf: float = 1.0
    volts: dict[str, float] = field(default_factory=dict)
    amps: dict[str, float] = field(default_factory=dict)
    hz: float = 60.0
    dc_v: float = 0.0
    dc_a: float = 0.0
    dc_w: float = 0.0
    wh: float = 0.0
    temp_c: float = 25.0
    state: int = SLEEPING


class SolarModel:
    def __init__(
        self,
        *,
        seed: int = 1,
        rated_w: float = 10_000.0,
        utc_offset_h: float = 0.0,
        start_wh: float = 1_000_000.0,
    ) -> None:
        self._rng = random.Random(seed)
        self.rated_w = rated_w
        self.utc_offset_h = utc_offset_h
        self.cloud = 0.0
        self._last: float | None = None
        self.state = SolarState(wh=start_wh)

    def _sun(self, now: float) -> float:
        hour = (now / 3600.0 + self.utc_offset_h) % 24.0
        return max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0)) if 6.0 < hour < 18.0 else 0.0

    def step(self, now: float) -> SolarState:
        st = self.state
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        if self._rng.random() < 0.01:
            self.cloud = self._rng.uniform(0.4, 0.8)  # a dense cloud arrives
        self.cloud = min(0.9, max(0.0, self.cloud * 0.98 + self._rng.gauss(0, 0.01)))
        st.irradiance = self._sun(now) * (1.0 - self.cloud)
        st.dc_w = self.rated_w * 1.15 * st.irradiance
        st.ac_w = min(self.rated_w, st.dc_w * 0.97)
        st.state = MPPT if st.ac_w > 1.0 else SLEEPING
        st.pf = 0.99 + self._rng.gauss(0, 0.003) if st.state == MPPT else 1.0
        st.pf = min(1.0, st.pf)
        st.ac_va = st.ac_w / st.pf
        st.ac_var = math.sqrt(max(0.0, st.ac_va**2 - st.ac_w**2))
        for ph in ("phsA", "phsB", "phsC"):
            st.volts[ph] = 277.0 * (1 + self._rng.gauss(0, 0.002))
            st.amps[ph] = st.ac_va / 3 / st.volts[ph]
        st.hz = 60.0 + self._rng.gauss(0, 0.01)
        st.dc_v = 600.0 + 50.0 * st.irradiance if st.state == MPPT else 0.0
        st.dc_a = st.dc_w / st.dc_v if st.dc_v else 0.0
        st.temp_c = 25.0 + 30.0 * st.ac_w / self.rated_w
        st.wh += st.ac_w * dt / 3600.0
        return st
