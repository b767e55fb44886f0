"""OpenFMB protobuf: every profile the twins publish, with every field filled, encodes with the
published schema (oes-protobuf) and decodes -- in a process that does not import EdgeTwin, with
the schema's own classes only -- to the same values, times, quality and equipment."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from edgetwin.core.models import Quality, Reading, Validity
from edgetwin.wire import openfmb as p
from edgetwin.wire.openfmb_pb import NotInOpenFMB, encode

MRID = "6a1f0c2e-9b4d-4e8a-8d7c-2f3e4a5b6c7d"
TS = 1_796_200_000.25
ENUMS = {"Pos": "closed", "EEHealth": "Alarm", "state": "standby"}
PUBLISHED = [p.METER_READING, p.SOLAR_READING, p.SOLAR_STATUS, p.ESS_READING, p.ESS_STATUS,
             p.SWITCH_READING, p.SWITCH_STATUS, p.BREAKER_READING, p.BREAKER_STATUS,
             p.RECLOSER_READING, p.RECLOSER_STATUS]  # fmt: skip
QUESTIONABLE = Quality(Validity.QUESTIONABLE, frozenset({"oldData", "outOfRange"}))


def sample(profile: p.Profile, field: str, cdc: str, i: int) -> Reading:
    leaf = field.rsplit(".", 1)[-1]
    value: Any = {"CMV": 100.5 + i, "MV": 50.25 + i, "BCR": 1000 + i, "SPS": True}.get(cdc)
    if cdc == "ENS":
        value = ENUMS.get(leaf, "on")
    return Reading(field, value, QUESTIONABLE if i == 0 else Quality(), TS)


DECODE = """
import importlib, json, sys
from google.protobuf import json_format
module, name = sys.argv[1], sys.argv[2]
cls = getattr(importlib.import_module(f"openfmb.{module}.{module}_pb2"), name)
msg = cls()
msg.ParseFromString(sys.stdin.buffer.read())
print(json.dumps(json_format.MessageToDict(msg)))
"""


def decoded_elsewhere(profile: p.Profile, data: bytes) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", DECODE, profile.module, profile.name],
                         input=data, capture_output=True, check=True)  # fmt: skip
    assert b"edgetwin" not in out.stderr
    return json.loads(out.stdout)


def dig(node: Any, path: str) -> Any:
    for key in path.split("."):
        node = node[0] if isinstance(node, list) else node
        node = node[key]
    return node


@pytest.mark.parametrize("profile", PUBLISHED, ids=[x.name for x in PUBLISHED])
def test_every_published_profile_decodes_with_the_schema_alone(profile: p.Profile) -> None:
    samples = {f: sample(profile, f, cdc, i) for i, (f, cdc) in enumerate(profile.fields.items())}
    payload = profile.build(mrid=MRID, name="asset 1", samples=samples, now=TS)
    got = decoded_elsewhere(profile, encode(profile, payload))
    info = got[profile.message_info]["messageInfo"]
    assert info["identifiedObject"]["mRID"] == payload[profile.message_info]["messageInfo"][
        "identifiedObject"]["mRID"]  # fmt: skip
    assert int(info["messageTimeStamp"]["seconds"]) == int(TS)
    assert got[profile.equipment]["conductingEquipment"]["mRID"] == MRID
    body = got[profile.body]
    for i, (field, cdc) in enumerate(profile.fields.items()):
        if field.endswith(("PPV.net", "OpCnt")):
            continue  # no place in the OpenFMB 2.2 schema (NOT_IN_SCHEMA)
        node = dig(body, field)
        if set(node) <= {"stVal", "value"}:  # ENS_HealthKind / Optional_StateKind: no q, t
            assert next(iter(node.values())).lower().endswith("_" + samples[field].value.lower())
            continue
        if "phs3" in node:
            node = node["phs3"]
        assert node["q"]["validity"] == ("ValidityKind_questionable" if i == 0 else
                                         "ValidityKind_good"), field  # fmt: skip
        if i == 0:
            assert node["q"]["detailQual"] == {"oldData": True, "outOfRange": True}
        assert int(node["t"]["seconds"]) == int(TS)
        assert node["t"]["nanoseconds"] == pytest.approx(250_000_000, abs=1000)
        want = samples[field].value
        if cdc == "CMV":
            assert node["cVal"]["mag"] == pytest.approx(want)
        elif cdc == "MV":
            assert node["mag"] == pytest.approx(want)
        elif cdc == "BCR":
            assert int(node["actVal"]) == want
        elif cdc == "SPS":
            assert node["stVal"] is True
        else:
            assert node["stVal"].lower().endswith("_" + want.lower()), (field, node["stVal"])


def test_edgetwin_extensions_are_not_forced_into_openfmb() -> None:
    for profile in (p.METER_EVENT, p.METER_INTERVAL, p.METER_BILLING, p.GENERIC_EVENT):
        with pytest.raises(NotInOpenFMB):
            encode(profile, {})


def test_a_value_the_schema_has_no_enumerator_for_is_an_error() -> None:
    payload = p.BREAKER_STATUS.build(mrid=MRID, name="b", now=TS, samples={
        "statusAndEventXCBR.Pos": Reading("x", "ajar", Quality(), TS)})  # fmt: skip
    with pytest.raises(ValueError, match=r"ajar.*DbPosKind"):
        encode(p.BREAKER_STATUS, payload)
