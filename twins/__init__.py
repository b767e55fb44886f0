"""Twins: per-asset adapters that give raw points their OpenFMB meaning and hold live state.

A twin kind stands on ``edgetwin.core``, the wire shapes (``edgetwin.wire.openfmb`` and
``edgetwin.wire.control``) and the rules that decide what it reports (``edgetwin.edge_rules``);
it never imports the agent or a driver, and is registered as an entry point in
``edgetwin.twins``."""
