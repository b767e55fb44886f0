"""The signed envelope: msgpack ``{"v": 1, "jws": "<b64url(header)>..<b64url(sig)>", "pl": <bin>}``.

``jws`` is a JWS in compact serialization with a *detached, unencoded* payload (RFC 7515 with
RFC 7797 ``"b64": false``, ``"crit": ["b64"]``), signed with EdDSA / Ed25519 (RFC 8037). The
signing input is ``ASCII(b64url(header)) || "." || pl`` -- the raw msgpack payload bytes -- so any
JOSE library that supports RFC 7797 (jwcrypto, PyJWT) verifies it given ``pl`` as the detached
payload. The protected header carries:

=======  ==============================================================================
``kid``  key id; receivers look the public key up in their trust store
``seq``  the agent's persisted, strictly increasing sequence number (never reused)
``ts``   milliseconds since the epoch when the envelope was signed (at publish time)
``tpc``  the MQTT topic the message is meant for; receivers compare it with the real topic
``hist`` true when the message was published late (queued across an outage or backlog)
``bd``   (birth and death only) true: ``seq`` is then the agent's birth/death sequence, which
         pairs a death with its birth and is separate from the data ``seq`` stream
``exp``  (commands only) milliseconds since the epoch after which it must not be executed
=======  ==============================================================================

This module knows bytes and keys only; topics, QoS and sessions belong to the publisher.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import VerificationError

ENVELOPE_VERSION = 1
CONTENT_TYPE = "application/vnd.edgetwin.jws+msgpack;v=1"


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64url_decode(data: str | bytes) -> bytes:
    raw = data.encode("ascii") if isinstance(data, str) else data
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def pack(obj: Any) -> bytes:
    """The payload byte format: msgpack with binary/str distinction."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class Signer:
    """Signs payloads with one Ed25519 key under one key id."""

    def __init__(self, key: Ed25519PrivateKey, kid: str) -> None:
        self._key = key
        self.kid = kid
        self._prefix = {"alg": "EdDSA", "b64": False, "crit": ["b64"], "kid": kid}

    def sign(
        self,
        payload: bytes,
        *,
        seq: int,
        ts_ms: int,
        topic: str,
        hist: bool,
        bd: bool = False,
        exp_ms: int | None = None,
    ) -> bytes:
        header: dict[str, object] = {
            **self._prefix,
            "seq": seq,
            "ts": ts_ms,
            "tpc": topic,
            "hist": hist,
        }
        if bd:
            header["bd"] = True
        if exp_ms is not None:
            header["exp"] = exp_ms  # commands: not to be executed after this time
        protected = b64url(json.dumps(header, separators=(",", ":")).encode())
        signature = self._key.sign(protected + b"." + payload)
        jws = (protected + b".." + b64url(signature)).decode("ascii")
        return pack({"v": ENVELOPE_VERSION, "jws": jws, "pl": payload})


@dataclass(frozen=True, slots=True)
class Verified:
    header: dict[str, Any]
    payload: bytes

    @property
    def seq(self) -> int:
        return int(self.header["seq"])

    def body(self) -> Any:
        return unpack(self.payload)


def split(envelope: bytes) -> tuple[str, bytes]:
    """Return (jws, payload) from an envelope, or raise ``VerificationError('malformed')``."""
    try:
        env = unpack(envelope)
    except Exception as err:
        raise VerificationError("malformed", "not msgpack") from err
    if not isinstance(env, dict) or env.get("v") != ENVELOPE_VERSION:
        raise VerificationError("malformed", "not a version 1 envelope")
    jws, payload = env.get("jws"), env.get("pl")
    if not isinstance(jws, str) or not isinstance(payload, bytes) or jws.count(".") != 2:
        raise VerificationError("malformed", "jws or pl missing or of the wrong type")
    return jws, payload


def verify(envelope: bytes, trust: Mapping[str, Ed25519PublicKey], topic: str | None) -> Verified:
    """Verify signature, key id and topic binding. ``topic=None`` skips the topic check.

    Raises ``VerificationError`` with reason ``malformed``, ``unknown_key``, ``bad_signature``
    or ``topic_mismatch``. Sequence and freshness checks are the caller's (they need state).
    """
    jws, payload = split(envelope)
    protected, detached, sig_b64 = jws.split(".")
    if detached:
        raise VerificationError("malformed", "payload must be detached")
    try:
        header = json.loads(b64url_decode(protected))
        signature = b64url_decode(sig_b64)
    except (ValueError, UnicodeDecodeError) as err:
        raise VerificationError("malformed", "header or signature not base64url JSON") from err
    if not isinstance(header, dict):
        raise VerificationError("malformed", "header is not a JSON object")
    if header.get("alg") != "EdDSA" or header.get("b64") is not False:
        raise VerificationError("malformed", "expected alg EdDSA with b64 false")
    if header.get("crit") != ["b64"]:
        raise VerificationError("malformed", "crit must be ['b64']")
    if not isinstance(header.get("seq"), int) or not isinstance(header.get("ts"), int):
        raise VerificationError("malformed", "seq and ts must be integers")
    key = trust.get(str(header.get("kid")))
    if key is None:
        raise VerificationError("unknown_key", f"kid {header.get('kid')!r} is not trusted")
    try:
        key.verify(signature, protected.encode("ascii") + b"." + payload)
    except InvalidSignature as err:
        raise VerificationError("bad_signature", "signature does not verify") from err
    if topic is not None and header.get("tpc") != topic:
        raise VerificationError("topic_mismatch", f"signed for {header.get('tpc')!r}")
    return Verified(header, payload)
