"""A simulated SunSpec PV inverter: ``SunS`` at 40000 (or ``base``), then models 1 (common),
103 (three-phase inverter, integer + scale factors), 120 (nameplate), and the end marker.

Each model is encoded by pysunspec2's own device model (``sunspec2.device.Model``: its points,
scale factors and "not implemented" values), not by the agent's ``drivers.sunspec_models``, so
the two sides share the published model definitions and nothing else. Scale factors are fixed per
point, as on real inverters. Serve it with ``TcpSimulator(InverterUnit(...), port=N)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sunspec2.device import Model

from edgetwin.firmware_sim.meter import SimUnit
from edgetwin.firmware_sim.solar_model import SolarModel

MARKER = [0x5375, 0x6E53]  # "SunS"
END_ID = 0xFFFF
BASE = 40000
MODELS = (1, 103, 120)
# scale factors the simulated inverter uses
SF_103 = {
    "A_SF": -2,
    "V_SF": -1,
    "W_SF": 0,
    "Hz_SF": -2,
    "VA_SF": 0,
    "VAr_SF": 0,
    "PF_SF": 0,
    "WH_SF": 0,
    "DCA_SF": -2,
    "DCV_SF": -1,
    "DCW_SF": 0,
    "Tmp_SF": -1,
}


def _registers(mid: int) -> int:
    """How many registers model ``mid`` takes with its ID and L header."""
    return int(Model(model_id=mid).len)


def layout(base: int = BASE) -> dict[int, int]:
    """model id -> address of its ID register."""
    addr = base + 2
    out = {}
    for mid in MODELS:
        out[mid] = addr
        addr += _registers(mid)
    return out


def _image(mid: int, raw: Mapping[str, Any], scaled: Mapping[str, float] = {}) -> list[int]:
    """Model ``mid`` as registers: ``raw`` point values as they are (scale factors, enums,
    strings), ``scaled`` in engineering units (pysunspec2 applies the point's scale factor, so
    those must be in ``raw``); every other point reads "not implemented"."""
    model = Model(model_id=mid)
    for name, value in raw.items():
        model.points[name].value = value
    for name, measured in scaled.items():
        model.points[name].cvalue = measured
    data = model.get_mb()
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


class InverterUnit(SimUnit):
    register_count = 2 + sum(_registers(m) for m in MODELS) + 2

    def __init__(
        self,
        *,
        unit_id: int = 0,
        seed: int = 1,
        rated_w: float = 10_000.0,
        clock: Callable[[], float] | None = None,
        model: SolarModel | None = None,
        serial_number: str = "SIM-INV-0001",
        refresh_s: float = 0.1,
        base: int = BASE,
    ) -> None:
        super().__init__(unit_id=unit_id, clock=clock, refresh_s=refresh_s)
        self.register_base = base  # where "SunS" is: 40000, 0 or 50000
        self.model = model or SolarModel(seed=seed, rated_w=rated_w)
        self.serial_number = serial_number
        self.addresses = layout(base)

    def build_image(self, now: float) -> dict[int, list[int]]:
        st = self.model.step(now)
        common = {"Mn": "EdgeTwin", "Md": "SimInverter 10k", "Vr": "1.0",
                  "SN": self.serial_number, "DA": self.unit_id or 1}  # fmt: skip
        measured = {
            "A": sum(st.amps.values()),
            "AphA": st.amps["phsA"],
            "AphB": st.amps["phsB"],
            "AphC": st.amps["phsC"],
            "PhVphA": st.volts["phsA"],
            "PhVphB": st.volts["phsB"],
            "PhVphC": st.volts["phsC"],
            "PPVphAB": st.volts["phsA"] * 3**0.5,
            "PPVphBC": st.volts["phsB"] * 3**0.5,
            "PPVphCA": st.volts["phsC"] * 3**0.5,
            "W": st.ac_w,
            "Hz": st.hz,
            "VA": st.ac_va,
            "VAr": st.ac_var,
            "PF": st.pf * 100,
            "WH": st.wh,
            "DCA": st.dc_a,
            "DCV": st.dc_v,
            "DCW": st.dc_w,
            "TmpCab": st.temp_c,
        }
        inverter = _image(103, {**SF_103, "St": st.state, "Evt1": 0}, measured)
        rated = {"WRtg": self.model.rated_w, "VARtg": self.model.rated_w,
                 "ARtg": self.model.rated_w / 3 / 277 * 1.1}  # fmt: skip
        plate_sf = {"WRtg_SF": 0, "VARtg_SF": 0, "ARtg_SF": 0, "VArRtg_SF": 0, "PFRtg_SF": -2}
        nameplate = _image(120, {**plate_sf, "DERTyp": 4}, rated)  # DERTyp 4: PV
        end = self.addresses[120] + len(nameplate)
        return {
            self.register_base: list(MARKER),
            self.addresses[1]: _image(1, common),
            self.addresses[103]: inverter,
            self.addresses[120]: nameplate,
            end: [END_ID, 0],
        }
