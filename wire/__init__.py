"""What travels on MQTT, in the form both sides use: the agent builds it, the central side
(``edgetwin.central``) checks and reads it.

* ``envelope``: the signed msgpack envelope (JWS, Ed25519, detached payload) and its bounded
  header parsing;
* ``keys``: Ed25519 keys on disk and trust folders of public keys;
* ``topics``: every topic, in one place;
* ``openfmb``: the OpenFMB profile shapes EdgeTwin publishes (fields, value encodings, frames);
* ``control``: the control map of each controllable kind;
* ``mqtt``: MQTT 5 sessions (credentials, TLS) and one-line connection errors.

A new northbound encoding (OpenFMB protobuf, Sparkplug B) goes here, beside ``envelope``, so that
the central side decodes what the agent encodes with the same code. Stands on ``edgetwin.core``
only: nothing here imports the agent, a driver or a twin.
"""
