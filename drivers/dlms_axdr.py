"""A-XDR data (IEC 62056-6-2 ``Data``): a bounded decoder for what a meter sends, and the few
encoders a client needs for its requests (selective access, a clock to set).

The decoder is the meter's input path, so it is written to refuse, never to break: any byte
string either decodes to plain Python values (``int``, ``float``, ``bool``, ``bytes`` for
octet strings, ``str``, ``list`` for arrays and structures, ``None`` for null-data) or raises
``AxdrError`` -- never another exception, never unbounded work: nesting is limited to
``MAX_DEPTH``, and an array may not claim more elements than bytes remain.

Date-times (the 12-octet COSEM ``date-time``, sent as an octet string or as tag 25) decode with
``cosem_datetime`` to an aware UTC ``datetime`` (the deviation says the meter's offset from
UTC; a meter that leaves it unspecified is taken as UTC) and the clock status octet.

What it leaves to others: which attribute holds what (``drivers.dlms``), the APDUs and
ciphering (dlms-cosem).
"""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

MAX_DEPTH = 8

#: tag -> fixed length in octets (integers, floats, enum, boolean)
_FIXED = {3: 1, 5: 4, 6: 4, 15: 1, 16: 2, 17: 1, 18: 2, 20: 8, 21: 8, 22: 1, 23: 4, 24: 8}
_SIGNED = {5, 15, 16, 20}
_STRINGS = {4, 9, 10, 12, 13}  # bit-string (length in bits), octet, visible, utf8, bcd
_DATES = {25: 12, 26: 5, 27: 4}

#: clock status bits (IEC 62056-6-2 4.1.6.1)
CLOCK_INVALID, CLOCK_DOUBTFUL, CLOCK_DST = 0x01, 0x02, 0x80
NOT_SPECIFIED = 0x8000  # deviation unknown


class AxdrError(ValueError):
    """The bytes are not valid A-XDR data (or exceed the bounds a meter's answer may have)."""


def decode(data: bytes) -> Any:
    """The one ``Data`` value ``data`` holds (trailing bytes are an error)."""
    value, end = decode_at(data, 0)
    if end != len(data):
        raise AxdrError(f"{len(data) - end} octets after the data")
    return value


def decode_at(data: bytes, pos: int, depth: int = 0) -> tuple[Any, int]:
    """The value starting at ``pos`` and the position after it."""
    if depth > MAX_DEPTH:
        raise AxdrError(f"data nested deeper than {MAX_DEPTH}")
    if pos >= len(data):
        raise AxdrError("data ends before a value")
    tag = data[pos]
    pos += 1
    if tag == 0:
        return None, pos
    if tag in (1, 2):
        count, pos = _length(data, pos)
        if count > len(data) - pos:
            raise AxdrError(f"{count} elements announced, {len(data) - pos} octets left")
        items = []
        for _ in range(count):
            item, pos = decode_at(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if tag in _FIXED:
        size = _FIXED[tag]
        raw = _take(data, pos, size)
        if tag == 23:
            return struct.unpack(">f", raw)[0], pos + size
        if tag == 24:
            return struct.unpack(">d", raw)[0], pos + size
        if tag == 3:
            return raw != b"\x00", pos + size
        return int.from_bytes(raw, "big", signed=tag in _SIGNED), pos + size
    if tag in _STRINGS:
        length, pos = _length(data, pos)
        size = (length + 7) // 8 if tag == 4 else length
        raw = _take(data, pos, size)
        if tag in (10, 12):
            return raw.decode("utf-8", "replace"), pos + size
        return raw, pos + size
    if tag in _DATES:
        size = _DATES[tag]
        return _take(data, pos, size), pos + size
    raise AxdrError(f"unknown or unsupported data tag {tag}")


def _length(data: bytes, pos: int) -> tuple[int, int]:
    first = _take(data, pos, 1)[0]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if not 1 <= size <= 4:
        raise AxdrError(f"length of {size} octets")
    return int.from_bytes(_take(data, pos + 1, size), "big"), pos + 1 + size


def octets_at(data: bytes, pos: int) -> tuple[bytes, int]:
    """A length-prefixed octet string at ``pos`` without its tag (as APDUs carry a system
    title or ciphered content) and the position after it."""
    size, start = _length(data, pos)
    return _take(data, start, size), start + size


def _take(data: bytes, pos: int, size: int) -> bytes:
    if pos + size > len(data):
        raise AxdrError(f"data ends {pos + size - len(data)} octets early")
    return data[pos : pos + size]


def cosem_datetime(raw: Any) -> tuple[dt.datetime | None, int]:
    """``(time in UTC, clock status)`` of a 12-octet COSEM date-time; ``None`` when the value
    is not a complete date-time (fields left unspecified, or out of range)."""
    if not isinstance(raw, bytes) or len(raw) != 12:
        return None, 0
    year = int.from_bytes(raw[0:2], "big")
    month, day, _dow, hour, minute, second, hundredths = raw[2:9]
    deviation = int.from_bytes(raw[9:11], "big", signed=False)
    status = raw[11]
    if status == 0xFF:
        status = 0
    try:
        local = dt.datetime(year, month, day, hour, minute, second,
                            0 if hundredths == 0xFF else hundredths * 10_000)  # fmt: skip
    except ValueError:
        return None, status
    if deviation == NOT_SPECIFIED:
        offset = 0
    else:
        offset = int.from_bytes(raw[9:11], "big", signed=True)
        if not -720 <= offset <= 840:
            return None, status
    # DLMS deviation: minutes *from local to UTC* (UTC = local + deviation), IEC 62056-6-2
    return (local + dt.timedelta(minutes=offset)).replace(tzinfo=dt.UTC), status


def datetime_octets(when: dt.datetime) -> bytes:
    """A COSEM date-time for ``when`` (aware), in UTC with deviation 0."""
    u = when.astimezone(dt.UTC)
    return (u.year.to_bytes(2, "big") + bytes([u.month, u.day, u.isoweekday(), u.hour,
            u.minute, u.second, u.microsecond // 10_000]) + b"\x00\x00\x00")  # fmt: skip


def octet_string(raw: bytes) -> bytes:
    return b"\x09" + _encode_length(len(raw)) + raw


def structure(*items: bytes) -> bytes:
    return b"\x02" + _encode_length(len(items)) + b"".join(items)


def array(items: list[bytes]) -> bytes:
    return b"\x01" + _encode_length(len(items)) + b"".join(items)


def long_unsigned(value: int) -> bytes:
    return b"\x12" + value.to_bytes(2, "big")


def integer(value: int) -> bytes:
    return b"\x0f" + value.to_bytes(1, "big", signed=True)


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw
