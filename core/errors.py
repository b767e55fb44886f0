"""The EdgeTwin exception tree, in one place.

::

    EdgeTwinError
     ├── ConfigError            invalid configuration; nothing starts (names file, key, expectation)
 ├── StartError             valid, but cannot start here (a port in use); nothing runs
     ├── PluginError            a plugin could not be found or loaded (fatal at start-up)
     ├── DeviceError            raised by drivers
     │    ├── DeviceUnavailable     no answer: timeout, connection refused or lost
     │    └── DeviceRejected        the device answered with an error (e.g. a Modbus exception)
     ├── OutboxError            the durable outbox could not accept or keep a message
     └── VerificationError      a signed envelope failed verification (reason in ``.reason``)

Library errors are re-raised as one of these with ``raise ... from err`` so callers never depend
on a third-party exception type.
"""

from __future__ import annotations

import re
from typing import Any


class EdgeTwinError(Exception):
    """Base of every error EdgeTwin raises on purpose."""


class StartError(EdgeTwinError):
    """The agent cannot start as configured (e.g. its HTTP port is taken); one line says why."""


class ConfigError(EdgeTwinError):
    """The configuration is invalid. ``problems`` lists one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class PluginError(EdgeTwinError):
    """A driver, twin or rule plugin could not be resolved or loaded."""


class DeviceError(EdgeTwinError):
    """A field device could not be read or written."""


class DeviceUnavailable(DeviceError):
    """The device did not answer (timeout, refused or dropped connection)."""


class DeviceRejected(DeviceError):
    """The device answered, but with an error (e.g. a Modbus exception code)."""

    def __init__(self, message: str, *, code: int | None = None, answer: str | None = None) -> None:
        self.code = code
        #: the device's own answer in its protocol's words (e.g. DNP3 ``LOCAL``), for results
        self.answer = answer
        super().__init__(message)


class OutboxError(EdgeTwinError):
    """The outbox could not durably accept a message (e.g. disk full)."""


class VerificationError(EdgeTwinError):
    """A signed envelope did not verify. ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def validation_problems(err: Any) -> list[tuple[tuple[int | str, ...], str]]:
    """(key path, message) for each error of a pydantic ``ValidationError``, in the words every
    EdgeTwin config error uses: a missing key, an unknown key, or pydantic's message with the
    value that was given."""
    out = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        elif "input" in e and not isinstance(e["input"], dict | list):
            secret = any(isinstance(k, str) and SECRET.search(k) for k in e["loc"])
            shown = "<hidden>" if secret else repr(e["input"])
            msg += f" (got {shown[:200]})"
        out.append((tuple(e["loc"]), msg))
    return out


#: keys whose values a config error never echoes
SECRET = re.compile(r"password|secret|token|passphrase", re.IGNORECASE)
