"""Building paho-mqtt clients from configuration, and parsing ``mqtt://host:port`` URLs.

Shared by the publisher (agent side) and the subscriber (central side) so that TLS, credentials
and protocol version are set up in exactly one place.
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import MqttConfig


def parse_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` or ``mqtts://host:port`` -> (host, port, tls)."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError(f"not an MQTT URL: {url!r} (expected mqtt://HOST:PORT)")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


def make_client(cfg: MqttConfig, client_id: str) -> paho.Client:
    """A paho MQTT 5 client with credentials and TLS from ``cfg`` (not yet connected)."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
    )
    password = cfg.password
    if cfg.password_file is not None:
        password = cfg.password_file.read_text(encoding="utf-8").strip()
    if cfg.username is not None:
        client.username_pw_set(cfg.username, password)
    if cfg.tls is not None:
        client.tls_set(
            ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
            certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
            keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(cfg.tls.insecure)
    return client


def describe(err: BaseException) -> str:
    """Why a connection to a broker failed, in one line an operator can act on."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate was not accepted ({err.verify_message}); "
                "is mqtt.tls.ca_file the CA that signed it, and the host its name?")  # fmt: skip
    if isinstance(err, ssl.SSLError):
        return f"TLS: {err.reason or err}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on that port?)"
    if isinstance(err, socket.gaierror):
        return f"host name not found ({err.strerror})"
    if isinstance(err, TimeoutError | socket.timeout):
        return "no answer (timed out): a firewall, or the wrong host"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return f"{type(err).__name__}: {err}"
