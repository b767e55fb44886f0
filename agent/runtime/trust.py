"""The control trust file: which central keys may command which twins, and how.

``[[keys]] kid, public_key (path, relative to the file), twins (mRIDs or "*"), actions (or "*")``.
Read at start by the control service, and by ``edgetwin check`` (``agent.runtime.config``), so
that a trust file naming a missing or malformed key fails the check, not the start.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgetwin.core.errors import ConfigError
from edgetwin.core.files import read_config_text
from edgetwin.wire.keys import load_public


@dataclass(frozen=True)
class Grant:
    key: Ed25519PublicKey
    twins: frozenset[str]  # mRIDs, or {"*"}
    actions: frozenset[str]  # action names, or {"*"}

    def allows(self, mrid: str, action: str) -> bool:
        return ("*" in self.twins or mrid in self.twins) and (
            "*" in self.actions or action in self.actions
        )


def load_trust(path: Path) -> dict[str, Grant]:
    """The control trust file: ``[[keys]] kid, public_key (path), twins, actions``."""
    try:
        raw = tomllib.loads(read_config_text(path))
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror or err}"]) from err
    except ValueError as err:
        raise ConfigError([f"{path}: {err}"]) from err
    grants: dict[str, Grant] = {}
    problems: list[str] = []
    entries = raw.get("keys", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError([f"{path}: keys: expected [[keys]] entries (kid, public_key, ...)"])
    for i, entry in enumerate(entries):
        where = f"{path}: keys[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a table")
            continue
        kid, key_ref = entry.get("kid"), entry.get("public_key")
        twins, actions = entry.get("twins", []), entry.get("actions", [])
        if not isinstance(kid, str) or not kid:
            problems.append(f"{where}.kid: required: the key id central systems sign with")
            continue
        if kid in grants:
            problems.append(f"{where}.kid: duplicate key id {kid!r}")
        if not isinstance(key_ref, str):
            problems.append(f"{where}.public_key: required: the path of a public key (PEM)")
            continue
        if not _strings(twins) or not _strings(actions):
            problems.append(f"{where}: twins and actions must be lists of strings")
            continue
        key_path = Path(key_ref)
        key_path = key_path if key_path.is_absolute() else path.parent / key_path
        try:
            key = load_public(key_path)
        except OSError as err:
            problems.append(f"{where}.public_key: cannot read {key_path}: {err.strerror or err}")
            continue
        except ValueError as err:
            problems.append(f"{where}.public_key: {key_path}: not an Ed25519 public key ({err})")
            continue
        grants[kid] = Grant(key, frozenset(twins), frozenset(actions))
    if problems:
        raise ConfigError(problems)
    return grants


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)
