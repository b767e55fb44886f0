"""Live values out of a verified OpenFMB profile map: every measured or status value with its
quality and source time, whatever the profile (``wire.openfmb`` describes how they are encoded).

A value is a map with ``q`` (quality) and ``t`` (timestamp) and one of ``cVal.mag`` (CMV),
``mag`` (MV), ``actVal`` (BCR) or ``stVal`` (SPS, ENS); an invalid value has ``q`` and ``t`` only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Scalar = float | int | bool | str | None


@dataclass(frozen=True, slots=True)
class Sample:
    path: str  # below the profile's body, e.g. "readingMMXU.W.net"
    value: Scalar  # None when the value is invalid
    validity: str  # "good" | "invalid" | "questionable"
    detail: tuple[str, ...]  # detailQual flags set, e.g. ("failure",)
    time: float | None  # source time, seconds since the epoch


def equipment(payload: Any) -> str | None:
    """The mRID of the twin a profile map is about (``<equipment>.conductingEquipment.mRID``)."""
    for node in payload.values() if isinstance(payload, Mapping) else ():
        mrid = (
            node.get("conductingEquipment", {}).get("mRID") if isinstance(node, Mapping) else None
        )
        if isinstance(mrid, str):
            return mrid
    return None


def samples(payload: Any) -> Iterator[Sample]:
    """Every value in a profile map, in the map's order (message info and equipment skipped)."""
    if not isinstance(payload, Mapping):
        return
    for key, node in payload.items():
        if isinstance(node, Mapping) and not key.endswith("MessageInfo"):
            yield from _walk(node, "")


def _walk(node: Mapping[str, Any], path: str) -> Iterator[Sample]:
    if isinstance(node.get("q"), Mapping) and "t" in node:
        yield _sample(node, path)
        return
    for key, child in node.items():
        if isinstance(child, Mapping) and key != "conductingEquipment":
            yield from _walk(child, f"{path}.{key}" if path else key)


def _sample(node: Mapping[str, Any], path: str) -> Sample:
    q, t = node["q"], node.get("t")
    value: Scalar = None
    if isinstance(node.get("cVal"), Mapping):
        value = node["cVal"].get("mag")
    else:
        value = next((node[k] for k in ("mag", "actVal", "stVal") if k in node), None)
    time = None
    if isinstance(t, Mapping) and isinstance(t.get("seconds"), int):
        time = t["seconds"] + t.get("nanoseconds", 0) / 1e9
    detail = q.get("detailQual") or {}
    return Sample(path, value, str(q.get("validity", "good")),
                  tuple(sorted(k for k, v in detail.items() if v)), time)  # fmt: skip
