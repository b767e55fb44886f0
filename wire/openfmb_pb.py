"""OpenFMB 2.x protobuf encoding of the profile maps ``wire.openfmb`` builds (issue 15, part 1:
the encoder; the agent does not publish it yet -- ``[mqtt] encoding`` and the detached
signature come next).

The schema is the published one, compiled: PyPI ``oes-protobuf`` (OpenFMB 2.2 bindings,
``openfmb.<module>.<module>_pb2``; extra ``edgetwin[openfmb-protobuf]``). No field number is
written here. A profile map is shaped as OpenFMB's JSON mapping already; what differs is
adapted by walking the message descriptor:

* enumerations are named ``<EnumType>_<value>`` in the schema (``ValidityKind_good``,
  ``DbPosKind_closed``, ``HealthKind_OK``): our ``"good"``, ``"closed"``, ``"OK"`` are matched
  to them (case-insensitive); a value with no such enumerator is an error, never a guess;
* a single-phase status (``{q, t, stVal}``) where the schema has a per-phase message
  (``PhaseDPS``: ``phs3``, ``phsA``, ...) is put in ``phs3`` (three-phase, as a breaker's
  position is);
* where the schema's status has no quality and time (``ENS_HealthKind``: ``stVal`` only;
  ``Optional_StateKind``: ``value`` only) only the value goes (EEHealth's and PointStatus'
  quality is then not on the wire: the msgpack envelope keeps it);
* a repeated message the schema has (``switchReading``) gets our one map as its one element;
* ``NOT_IN_SCHEMA`` fields (the delta ``PPV.net`` SunSpec gives, the operation counter
  ``OpCnt`` of switch and breaker status) are left out;
* everything else -- message info, conducting equipment, timestamps, quality with its detail
  flags, wrapped numbers -- goes through ``google.protobuf.json_format`` unchanged, strictly:
  a key the schema does not have is an error.

Profiles OpenFMB does not define (EdgeTwin's event, analytics, interval, billing, meter
control and generic profiles) raise ``NotInOpenFMB``: they keep the msgpack envelope.

What it leaves to others: topics, signing and the MQTT session.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from edgetwin.wire.openfmb import Profile

#: fields our maps carry that the schema has no place for: left out of the protobuf
NOT_IN_SCHEMA = {
    "commonmodule.DEL": {"net"},  # a delta "net" voltage (SunSpec PPV net)
    "commonmodule.StatusAndEventXCBR": {"OpCnt"},  # OpenFMB 2.2 status has no operation count
    "switchmodule.SwitchStatusXSWI": {"OpCnt"},
}


class NotInOpenFMB(LookupError):
    """The profile has no OpenFMB protobuf message (an EdgeTwin extension)."""


def message_class(profile: Profile) -> Any:
    """The compiled OpenFMB class of ``profile`` (``NotInOpenFMB`` if there is none)."""
    try:
        module = importlib.import_module(f"openfmb.{profile.module}.{profile.module}_pb2")
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("openfmb"):
            raise NotInOpenFMB(f"no OpenFMB module {profile.module}") from None
        raise  # the bindings are not installed: pip install 'edgetwin[openfmb-protobuf]'
    cls = getattr(module, profile.name, None)
    if cls is None:
        raise NotInOpenFMB(f"{profile.module}.{profile.name} is an EdgeTwin extension")
    return cls


def encode(profile: Profile, payload: Mapping[str, Any]) -> bytes:
    """The protobuf bytes of ``payload`` (a map ``profile`` built)."""
    from google.protobuf import json_format

    cls = message_class(profile)
    shaped = _shape(payload, cls.DESCRIPTOR, cls.DESCRIPTOR.full_name)
    message = json_format.ParseDict(shaped, cls())
    return bytes(message.SerializeToString(deterministic=True))


def decode(profile: Profile, data: bytes) -> dict[str, Any]:
    """The protobuf message as a map (OpenFMB's JSON mapping: enumerator names as in the
    schema)."""
    from google.protobuf import json_format

    cls = message_class(profile)
    message = cls()
    message.ParseFromString(data)
    return dict(json_format.MessageToDict(message))


def _shape(node: Any, desc: Any, where: str) -> Any:
    if not isinstance(node, Mapping):
        raise ValueError(f"{where}: expected a map for {desc.full_name}, got {type(node).__name__}")
    fields = {f.json_name: f for f in desc.fields} | {f.name: f for f in desc.fields}
    if "phs3" in fields and "phs3" not in node and not set(node) <= set(fields):
        node = {"phs3": node}
    if "q" not in fields and "stVal" in node:  # ENS_HealthKind, Optional_StateKind: no q, t
        node = {"stVal" if "stVal" in fields else "value": node["stVal"]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        field = fields.get(key)
        if field is None:
            if key in NOT_IN_SCHEMA.get(desc.full_name, ()):
                continue
            raise ValueError(f"{where}: {desc.full_name} has no field {key!r}")
        at = f"{where}.{key}"
        if field.message_type is not None and not field.message_type.full_name.startswith(
            "google.protobuf."
        ):
            if _repeated(field):  # one of ours is one element (a switch's one reading)
                items = value if isinstance(value, list) else [value]
                out[key] = [_shape(v, field.message_type, at) for v in items]
            else:
                out[key] = _shape(value, field.message_type, at)
        elif field.enum_type is not None:
            out[key] = _enumerator(field.enum_type, value, at)
        else:
            out[key] = value
    return out


def _repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 5; older: the label
    return bool(field.label == field.LABEL_REPEATED if repeated is None else repeated)


def _enumerator(enum: Any, value: Any, where: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{where}: {value!r} is not a {enum.name}")
    if isinstance(value, int):
        if value not in enum.values_by_number:
            raise ValueError(f"{where}: {value} is not a {enum.name}")
        return value
    names = {v.name.lower(): v.name for v in enum.values}
    found = names.get(value.lower()) or names.get(f"{enum.name}_{value}".lower())
    if found is None:
        raise ValueError(f"{where}: {value!r} is not a {enum.name}")
    return found
