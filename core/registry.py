"""The one place plugins are resolved: entry points ``edgetwin.drivers``, ``edgetwin.twins``
and ``edgetwin.rules``.

A plugin's module is imported only when a configuration names it, so an agent that polls only
Modbus never imports an OPC UA stack. Third-party packages add plugins by declaring entry points
in these groups; nothing is ever imported from a config string directly.

A plugin whose protocol library is an optional extra of its distribution (``edgetwin[opcua]``)
and not installed fails with one line naming the extra to install.
"""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from edgetwin.core.errors import PluginError

DRIVERS = "edgetwin.drivers"
TWINS = "edgetwin.twins"
RULES = "edgetwin.rules"


def available(group: str) -> list[str]:
    return sorted({ep.name for ep in entry_points(group=group)})


def load(group: str, name: str) -> Any:
    """Import and return the object registered as ``name`` in ``group``."""
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        known = ", ".join(available(group)) or "none installed"
        raise PluginError(f"no plugin {name!r} in {group} (known: {known})")
    try:
        return matches[0].load()
    except ModuleNotFoundError as err:
        extra = _extra_providing(matches[0], err.name or "")
        if extra is None:
            raise PluginError(f"plugin {name!r} in {group} failed to load: {err}") from err
        raise PluginError(
            f"plugin {name!r} needs {err.name}, which is not installed: pip install '{extra}'"
        ) from None
    except Exception as err:  # any import failure of a plugin is fatal at start-up
        raise PluginError(f"plugin {name!r} in {group} failed to load: {err}") from err


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extra_providing(ep: EntryPoint, module: str) -> str | None:
    """``dist[extra]`` when the missing ``module`` is a requirement of one of the extras of the
    plugin's distribution (module and requirement compared by normalised name)."""
    dist = ep.dist
    if dist is None or not module:
        return None
    wanted = _normal(module.partition(".")[0])
    for requirement in dist.requires or ():
        spec, _, marker = requirement.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        req_name = re.match(r"[A-Za-z0-9._-]+", spec.strip())
        if extra and req_name and _normal(req_name.group(0)) == wanted:
            return f"{dist.metadata['Name']}[{extra.group(1)}]"
    return None
