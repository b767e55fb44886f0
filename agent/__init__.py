"""The EdgeTwin agent: the one composition root that wires drivers, twins and rules together.

* ``runtime``: configuration, device polling, the data path, state, control and schedules;
* ``northbound``: the durable outbox and the signing MQTT publisher;
* ``operations``: HTTP health and metrics, systemd, the container supervisor, the status page;
* ``tools``: the command line (``edgetwin``), the demo, discovery, commissioning, brokers.

Plugins (``drivers``, ``twins``, ``edge_rules``) never import this package; they stand on
``edgetwin.core``. What travels on MQTT is ``edgetwin.wire``; the receiving side is
``edgetwin.central``.
"""
