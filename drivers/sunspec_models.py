"""SunSpec model definitions and point encoding, from the definitions ``pysunspec2`` ships.

A model's registers start with its ID and length L; point offsets below count from the ID
register (ID at 0, L at 1, the first point at 2). Values are big-endian, high word first; a
point with ``sf`` is scaled by 10^sf, where sf names another point (a ``sunssf``) of the same
model or is a fixed number. "Not implemented" is a sentinel per type: 0x8000 (int16, sunssf),
0xFFFF (uint16, enum16, bitfield16, count), 0 (accumulators), NaN (floats), all-zero (strings),
and their wider equivalents; such points decode to ``None``.

Only a model's top-level points are described (the models EdgeTwin uses -- 1, 101-103,
111-113, 120, 201-204, 211-214, 701 -- have no repeating groups). Pure data and functions.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from edgetwin.drivers.regcodec import decode, encode

# SunSpec type -> (regcodec dtype, "not implemented" raw value)
NUMERIC: dict[str, tuple[str, int | float | None]] = {
    "int16": ("int16", -0x8000),
    "sunssf": ("int16", -0x8000),
    "uint16": ("uint16", 0xFFFF),
    "count": ("uint16", 0xFFFF),
    "enum16": ("uint16", 0xFFFF),
    "bitfield16": ("uint16", 0xFFFF),
    "acc16": ("uint16", 0),
    "int32": ("int32", -0x80000000),
    "uint32": ("uint32", 0xFFFFFFFF),
    "enum32": ("uint32", 0xFFFFFFFF),
    "bitfield32": ("uint32", 0xFFFFFFFF),
    "acc32": ("uint32", 0),
    "int64": ("int64", -0x8000000000000000),
    "uint64": ("uint64", 0xFFFFFFFFFFFFFFFF),
    "acc64": ("uint64", 0),
    "float32": ("float32", None),  # NaN
    "float64": ("float64", None),
}

MARKER = [0x5375, 0x6E53]  # "SunS"
END_ID = 0xFFFF
BASE_ADDRESSES = (40000, 0, 50000)

#: model families a point map may name instead of a model id
FAMILIES: dict[str, tuple[int, ...]] = {
    "common": (1,),
    "inverter": (101, 102, 103, 111, 112, 113),
    "nameplate": (120,),
    "meter": (201, 202, 203, 204),  # integer + scale factors, PF in percent
    "meter_float": (211, 212, 213, 214),  # float32, PF as a ratio
    "der_ac": (701,),
}


@dataclass(frozen=True, slots=True)
class PointDef:
    name: str
    offset: int  # registers from the model's ID register
    size: int
    type: str
    sf: str | int | None
    units: str


@dataclass(frozen=True)
class ModelDef:
    id: int
    name: str
    label: str
    length: int  # L: registers after ID and L
    points: Mapping[str, PointDef]


@functools.cache
def model_def(model_id: int) -> ModelDef:
    """The definition of SunSpec model ``model_id`` (KeyError if pysunspec2 has none)."""
    path = resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
    try:
        group = json.loads(path.read_text())["group"]
    except FileNotFoundError:
        raise KeyError(f"no SunSpec model {model_id}") from None
    points: dict[str, PointDef] = {}
    offset = 0
    for p in group["points"]:
        points[p["name"]] = PointDef(
            p["name"], offset, p["size"], p["type"], p.get("sf"), p.get("units", "")
        )
        offset += p["size"]
    return ModelDef(model_id, group["name"], group.get("label", ""), offset - 2, points)


def decode_point(model: ModelDef, regs: Sequence[int], name: str) -> int | float | str | None:
    """Decode point ``name`` from the model's registers (``regs[0]`` is its ID register)."""
    p = model.points[name]
    raw = regs[p.offset : p.offset + p.size]
    if p.type == "string":
        text = b"".join(r.to_bytes(2, "big") for r in raw).rstrip(b"\0")
        return text.decode("utf-8", "replace") or None
    if p.type not in NUMERIC:
        return None  # pad, addresses: not measurements
    dtype, missing = NUMERIC[p.type]
    value = decode(raw, dtype)
    if (missing is None and isinstance(value, float) and math.isnan(value)) or value == missing:
        return None
    if p.sf is None or p.type == "sunssf":
        return value
    sf = p.sf if isinstance(p.sf, int) else decode_point(model, regs, p.sf)
    if sf is None:
        return None  # an unimplemented scale factor makes the value unusable
    scaled = value * 10 ** int(sf)
    return round(scaled, max(0, -int(sf))) if int(sf) < 0 else scaled


def encode_point(
    model: ModelDef, regs: list[int], name: str, value: float | str | None, sf: int = 0
) -> None:
    """Write ``value`` (already in engineering units) into ``regs``, scaled by 10^-``sf``;
    ``None`` writes the "not implemented" sentinel. For simulators and tests."""
    p = model.points[name]
    if p.type == "string":
        data = str(value or "").encode()[: 2 * p.size].ljust(2 * p.size, b"\0")
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    else:
        dtype, missing = NUMERIC[p.type]
        if value is None:
            raw: int | float = math.nan if missing is None else missing
        elif dtype.startswith("float"):
            raw = float(value)
        else:
            raw = round(float(value) * 10 ** (-sf))
        words = encode(raw, dtype)
    regs[p.offset : p.offset + p.size] = words
