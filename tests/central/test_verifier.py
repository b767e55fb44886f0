"""The central package's stream checks: one seq stream per agent across a key rotation, and the
decoded values of a profile map."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetwin.central import Verifier, equipment, samples
from edgetwin.core.models import FAILURE, GOOD, Reading
from edgetwin.wire.envelope import Signer, pack
from edgetwin.wire.openfmb import METER_READING

TOPIC = "openfmb/metermodule/MeterReadingProfile/m-1"


def test_a_rotated_key_goes_on_with_its_agents_stream() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trust = {"sub-01": old.public_key(), "sub-01-2026": new.public_key()}

    def message(key: Ed25519PrivateKey, kid: str, seq: int) -> bytes:
        now = int(time.time() * 1000)
        return Signer(key, kid).sign(pack({}), seq=seq, ts_ms=now, topic=TOPIC, hist=False)

    stream = [(old, "sub-01", 1), (old, "sub-01", 2), (new, "sub-01-2026", 5),
              (new, "sub-01-2026", 2)]  # fmt: skip
    by_agent = Verifier(trust, agents={"sub-01": "sub-01", "sub-01-2026": "sub-01"})
    reports = [by_agent.check(TOPIC, message(*m)) for m in stream]
    assert all(r["valid"] for r in reports)
    assert reports[2].get("gap") == [3, 4]  # lost at the rotation: seen
    assert reports[3].get("duplicate") is True  # seq 2 again, under the new key: a replay
    by_kid = Verifier(trust)  # without the mapping each kid is a stream of its own
    reports = [by_kid.check(TOPIC, message(*m)) for m in stream]
    assert "gap" not in reports[2]  # the two numbers lost at the rotation go unseen


def test_samples_are_every_value_with_its_quality_and_time() -> None:
    payload = METER_READING.build(
        mrid="m-1",
        name="Feeder 7 meter",
        samples={
            "readingMMXU.PhV.phsA": Reading("v", 277.25, GOOD, 100.5),
            "readingMMTR.TotWh": Reading("e", 123456, GOOD, 100.5),
            "readingMMXU.Hz": Reading("f", None, FAILURE, 101.0),
        },
        now=102.0,
    )
    assert equipment(payload) == "m-1"
    got = {s.path: (s.value, s.validity, s.detail, s.time) for s in samples(payload)}
    assert got == {
        "readingMMXU.PhV.phsA": (277.25, "good", (), 100.5),
        "readingMMTR.TotWh": (123456, "good", (), 100.5),
        "readingMMXU.Hz": (None, "invalid", ("failure",), 101.0),
    }
