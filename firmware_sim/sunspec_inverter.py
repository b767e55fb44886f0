"""A simulated SunSpec PV inverter: ``SunS`` at 40000 (or ``base``), then models 1 (common),
103 (three-phase inverter, integer + scale factors), 120 (nameplate), and the end marker.

Register layout follows from the model definitions pysunspec2 ships (the same ones the agent
decodes with). Scale factors are fixed per point, as on real inverters. Serve it with
``TcpSimulator(InverterUnit(...), port=N)``.
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.sunspec_models import END_ID, MARKER, encode_point, model_def
from firmware_sim.meter import SimUnit
from firmware_sim.solar_model import SolarModel

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


def layout(base: int = BASE) -> dict[int, int]:
    """model id -> address of its ID register."""
    addr = base + 2
    out = {}
    for mid in MODELS:
        out[mid] = addr
        addr += 2 + model_def(mid).length
    return out


class InverterUnit(SimUnit):
    register_count = 2 + sum(2 + model_def(m).length for m in MODELS) + 2

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

    def _model_regs(self, mid: int) -> list[int]:
        m = model_def(mid)
        regs = [0] * (2 + m.length)
        regs[0], regs[1] = mid, m.length
        return regs

    def build_image(self, now: float) -> dict[int, list[int]]:
        st = self.model.step(now)
        image: dict[int, list[int]] = {self.register_base: list(MARKER)}

        common, m1 = self._model_regs(1), model_def(1)
        for name, value in (
            ("Mn", "EdgeTwin"),
            ("Md", "SimInverter 10k"),
            ("Vr", "1.0"),
            ("SN", self.serial_number),
            ("DA", self.unit_id or 1),
        ):
            encode_point(m1, common, name, value)
        encode_point(m1, common, "Opt", None)
        image[self.addresses[1]] = common

        inv, m103 = self._model_regs(103), model_def(103)
        for name, sf in SF_103.items():
            encode_point(m103, inv, name, sf)
        values = {
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
        for name, measured in values.items():
            sf_name = m103.points[name].sf
            encode_point(
                m103, inv, name, measured, SF_103[sf_name] if isinstance(sf_name, str) else 0
            )
        for name in (
            "TmpSnk",
            "TmpTrns",
            "TmpOt",
            "StVnd",
            "Evt2",
            "EvtVnd1",
            "EvtVnd2",
            "EvtVnd3",
            "EvtVnd4",
        ):
            encode_point(m103, inv, name, None)  # not implemented on this inverter
        encode_point(m103, inv, "St", st.state)
        encode_point(m103, inv, "Evt1", 0)
        image[self.addresses[103]] = inv

        plate, m120 = self._model_regs(120), model_def(120)
        for name in ("WRtg_SF", "VARtg_SF", "ARtg_SF", "VArRtg_SF", "PFRtg_SF"):
            encode_point(m120, plate, name, 0 if name != "PFRtg_SF" else -2)
        encode_point(m120, plate, "DERTyp", 4)  # PV
        encode_point(m120, plate, "WRtg", self.model.rated_w)
        encode_point(m120, plate, "VARtg", self.model.rated_w)
        encode_point(m120, plate, "ARtg", self.model.rated_w / 3 / 277 * 1.1)
        for name in (
            "WHRtg",
            "WHRtg_SF",
            "AhrRtg",
            "AhrRtg_SF",
            "MaxChaRte",
            "MaxChaRte_SF",
            "MaxDisChaRte",
            "MaxDisChaRte_SF",
            "VArRtgQ1",
            "VArRtgQ2",
            "VArRtgQ3",
            "VArRtgQ4",
            "PFRtgQ1",
            "PFRtgQ2",
            "PFRtgQ3",
            "PFRtgQ4",
        ):
            encode_point(m120, plate, name, None)
        image[self.addresses[120]] = plate

        end = self.addresses[120] + len(plate)
        image[end] = [END_ID, 0]
        return image
