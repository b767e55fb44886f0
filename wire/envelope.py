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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgetwin.core.errors import VerificationError

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
    """Decode msgpack: map keys str or bytes only, no extension types (``ValueError``)."""
    return msgpack.unpackb(data, raw=False, ext_hook=_no_ext)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not part of the format")


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


#: bounds on what an inbound envelope may contain; anything beyond them is ``malformed``
MAX_HEADER_CHARS = 4096  # the base64url protected header
MAX_KID_CHARS = 128
MAX_TOPIC_CHARS = 1024
MAX_SEQ = 2**63 - 1  # fits SQLite's INTEGER and msgpack's int64
MAX_TS_MS = 2**53  # an exact float: about the year 287,000
_KID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")


@dataclass(frozen=True, slots=True)
class Header:
    """A protected header that was parsed and bounded (not yet known to be authentic)."""

    kid: str
    seq: int
    ts: int
    tpc: str
    hist: bool = False
    bd: bool = False
    exp: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kid": self.kid, "seq": self.seq, "ts": self.ts, "tpc": self.tpc,
                               "hist": self.hist}  # fmt: skip
        if self.bd:
            out["bd"] = True
        if self.exp is not None:
            out["exp"] = self.exp
        return out


def _bounded_int(header: Mapping[str, Any], name: str, high: int, *, required: bool) -> int | None:
    value = header.get(name)
    if value is None and not required:
        return None
    # bool is an int in Python; JSON true is not a number
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise VerificationError("malformed", f"{name} must be an integer in [0, {high}]")
    return value


def parse_header(protected: str) -> Header:
    """Decode and bound a protected header, or raise ``VerificationError('malformed')``.

    Reads nothing else; says nothing about authenticity (``verify`` does)."""
    if len(protected) > MAX_HEADER_CHARS:
        raise VerificationError("malformed", f"header longer than {MAX_HEADER_CHARS} characters")
    try:
        header = json.loads(b64url_decode(protected))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise VerificationError("malformed", "header is not base64url JSON") from err
    if not isinstance(header, dict):
        raise VerificationError("malformed", "header is not a JSON object")
    if header.get("alg") != "EdDSA" or header.get("b64") is not False:
        raise VerificationError("malformed", "expected alg EdDSA with b64 false")
    if header.get("crit") != ["b64"]:
        raise VerificationError("malformed", "crit must be ['b64']")
    kid, tpc = header.get("kid"), header.get("tpc")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise VerificationError("malformed", f"kid must match {_KID.pattern}")
    if not isinstance(tpc, str) or not 0 < len(tpc) <= MAX_TOPIC_CHARS:
        raise VerificationError("malformed", f"tpc must be a topic of 1..{MAX_TOPIC_CHARS} chars")
    for flag in ("hist", "bd"):
        if not isinstance(header.get(flag, False), bool):
            raise VerificationError("malformed", f"{flag} must be true or false")
    return Header(
        kid=kid,
        seq=_bounded_int(header, "seq", MAX_SEQ, required=True),  # type: ignore[arg-type]
        ts=_bounded_int(header, "ts", MAX_TS_MS, required=True),  # type: ignore[arg-type]
        tpc=tpc,
        hist=header.get("hist", False),
        bd=header.get("bd", False),
        exp=_bounded_int(header, "exp", MAX_TS_MS, required=False),
    )


@dataclass(frozen=True, slots=True)
class Sealed:
    """An envelope taken apart and its header bounded; the signature is not checked yet."""

    header: Header
    signing_input: bytes
    signature: bytes
    payload: bytes


def open_envelope(envelope: bytes, max_bytes: int | None = None) -> Sealed:
    """Take an envelope apart (size first, then msgpack, then the header), or raise
    ``VerificationError`` (``oversized``, ``malformed``). Reads nothing of the payload."""
    if max_bytes is not None and len(envelope) > max_bytes:
        raise VerificationError("oversized", f"{len(envelope)} bytes (limit {max_bytes})")
    jws, payload = split(envelope)
    protected, detached, sig_b64 = jws.split(".")
    if detached:
        raise VerificationError("malformed", "payload must be detached")
    header = parse_header(protected)
    try:
        signature = b64url_decode(sig_b64)
    except ValueError as err:
        raise VerificationError("malformed", "signature is not base64url") from err
    if len(signature) != 64:
        raise VerificationError("malformed", "an Ed25519 signature has 64 bytes")
    return Sealed(header, protected.encode("ascii") + b"." + payload, signature, payload)


@dataclass(frozen=True, slots=True)
class Verified:
    header: Header
    payload: bytes

    @property
    def seq(self) -> int:
        return self.header.seq

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
    if not jws.isascii():
        raise VerificationError("malformed", "jws must be ASCII")
    return jws, payload


def check_signature(sealed: Sealed, trust: Mapping[str, Ed25519PublicKey]) -> Verified:
    """The key id and signature of an opened envelope (``unknown_key``, ``bad_signature``)."""
    key = trust.get(sealed.header.kid)
    if key is None:
        raise VerificationError("unknown_key", f"kid {sealed.header.kid!r} is not trusted")
    try:
        key.verify(sealed.signature, sealed.signing_input)
    except InvalidSignature as err:
        raise VerificationError("bad_signature", "signature does not verify") from err
    return Verified(sealed.header, sealed.payload)


def verify(
    envelope: bytes,
    trust: Mapping[str, Ed25519PublicKey],
    topic: str | None,
    *,
    max_bytes: int | None = None,
) -> Verified:
    """Verify size, form, signature, key id and topic binding. ``topic=None`` skips the topic
    check.

    Raises ``VerificationError`` with reason ``oversized``, ``malformed``, ``unknown_key``,
    ``bad_signature`` or ``topic_mismatch``. Sequence and freshness checks are the caller's
    (they need state).
    """
    verified = check_signature(open_envelope(envelope, max_bytes), trust)
    if topic is not None and verified.header.tpc != topic:
        raise VerificationError("topic_mismatch", f"signed for {verified.header.tpc!r}")
    return verified
