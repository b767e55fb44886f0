"""Point maps: data that says where each profile field of an asset model lives on its device.

A point map is a TOML file (``twins/pointmaps/<name>.toml`` for the built-in ones, or any path)::

    model = "EdgeTwin simulated meter"
    [defaults]                      # applied to every point unless it says otherwise
    table = "holding"
    dtype = "float32"
    [[points]]
    field = "readingMMXU.PhV.phsA"  # the profile field this point feeds
    address = 0
    units = "V"
    range = [0, 600]                # physical range; percent deadbands are taken of it

The raw value is transformed in this fixed order: ``mask`` -> ``shift`` -> ``scale`` ->
``offset`` (integers only for mask and shift). Reporting settings (deadbands, integrity period)
may sit on a point; the twin's config overrides them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgetwin.core.files import read_config_text
from edgetwin.core.models import Value
from edgetwin.core.points import DataType, WordOrder

BUILTIN_DIR = Path(__file__).parent / "pointmaps"


class ReportingSettings(BaseModel):
    """Report-by-exception settings; every key optional so layers can override each other."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    deadband_abs: float | None = Field(None, ge=0)
    deadband_pct: float | None = Field(None, ge=0, le=100)
    integrity_period_s: float | None = Field(None, gt=0)
    min_interval_s: float | None = Field(None, ge=0)


class PointEntry(ReportingSettings):
    """One point of a point map."""

    field: str
    address: int | str
    table: str | None = None
    dtype: DataType = "float32"
    order: WordOrder = "ABCD"
    units: str = ""
    range: tuple[float, float] | None = None
    kind: str = Field("analog", pattern="^(analog|state|counter)$")
    mask: int | None = Field(None, ge=0)
    shift: int = Field(0, ge=0, le=63)
    scale: float = 1.0
    offset: float = 0.0
    #: a state coded in an integer register: the raw values meaning (false, true), e.g. a
    #: command register where 1 = open, 2 = close is ``states = [1, 2]``
    states: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _check(self) -> PointEntry:
        if self.range is not None and self.range[1] <= self.range[0]:
            raise ValueError("range must be [low, high] with high > low")
        if self.scale == 0:
            raise ValueError("scale must not be 0 (every value would read 0; no write undoes it)")
        if self.deadband_pct is not None and self.range is None:
            raise ValueError("deadband_pct needs a range [low, high]")
        if (self.mask is not None or self.shift) and self.dtype.startswith("float"):
            raise ValueError("mask and shift apply to integer types only")
        if self.states is not None and (self.dtype in ("bool", "float32", "float64")
                                        or self.states[0] == self.states[1]):  # fmt: skip
            raise ValueError("states needs an integer type and two different raw values")
        return self

    def transform(self, raw: Value) -> Value:
        """Apply mask -> shift -> scale -> offset to a raw decoded value (or ``states``)."""
        if raw is None or isinstance(raw, bool):
            return raw
        if self.states is not None:
            return {self.states[0]: False, self.states[1]: True}.get(int(raw), raw)
        value: float | int = raw
        if self.mask is not None or self.shift:
            as_int = int(value)
            if self.mask is not None:
                as_int &= self.mask
            value = as_int >> self.shift
        if self.scale != 1.0 or self.offset != 0.0:
            value = value * self.scale + self.offset
        return value

    def untransform(self, value: Value) -> Value:
        """The raw value that ``transform`` turns into ``value`` (for writes). A masked or
        shifted point cannot be written without the other bits of its register. A state
        (true / false) written to an integer register is 1 / 0 (a command register)."""
        if value is None or (isinstance(value, bool) and self.dtype == "bool"):
            return value
        if isinstance(value, bool) and self.states is not None:
            return self.states[int(value)]
        if isinstance(value, bool):
            if self.dtype.startswith("float"):
                raise ValueError(f"{self.field}: true / false cannot be written to a float")
            return int(value)
        if self.mask is not None or self.shift:
            raise ValueError(f"{self.field}: a masked or shifted point cannot be written")
        raw = value
        if self.scale != 1.0 or self.offset != 0.0:
            raw = (value - self.offset) / self.scale
        return raw if self.dtype.startswith("float") else round(raw)

    def same(self, value: Value, expected: Value) -> bool:
        """Whether a read-back ``value`` confirms a write of ``expected``: equal for states,
        within the register's resolution (one raw step, or float32 precision) for numbers."""
        if isinstance(expected, bool) or isinstance(value, bool) or value is None:
            return value == expected
        if expected is None:
            return False
        step = abs(self.scale) * 0.5 if not self.dtype.startswith("float") else 0.0
        return abs(float(value) - float(expected)) <= max(step, 1e-6 * abs(float(expected)), 1e-9)


class PointMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    points: list[dict[str, Any]]


BUILTIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def resolve_path(ref: str, base_dir: Path) -> Path:
    """A point map reference is a built-in name (``sim_meter``) or a path relative to config."""
    if BUILTIN_NAME.fullmatch(ref) and (BUILTIN_DIR / f"{ref}.toml").exists():
        return BUILTIN_DIR / f"{ref}.toml"  # (a name too long for a file is not one: no OSError)
    path = Path(ref)
    return path if path.is_absolute() else base_dir / path


def load_raw(path: Path) -> PointMap:
    """Read a point map file (raises OSError, tomllib.TOMLDecodeError, pydantic errors)."""
    try:
        text = read_config_text(path)  # bounded: never /dev/zero, never a FIFO
    except ValueError as err:  # not UTF-8
        raise tomllib.TOMLDecodeError(str(err)) from None
    return PointMap.model_validate(tomllib.loads(text))


def merged_points(pm: PointMap) -> list[dict[str, Any]]:
    """The raw point dicts with the map's defaults applied."""
    return [{**pm.defaults, **p} for p in pm.points]
