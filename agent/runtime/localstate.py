"""Files the agent keeps in its data folder for local tools (the CLI, a technician on site).

* ``status.json``: devices, twins, outbox, MQTT session (written every ``status_interval_s``);
* ``twins.json``: every twin's live state -- value, quality and time per field;
* ``commissioning.json``: which twins a technician has commissioned, when, and the checks;
* ``alarms.json``: every twin's alarms that are raised (or chattering) now.

Writes are atomic (temporary file, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgetwin.core.errors import StartError
from edgetwin.core.files import state_dir, write_state
from edgetwin.twins.base import Twin, TwinState

STATUS, TWINS, COMMISSIONING = "status.json", "twins.json", "commissioning.json"
ALARMS = "alarms.json"


def write_json(path: Path, obj: Any) -> None:
    """Replace ``path`` atomically with ``obj`` as JSON (mode 0640: ``core.files``)."""
    write_state(path, json.dumps(obj, indent=2, default=str))


def read_json(data_dir: Path, name: str) -> Any:
    return json.loads((data_dir / name).read_text())


def summary(st: TwinState) -> dict[str, Any]:
    """What status.json and twins.json both say of a twin."""
    return {
        "name": st.name,
        "kind": st.kind,
        "device": st.device,
        "available": st.available,
        "last_update": st.last_update,
    }


def twins_snapshot(twins: Iterable[Twin], commissioned: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for twin in twins:
        st = twin.state()
        out[st.mrid] = {
            **summary(st),
            "commissioned": st.mrid in commissioned,
            "points": {
                field: {
                    "value": r.value,
                    "units": st.units.get(field, ""),
                    "quality": r.quality.to_wire(),
                    "t": r.ts,
                }
                for field, r in sorted(st.points.items())
            },
        }
    return out


def active_alarms(twins: Iterable[Twin]) -> list[dict[str, Any]]:
    """Raised or chattering alarms of every twin, highest priority first, then oldest."""
    from edgetwin.edge_rules.alarm import PRIORITIES

    out = []
    for twin in twins:
        engine = getattr(twin, "rules", None)
        if engine is None:
            continue
        for alarm in engine.alarms():
            if alarm.active or alarm.chattering:
                out.append({"mrid": twin.spec.mrid, "twin": twin.spec.name, **alarm.view()})
    out.sort(key=lambda a: (PRIORITIES.index(a["priority"]), a["raisedAt"] or 0))
    return out


def commissioned(data_dir: Path) -> dict[str, Any]:
    try:
        return dict(read_json(data_dir, COMMISSIONING))
    except FileNotFoundError:
        return {}


def record_commissioning(data_dir: Path, mrid: str, checks: list[dict[str, Any]]) -> None:
    records = commissioned(data_dir)
    records[mrid] = {"ts": time.time(), "checks": checks}
    state_dir(data_dir)
    write_json(data_dir / COMMISSIONING, records)


LOCK = "agent.lock"


class AgentLock:
    """Held (``flock``) by the running agent on ``<data_dir>/agent.lock``: readers of the state
    files learn whether an agent is running, without trusting a pid file (the kernel drops the
    lock when the process dies, however it dies), and a second agent on the same data folder --
    which would publish the same outbox twice -- is refused at start."""

    def __init__(self, data_dir: Path) -> None:
        self.path = state_dir(data_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartError(
                f"another agent is running on {self.path.parent} (it holds {self.path})"
            ) from None
        with contextlib.suppress(OSError):  # for people; the lock is what counts (full disk)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def agent_running(data_dir: Path) -> bool:
    """Whether an agent holds ``data_dir``'s lock now."""
    import fcntl

    try:
        fd = os.open(data_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def freshness(data_dir: Path, name: str, now: float | None = None) -> dict[str, Any]:
    """How much to trust the state file ``name``: written when, how long ago, and whether
    the agent that writes it is running (if not, nothing in it is live)."""
    mtime = (data_dir / name).stat().st_mtime
    now = time.time() if now is None else now
    return {
        "agent_running": agent_running(data_dir),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime)),
        "age_s": round(max(0.0, now - mtime), 1),
    }


def freshness_line(info: dict[str, Any]) -> str:
    """One line for the people reading a state file, e.g. at the top of ``twin list``."""
    state = "agent running" if info["agent_running"] else "AGENT NOT RUNNING: nothing here is live"
    return f"# {state}; written {info['written']} ({info['age_s']:g} s ago)"
