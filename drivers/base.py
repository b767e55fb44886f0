"""The driver contract: what a protocol plugin must do, and what the runtime does for it.

A driver speaks one protocol to one device. It does **not** schedule, retry, back off, time out,
track availability, scale values or log failures: the runtime wrapper (``agent.runtime.running``)
owns all of that, so every driver gets the same behaviour.

Call order and guarantees the runtime gives a driver:

1. ``__init__(config, points, shared)`` once, with the validated config model, the points to
   serve, and ``shared``: a dict owned by the agent (one per agent) where drivers keep resources
   several devices use, such as one serial line or one gateway connection for many unit ids.
   No I/O here; raise ``ValueError`` for a point the driver cannot serve or settings that
   conflict with a shared resource (the config loader turns it into a ``ConfigError``).
2. ``connect()`` before the first ``read``; again after any ``DeviceUnavailable`` (the runtime
   calls ``close()`` first and waits out its backoff).
3. ``read(points)`` at most once at a time per driver instance (never concurrently), always
   with a subset of the points given at construction, wrapped by the runtime in the device's
   timeout. It returns one ``Reading`` per point, in any order; an event-driven driver may
   return several for a point whose state changed more than once since the last read (a
   breaker's intermediate, open, closed: events are kept, only measurements take the latest),
   each point's readings oldest first, and the runtime reports each in turn. A point the
   device refused gets an invalid quality; a device that does not answer raises
   ``DeviceUnavailable``. A driver declaring ``reports_changes = True`` (event-driven
   protocols, whose values arrive by themselves) returns only the points reported since they
   were last returned -- every point at the first read after ``connect``, and a point asked
   for alone always -- so a read of 1,000 steady points costs nothing; the twins keep the
   last sample of the others.
4. ``write(point, value)`` is never called concurrently with ``read``.
5. ``close()`` is idempotent and never called during a ``read`` or ``write``.

Optional abilities (discovery, subscriptions) are separate protocols so this one stays stable.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from edgetwin.core.models import Reading, Value
from edgetwin.core.points import PointSpec

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_host(value: str) -> str:
    """A host name (RFC 1123) or an IPv4 / IPv6 address: no spaces, no newlines, no empty
    labels, and dotted numbers only as a real IPv4 address (``999.1.1.1`` is refused)."""
    text = value.strip("[]") if value.startswith("[") else value
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", text):
        raise ValueError(f"{value!r} is not a valid IPv4 address")
    labels = text.rstrip(".").split(".")
    if not text or len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{value!r} is not a host name or an IP address")
    return text


Host = Annotated[str, AfterValidator(check_host)]


class DeviceConfig(BaseModel):
    """Settings every device has, whatever its driver. Drivers extend this model."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="unique device name")
    driver: str
    poll_interval_s: float = Field(1.0, ge=0.01, le=86_400)
    timeout_s: float = Field(1.0, ge=0.01, le=60, description="one request's answer")
    connect_timeout_s: float = Field(
        10.0, ge=0.1, le=300, description="opening the link or session (OPC UA: several steps)"
    )
    backoff_initial_s: float = Field(1.0, ge=0.01, le=3600)
    backoff_max_s: float = Field(60.0, ge=0.01, le=86_400)


#: What a reading's source time means, declared by a driver as ``source_timestamps``:
#: ``"sample"`` -- when this sample was taken (a value whose time stops moving is old data);
#: ``"change"`` -- when the value last changed (OPC UA's SourceTimestamp, DNP3 and IEC 104
#: event times): a steady value keeps its time and is not old; such protocols report staleness
#: in their own status flags, which the driver maps to quality. Optional; default ``"sample"``.
SourceTimestamps = Literal["sample", "change"]


def source_timestamps(driver_class: type) -> SourceTimestamps:
    value = getattr(driver_class, "source_timestamps", "sample")
    return "change" if value == "change" else "sample"


@runtime_checkable
class Driver(Protocol):
    """A protocol driver bound to one device (see the module docstring for call order).
    Optionally it declares ``source_timestamps`` (``SourceTimestamps``)."""

    config_model: ClassVar[type[DeviceConfig]]

    def __init__(
        self, config: Any, points: Sequence[PointSpec], shared: dict[str, Any] | None = None
    ) -> None: ...

    async def connect(self) -> None: ...

    async def read(self, points: Sequence[PointSpec]) -> list[Reading]: ...

    async def write(self, point: PointSpec, value: Value) -> None: ...

    async def close(self) -> None: ...

    @property
    def stats(self) -> dict[str, int]:
        """Protocol-level counters (e.g. requests sent), for status and benchmarks."""
        ...
