"""Alarms: a condition becomes a raised alarm, and later a cleared one, with delays and flood
suppression. Rules own alarms and feed them a condition at every evaluation; the alarm says
which events to publish. No I/O and no clock of its own: callers pass ``now``.

* **On / off delays**: the condition must hold for ``on_delay_s`` before the alarm is raised,
  and be gone for ``off_delay_s`` before it clears (a transient does nothing).
* **Unknown condition** (``None``, e.g. the inputs are not of good quality): the alarm holds
  its state and any pending delay restarts; it neither raises nor clears on data it cannot trust.
* **Chattering** (ISA-18.2's term): an alarm raised more than ``flood.max_raises`` times within
  ``flood.window_s`` publishes one ``chattering`` event and then nothing for its transitions,
  only counting them; once it has been quiet for ``window_s``, one summary event gives its
  current state and how many transitions were suppressed. Its state stays exact meanwhile.

Event bodies (the ``alarm`` map of the twin's event profile)::

    {"name", "state": "raised" | "cleared" | "chattering", "priority", "raisedAt",
     "clearedAt" and "durationS" (cleared), "value", "message", ...detail,
     "suppressed" (summary only)}

Keys ending in ``At`` are times (seconds since the epoch here; OpenFMB timestamps on the wire).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PRIORITIES = ("critical", "high", "medium", "low")


@dataclass(frozen=True, slots=True)
class FloodPolicy:
    max_raises: int = 5
    window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class AlarmSpec:
    name: str
    priority: str = "medium"
    message: str = ""
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    flood: FloodPolicy = FloodPolicy()


@dataclass(slots=True)
class Alarm:
    spec: AlarmSpec
    active: bool = False
    raised_at: float | None = None
    cleared_at: float | None = None
    value: Any = None
    detail: dict[str, Any] = field(default_factory=dict)
    _pending_since: float | None = None  # the condition differs from ``active`` since then
    _raises: deque[float] = field(default_factory=deque)
    chattering: bool = False
    suppressed: int = 0
    _last_transition: float = 0.0

    def update(
        self,
        condition: bool | None,
        now: float,
        value: Any = None,
        detail: Callable[[], dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Feed the condition at ``now``; return the event bodies to publish (often none).
        ``detail`` is called only when the condition would raise the alarm, after ``value`` is
        recorded (it is the common case that nothing changes: rules run after every poll)."""
        if self.quiet(condition, now):
            if condition and self.active:
                self.value = value
            return []
        events: list[dict[str, Any]] = []
        if condition is not None and condition != self.active:
            if condition:  # what raises it is what it reports (detail may read the value)
                self.value = value
                self.detail = detail() if detail else {}
            delay = self.spec.on_delay_s if condition else self.spec.off_delay_s
            if self._pending_since is None:
                self._pending_since = now
            if now - self._pending_since >= delay:
                self._pending_since = None
                events.extend(self._transition(condition, now, value))
        else:
            self._pending_since = None
            if condition and self.active:
                self.value = value
        if self.chattering and now - self._last_transition >= self.spec.flood.window_s:
            self.chattering = False
            events.append(self.body("raised" if self.active else "cleared", suppressed=True))
            self.suppressed = 0
        return events

    def quiet(self, condition: bool | None, now: float) -> bool:
        """Whether feeding ``condition`` at ``now`` would change nothing but the value: the
        state agrees, or a delay is running and not yet over. Checked first, cheaply: rules
        evaluate after every poll and this is the common case."""
        if self.chattering and now - self._last_transition >= self.spec.flood.window_s:
            return False  # quiet long enough: the summary is due
        if condition is None or condition is self.active or condition == self.active:
            return self._pending_since is None
        if self._pending_since is None:
            return False
        delay = self.spec.on_delay_s if condition else self.spec.off_delay_s
        return now - self._pending_since < delay

    @property
    def timing(self) -> bool:
        """A delay is running or a chattering summary is pending: time alone matters now."""
        return self._pending_since is not None or self.chattering

    @property
    def idle(self) -> bool:
        """Not raised, nothing pending, not chattering: a false condition changes nothing."""
        return not self.active and self._pending_since is None and not self.chattering

    def _transition(self, raise_: bool, now: float, value: Any) -> list[dict[str, Any]]:
        self.active = raise_
        self._last_transition = now
        if raise_:
            self.raised_at, self.cleared_at = now, None
            self._raises.append(now)
        else:
            self.cleared_at = now
            self.value = value
        while self._raises and now - self._raises[0] > self.spec.flood.window_s:
            self._raises.popleft()
        if self.chattering:
            self.suppressed += 1
            return []
        if len(self._raises) > self.spec.flood.max_raises:
            self.chattering = True
            self.suppressed = 0
            return [self.body("chattering", raises=len(self._raises))]
        return [self.body("raised" if raise_ else "cleared")]

    def body(self, state: str, *, suppressed: bool = False, raises: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.spec.name,
            "state": state,
            "priority": self.spec.priority,
            "raisedAt": self.raised_at,
            "value": self.value,
            "message": self.spec.message,
            **self.detail,
        }
        if self.cleared_at is not None and not self.active:
            out["clearedAt"] = self.cleared_at
            if self.raised_at is not None:
                out["durationS"] = round(self.cleared_at - self.raised_at, 3)
        if suppressed:
            out["suppressed"] = self.suppressed
        if raises:
            out["raisesInWindow"] = raises
            out["windowS"] = self.spec.flood.window_s
        return out

    def view(self) -> dict[str, Any]:
        """For ``edgetwin alarms``: the alarm's state now."""
        return {**self.body("raised" if self.active else "cleared"), "chattering": self.chattering}

    def snapshot(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "raised_at": self.raised_at,
            "cleared_at": self.cleared_at,
            "value": self.value,
            "detail": self.detail,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.active = bool(state.get("active"))
        self.raised_at = state.get("raised_at")
        self.cleared_at = state.get("cleared_at")
        self.value = state.get("value")
        self.detail = dict(state.get("detail") or {})


def beyond(
    value: Any,
    active: bool,
    *,
    above: float | None = None,
    below: float | None = None,
    hysteresis: float = 0.0,
) -> bool | None:
    """A limit condition with hysteresis: raised beyond a limit, cleared only once back inside
    it by ``hysteresis``. ``None`` when the value is unknown."""
    if value is None or isinstance(value, str):
        return None
    v = float(value)
    margin = hysteresis if active else 0.0
    if above is not None and v > above - margin:
        return True
    return below is not None and v < below + margin
