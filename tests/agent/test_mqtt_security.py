"""The agent's MQTT session over TLS with a username and password file, against mosquitto."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgetwin.agent.runtime.app import Agent
from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.meter import MeterSimulator
from tests.helpers import until
from tests.test_end_to_end import running


def _cert(subject: str, key, issuer_key, issuer: x509.Name | None, *, ca: bool):  # type: ignore[no-untyped-def]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, obj) -> Path:  # type: ignore[no-untyped-def]
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    d = tmp_path / "tls"
    d.mkdir()
    ca_key, srv_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _cert("EdgeTwin test CA", ca_key, ca_key, None, ca=True)
    srv = _cert("127.0.0.1", srv_key, ca_key, ca.subject, ca=False)
    ca_pem = _pem(d / "ca.pem", ca)
    passwd = d / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "edgetwin", "s3cret"], check=True)
    broker = Mosquitto(
        tmp_path / "broker",
        listener_options=[
            f"cafile {ca_pem}",
            f"certfile {_pem(d / 'srv.pem', srv)}",
            f"keyfile {_pem(d / 'srv.key', srv_key)}",
            "allow_anonymous false",
            f"password_file {passwd}",
        ],
    ).start()
    yield broker, ca_pem
    broker.stop()


@contextlib.asynccontextmanager
async def agent_with_password(
    broker: Mosquitto, ca: Path, make_config: Callable[..., Path], folder: Path, password: str
) -> AsyncIterator[Agent]:
    """A running agent on a simulated meter, logging in over TLS as ``edgetwin``/``password``."""
    (folder / "mqtt.password").write_text(password + "\n")
    mqtt = {
        "username": "edgetwin",
        "password_file": folder / "mqtt.password",
        "tls": {"ca_file": ca},
    }
    async with MeterSimulator(port=free_port()) as sim:
        cfg = make_config(mqtt_port=broker.port, devices=[("meter1", sim.port)], mqtt_extra=mqtt)
        async with running(cfg) as agent:
            yield agent


async def test_publishes_over_tls_with_username_and_password_file(
    secure_broker: tuple[Mosquitto, Path], make_config: Callable[..., Path], tmp_path: Path
) -> None:
    async with agent_with_password(*secure_broker, make_config, tmp_path, "s3cret") as agent:
        await until(lambda: agent.publisher.acked >= 2, what="PUBACKs over TLS")  # type: ignore[union-attr]


async def test_wrong_password_is_refused_retried_and_nothing_is_lost(
    secure_broker: tuple[Mosquitto, Path],
    make_config: Callable[..., Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edgetwin.agent.northbound.publisher")
    async with agent_with_password(*secure_broker, make_config, tmp_path, "wrong") as agent:
        await until(lambda: agent.outbox.depth >= 2, what="readings queued")  # type: ignore[union-attr]
        # the TLS handshake and the CONNACK take their time on a loaded machine: wait for it
        await until(lambda: "refused the connection" in caplog.text, 30, "the refusal logged")
        assert not agent.publisher.connected and agent.publisher.acked == 0  # type: ignore[union-attr]


# -- loud, one-line failures, at the moment they happen (issue 11) ------------------------------
async def test_a_broker_certificate_from_another_ca_is_named_as_such(
    secure_broker: tuple[Mosquitto, Path],
    make_config: Callable[..., Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, _ = secure_broker
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _pem(
        tmp_path / "other-ca.pem", _cert("Some other CA", other_key, other_key, None, ca=True)
    )
    caplog.set_level(logging.WARNING, logger="edgetwin")
    (tmp_path / "mqtt.password").write_text("s3cret\n")
    mqtt = {"username": "edgetwin", "password_file": tmp_path / "mqtt.password",
            "tls": {"ca_file": other_ca}}  # fmt: skip
    async with MeterSimulator(port=free_port()) as sim:
        cfg = make_config(mqtt_port=broker.port, devices=[("meter1", sim.port)], mqtt_extra=mqtt)
        async with running(cfg):
            await until(lambda: "certificate was not accepted" in caplog.text, 30, "the TLS reason")
    assert "self-signed certificate in certificate chain" in caplog.text  # OpenSSL's words
    assert "no CONNACK" not in caplog.text


async def test_a_refused_connection_is_logged_with_its_reason(
    make_config: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgetwin")
    async with MeterSimulator(port=free_port()) as sim:
        cfg = make_config(mqtt_port=free_port(), devices=[("meter1", sim.port)])
        async with running(cfg):
            await until(lambda: "connection refused" in caplog.text, 30, "the socket reason")
    lines = [r.getMessage() for r in caplog.records if "connection refused" in r.getMessage()]
    assert lines[0].startswith("mqtt: cannot connect to 127.0.0.1:") and "\n" not in lines[0]
    assert len(lines) == 1  # once, not at every retry
