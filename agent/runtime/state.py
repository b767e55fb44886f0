"""The agent's birth and death certificates (retained, on ``<prefix>/edgetwin/AgentState/<id>``).

Birth: ``{"state": "online", "agentId", "version", "bdSeq", "ts", "twins": [...]}`` where each
twin lists its mRID, name, kind, device, the profiles it publishes (name and topic), its points
(field and units) and the controls it accepts. Death: ``{"state": "offline", "agentId",
"bdSeq"}``, signed before the session starts and left with the broker as the last will; a birth
and the death that ends it share ``bdSeq``. A subscriber that sees the retained state learns
whether the agent is alive and what it offers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from edgetwin.core import __version__
from edgetwin.twins.base import Twin
from edgetwin.wire.envelope import pack
from edgetwin.wire.topics import state_topic


def describe(twin: Twin) -> dict[str, Any]:
    s = twin.spec
    return {
        "mRID": s.mrid,
        "name": s.name,
        "kind": s.kind,
        "device": s.device,
        "profiles": [
            {"name": p.name, "topic": p.topic(s.topic_prefix, s.mrid)} for p in twin.profiles
        ],
        "points": [
            {"field": bp.field, "units": bp.entry.units}
            for bp in twin.bound_points()
            if not bp.field.startswith("@")
        ],
        "controls": list(twin.actions()) if hasattr(twin, "actions") else [],
    }


class AgentState:
    """``StateMessages`` for the publisher."""

    def __init__(self, agent_id: str, prefix: str, twins: Sequence[Twin]) -> None:
        self.agent_id = agent_id
        self.topic = state_topic(prefix, agent_id)
        self._twins = list(twins)

    def birth(self, bdseq: int) -> tuple[str, bytes]:
        return self.topic, pack(
            {
                "state": "online",
                "agentId": self.agent_id,
                "version": __version__,
                "bdSeq": bdseq,
                "ts": int(time.time() * 1000),
                "twins": [describe(t) for t in self._twins],
            }
        )

    def death(self, bdseq: int) -> tuple[str, bytes]:
        return self.topic, pack({"state": "offline", "agentId": self.agent_id, "bdSeq": bdseq})
