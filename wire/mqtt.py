"""MQTT sessions as both sides open them: paho-mqtt clients (MQTT 5, credentials, TLS), parsing
``mqtt://host:port`` URLs, and one-line reasons for a failed connection.

Shared by the agent's publisher and control listener (``agent.northbound.mqtt`` maps the agent's
config onto ``new_client``) and by the central side, so that TLS, credentials and protocol version
are set up in exactly one place. What it leaves to others: topics, QoS, sessions, retries.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS towards the broker: the CA that signed its certificate (None: the system's), and a
    client certificate and key for brokers that require one."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip the host name check (test brokers only)


def parse_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` or ``mqtts://host:port`` -> (host, port, tls)."""
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError(f"not an MQTT URL: {url!r} (expected mqtt://HOST:PORT)")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


def new_client(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    tls: Tls | None = None,
) -> paho.Client:
    """A paho MQTT 5 client (callback API 2) with credentials and TLS, not yet connected."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(tls.insecure)
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
