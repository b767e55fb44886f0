"""The signed envelope: verified by our code and by an independent JOSE library (jwcrypto)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwcrypto import jwk, jws

from edgetwin.core.errors import VerificationError
from edgetwin.wire.envelope import Signer, b64url_decode, pack, unpack, verify

TOPIC = "openfmb/metermodule/MeterReadingProfile/5f0a3c2e-8d1b-4f7a-9c3e-1b2d3e4f5a6b"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signed(key: Ed25519PrivateKey, payload: bytes = b"", **kw: object) -> bytes:
    args = {"seq": 7, "ts_ms": 1_700_000_000_000, "topic": TOPIC, "hist": False, **kw}
    return Signer(key, "k1").sign(payload or pack({"a": 1.5}), **args)  # type: ignore[arg-type]


def test_envelope_shape_and_header(key: Ed25519PrivateKey) -> None:
    env = unpack(signed(key, hist=True))
    assert set(env) == {"v", "jws", "pl"} and env["v"] == 1
    protected, detached, _sig = env["jws"].split(".")
    assert detached == ""
    header = json.loads(b64url_decode(protected))
    assert header == {
        "alg": "EdDSA",
        "b64": False,
        "crit": ["b64"],
        "kid": "k1",
        "seq": 7,
        "ts": 1_700_000_000_000,
        "tpc": TOPIC,
        "hist": True,
    }
    assert unpack(env["pl"]) == {"a": 1.5}


def test_independent_jose_library_verifies(key: Ed25519PrivateKey) -> None:
    env = unpack(signed(key))
    public = jwk.JWK.from_pyca(key.public_key())
    token = jws.JWS()
    token.deserialize(env["jws"])
    token.verify(public, detached_payload=env["pl"])  # raises if the signature is wrong
    assert token.jose_header["kid"] == "k1"
    assert token.jose_header["seq"] == 7

    tampered = jws.JWS()
    tampered.deserialize(env["jws"])
    with pytest.raises(jws.InvalidJWSSignature):
        tampered.verify(public, detached_payload=env["pl"] + b"\x00")


def test_our_verifier_accepts_and_binds_topic(key: Ed25519PrivateKey) -> None:
    v = verify(signed(key), {"k1": key.public_key()}, TOPIC)
    assert v.seq == 7 and v.body() == {"a": 1.5}
    with pytest.raises(VerificationError) as err:
        verify(signed(key), {"k1": key.public_key()}, TOPIC.replace("Meter", "Solar"))
    assert err.value.reason == "topic_mismatch"


def test_tampered_payload_wrong_key_unknown_key_malformed(key: Ed25519PrivateKey) -> None:
    env = unpack(signed(key))
    env["pl"] = pack({"a": 2.5})
    cases = {
        "bad_signature": (pack(env), {"k1": key.public_key()}),
        "unknown_key": (signed(key), {"other": key.public_key()}),
        "malformed": (b"\x93not an envelope", {"k1": key.public_key()}),
    }
    other = Ed25519PrivateKey.generate()
    cases["bad_signature_other_key"] = (signed(other), {"k1": key.public_key()})
    for name, (data, trust) in cases.items():
        with pytest.raises(VerificationError) as err:
            verify(data, trust, TOPIC)
        assert err.value.reason == name.removesuffix("_other_key"), name


def test_header_cannot_be_swapped_between_messages(key: Ed25519PrivateKey) -> None:
    a, b = unpack(signed(key, seq=1)), unpack(signed(key, seq=2, payload=pack({"a": 9})))
    a["pl"] = b["pl"]  # replay seq 1's signature over seq 2's content
    with pytest.raises(VerificationError, match="bad_signature"):
        verify(pack(a), {"k1": key.public_key()}, TOPIC)
