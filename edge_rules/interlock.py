"""Interlocks for control, as rules over the twin's state.

``[[twins.interlocks]]`` refuses a control ``action`` while a condition holds::

    [[twins.interlocks]]
    action = "close"
    when = "readingMMXU.A.net > 5 or outage"   # any expression (edge_rules.expr)
    reason = "feeder energised or outage in progress"

or, in the short form, ``field`` with ``equals`` / ``above`` / ``below``. The expression reads any
point of the twin -- mapped, derived, or a rule's output (``outage``, a threshold rule's alarm
state, ``loading_pct``) -- so the control path refuses on the same state the rules see. Every
point it reads must be known with good quality, otherwise the action is refused too: an
interlock that cannot be evaluated blocks.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, model_validator

from edgetwin.core.models import Reading
from edgetwin.edge_rules.expr import Expression, compile_expression


class InterlockSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    action: str
    when: str | None = None
    field: str | None = None
    equals: bool | float | str | None = None
    above: float | None = None
    below: float | None = None
    reason: str = ""

    @model_validator(mode="after")
    def _one_form(self) -> InterlockSettings:
        short = self.equals is not None or self.above is not None or self.below is not None
        if self.when is not None and (self.field is not None or short):
            raise ValueError("give either when, or field with equals / above / below")
        if self.when is None and (self.field is None or not short):
            raise ValueError("give when, or field with equals / above / below")
        if isinstance(self.equals, str) and ("'" in self.equals or '"' in self.equals):
            raise ValueError("equals: a string without quotes")
        return self

    def expression(self) -> str:
        if self.when is not None:
            return self.when
        parts = []
        if isinstance(self.equals, bool):
            parts.append(f"{self.field} == {str(self.equals).lower()}")
        elif isinstance(self.equals, str):
            parts.append(f"{self.field} == '{self.equals}'")
        elif self.equals is not None:
            parts.append(f"{self.field} == {self.equals!r}")
        if self.above is not None:
            parts.append(f"{self.field} > {self.above!r}")
        if self.below is not None:
            parts.append(f"{self.field} < {self.below!r}")
        return " or ".join(parts)


@dataclass(frozen=True)
class Interlock:
    action: str
    expr: Expression
    reason: str

    @classmethod
    def build(cls, settings: InterlockSettings, known: Collection[str]) -> Interlock:
        """Raises ``edge_rules.expr.ExpressionError``."""
        return cls(
            settings.action, compile_expression(settings.expression(), known), settings.reason
        )

    def blocks(self, points: Mapping[str, Reading]) -> str | None:
        """Why ``action`` is refused now, or None if the interlock allows it."""
        values = {}
        for name in self.expr.names:
            r = points.get(name)
            if r is None or not r.quality.is_good:
                return f"{name} is not known with good quality"
            values[name] = r.value
        verdict = self.expr(values)
        if verdict is None:
            return f"{self.expr.source} cannot be evaluated"
        if not verdict:
            return None
        if self.reason:
            return self.reason
        shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
        return f"{self.expr.source} ({shown})"
