"""Every MQTT topic EdgeTwin publishes or listens on, in one place (both sides build them here).

* ``<prefix>/<module>/<Profile>/<mRID>``: OpenFMB profiles of one twin -- readings, status and
  events it publishes, the control profile central systems publish (``Profile.topic``);
* ``<prefix>/edgetwin/<Kind>/<agentId>``: the agent's own messages -- ``AgentState`` (retained
  birth and death), ``AgentStatus`` (health, periodic) and ``OutboxDropNotice`` (what the outbox
  had to drop, never silently).

``prefix`` is ``[mqtt] topic_prefix`` (``openfmb`` by default). Signed messages carry their topic
in the header (``tpc``), and receivers compare it with the topic the message arrived on.
"""

from __future__ import annotations

AGENT_STATE = "AgentState"
AGENT_STATUS = "AgentStatus"
DROP_NOTICE = "OutboxDropNotice"


def profile_topic(prefix: str, module: str, profile: str, mrid: str) -> str:
    return f"{prefix}/{module}/{profile}/{mrid}"


def agent_topic(prefix: str, kind: str, agent_id: str) -> str:
    return f"{prefix}/edgetwin/{kind}/{agent_id}"


def state_topic(prefix: str, agent_id: str) -> str:
    """The agent's retained birth / death certificate."""
    return agent_topic(prefix, AGENT_STATE, agent_id)
