"""Point-map entries: the transform order (mask -> shift -> scale -> offset) and validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgetwin.twins.pointmap import PointEntry


def entry(**kw: object) -> PointEntry:
    return PointEntry.model_validate({"field": "readingMMXU.Hz", "address": 0, **kw})


@pytest.mark.parametrize(
    ("settings", "raw", "expected"),
    [
        pytest.param({}, 60.01, 60.01, id="identity"),
        pytest.param({"dtype": "uint16", "scale": 0.01}, 6001, 60.01, id="scale"),
        pytest.param({"dtype": "int16", "scale": 0.1, "offset": -40}, 650, 25.0, id="scale-offset"),
        pytest.param({"dtype": "uint16", "mask": 0x0F00, "shift": 8}, 0xABCD, 0xB, id="mask-shift"),
        pytest.param(
            {"dtype": "uint16", "mask": 0x00FF, "shift": 0, "scale": 2, "offset": 1},
            0x1234,
            0x34 * 2 + 1,
            id="all-four-in-order",
        ),
        pytest.param({"dtype": "bool", "table": "coil"}, True, True, id="bool-untouched"),
        pytest.param({}, None, None, id="invalid-stays-none"),
    ],
)
def test_transform(settings: dict[str, object], raw: object, expected: object) -> None:
    assert entry(**settings).transform(raw) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mask": 255}, "mask and shift apply to integer types only"),
        ({"range": [10, 0]}, "high > low"),
        ({"deadband_pct": 1}, "deadband_pct needs a range"),
        ({"kind": "gauge"}, "String should match pattern"),
        ({"order": "ACBD"}, "Input should be 'ABCD'"),
        ({"dtype": "float32", "states": [1, 2]}, "states needs an integer type"),
        ({"dtype": "uint16", "states": [1, 1]}, "two different raw values"),
    ],
)
def test_invalid_entries(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        entry(**settings)


def test_a_reference_too_long_for_a_file_name_is_a_path_not_an_os_error(tmp_path) -> None:
    """Found by tests/agent/test_config_fuzz.py: ``point_map = "xxx…"`` (5,000 characters) made
    the built-in lookup raise ENAMETOOLONG instead of giving the config's own error."""
    from edgetwin.twins.pointmap import BUILTIN_DIR, resolve_path

    assert resolve_path("x" * 5000, tmp_path) == tmp_path / ("x" * 5000)
    assert resolve_path("sim_meter", tmp_path) == BUILTIN_DIR / "sim_meter.toml"


def test_a_state_coded_in_a_register_reads_and_writes_its_raw_codes() -> None:
    """A command register where 1 = open (false) and 2 = close (true); other codes stay raw."""
    e = entry(dtype="uint16", kind="state", states=[1, 2])
    assert (e.transform(1), e.transform(2), e.transform(0)) == (False, True, 0)
    assert (e.untransform(False), e.untransform(True)) == (1, 2)
    plain = entry(dtype="uint16", kind="state")  # without states: true / false are 1 / 0
    assert (plain.untransform(False), plain.untransform(True)) == (0, 1)
