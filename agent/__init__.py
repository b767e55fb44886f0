"""EdgeTwin agent runtime: configuration, scheduling, durable outbox, signing and MQTT publishing.

The agent owns every cross-cutting concern of the data path; drivers (``drivers/``) only speak
their protocol, twins (``twins/``) only give readings their meaning, and rules (``edge_rules/``)
only decide what is worth reporting.
"""

__version__ = "0.1.0"
