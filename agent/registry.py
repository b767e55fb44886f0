"""The one place plugins are resolved: entry points ``edgetwin.drivers``, ``edgetwin.twins``
and ``edgetwin.rules``.

A plugin's module is imported only when a configuration names it, so an agent that polls only
Modbus never imports an OPC UA stack. Third-party packages add plugins by declaring entry points
in these groups; nothing is ever imported from a config string directly.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from agent.errors import PluginError

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
    except Exception as err:  # any import failure of a plugin is fatal at start-up
        raise PluginError(f"plugin {name!r} in {group} failed to load: {err}") from err
