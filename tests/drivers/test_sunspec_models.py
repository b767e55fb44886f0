"""SunSpec decoding: scale factors and "not implemented" sentinels, per type (table-driven)."""

from __future__ import annotations

import pytest

from edgetwin.drivers.sunspec_models import decode_point, encode_point, model_def


def blank(model_id: int) -> list[int]:
    m = model_def(model_id)
    regs = [0] * (m.length + 2)
    regs[0], regs[1] = model_id, m.length
    return regs


def test_model_layout_comes_from_pysunspec2() -> None:
    m = model_def(103)
    assert m.length == 50 and m.points["A"].offset == 2 and m.points["A"].sf == "A_SF"
    assert model_def(1).length == 66 and model_def(701).length == 153
    with pytest.raises(KeyError):
        model_def(99999)


@pytest.mark.parametrize(
    ("model", "point", "sf_point", "sf", "value"),
    [
        pytest.param(103, "W", "W_SF", 1, 12340.0, id="int16-positive-sf"),
        pytest.param(103, "A", "A_SF", -2, 41.57, id="uint16-negative-sf"),
        pytest.param(103, "Hz", "Hz_SF", -2, 59.98, id="hz"),
        pytest.param(103, "WH", "WH_SF", 0, 123456789, id="acc32"),
        pytest.param(203, "W", "W_SF", 0, -5000, id="int16-negative"),
        pytest.param(701, "TotWhInj", "TotWh_SF", 0, 2**40, id="uint64"),
        pytest.param(701, "Hz", "Hz_SF", -3, 60.001, id="uint32"),
    ],
)
def test_scaled_values_round_trip(
    model: int, point: str, sf_point: str, sf: int, value: float
) -> None:
    m, regs = model_def(model), blank(model)
    encode_point(m, regs, sf_point, sf)
    encode_point(m, regs, point, value, sf)
    assert decode_point(m, regs, point) == pytest.approx(value)


@pytest.mark.parametrize(
    ("model", "point"),
    [
        pytest.param(103, "W", id="int16-0x8000"),
        pytest.param(103, "A", id="uint16-0xFFFF"),
        pytest.param(103, "WH", id="acc32-zero"),
        pytest.param(103, "St", id="enum16-0xFFFF"),
        pytest.param(103, "Evt1", id="bitfield32-0xFFFFFFFF"),
        pytest.param(113, "W", id="float32-NaN"),
        pytest.param(1, "SN", id="string-empty"),
    ],
)
def test_not_implemented_sentinels_decode_to_none(model: int, point: str) -> None:
    m, regs = model_def(model), blank(model)
    sf = m.points[point].sf
    if isinstance(sf, str):
        encode_point(m, regs, sf, 0)
    encode_point(m, regs, point, None)
    assert decode_point(m, regs, point) is None


def test_unimplemented_scale_factor_makes_the_value_unusable() -> None:
    m, regs = model_def(103), blank(103)
    encode_point(m, regs, "W", 100)
    encode_point(m, regs, "W_SF", None)
    assert decode_point(m, regs, "W") is None


def test_strings() -> None:
    m, regs = model_def(1), blank(1)
    encode_point(m, regs, "Mn", "EdgeTwin")
    assert decode_point(m, regs, "Mn") == "EdgeTwin"
