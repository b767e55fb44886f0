"""The agent's MQTT clients from its configuration (``[mqtt]``): the password read from its file,
TLS settings mapped onto ``wire.mqtt.new_client``, which sets up every session both sides open."""

from __future__ import annotations

import paho.mqtt.client as paho

from edgetwin.agent.runtime.config import MqttConfig
from edgetwin.wire.mqtt import Tls, new_client


def make_client(cfg: MqttConfig, client_id: str) -> paho.Client:
    """A paho MQTT 5 client with credentials and TLS from ``cfg`` (not yet connected)."""
    password = cfg.password
    if cfg.password_file is not None:
        password = cfg.password_file.read_text(encoding="utf-8").strip()
    tls = None
    if cfg.tls is not None:
        tls = Tls(cfg.tls.ca_file, cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.insecure)
    return new_client(client_id, username=cfg.username, password=password, tls=tls)
