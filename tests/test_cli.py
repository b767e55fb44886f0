"""The command line, run as a real process: keygen, check, run + SIGTERM, subscribe, demo."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.wire.envelope import Signer, pack, unpack
from tests.conftest import METER_MRID
from tests.helpers import wait_until

TOPIC = f"openfmb/metermodule/MeterReadingProfile/{METER_MRID}"


def edgetwin(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "edgetwin.agent", *args],
        capture_output=True,
        text=True,
        timeout=kw.pop("timeout", 60),
        **kw,
    )


def test_keygen_writes_private_key_0600_and_public_pem(tmp_path: Path) -> None:
    out = tmp_path / "k" / "agent.key"
    r = edgetwin("keygen", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "k" / "agent.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = edgetwin("keygen", "--out", str(out))
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


def test_check_prints_what_would_run_and_rejects_bad_config(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = make_config(mqtt_port=1883, devices=[("meter1", 5020)])
    r = edgetwin("check", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "meter1: modbus_tcp 127.0.0.1:5020" in r.stdout
    assert TOPIC in r.stdout and "readingMMXU.PhV.phsA" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace("port = 5020", "port = -1"))
    r = edgetwin("check", str(bad))
    assert r.returncode == 2
    assert f"error: {bad}: devices[0].port: Input should be greater than or equal to 1" in r.stderr


def test_run_stops_cleanly_on_sigterm(
    mosquitto: Mosquitto, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgetwin.firmware_sim",
            "meter",
            "--port",
            str(port := free_port()),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        wait_until(lambda: b"simulated meter" in (sim.stdout.readline() if sim.stdout else b""))
        cfg = make_config(mqtt_port=mosquitto.port, devices=[("meter1", port)])
        agent = subprocess.Popen(
            [sys.executable, "-m", "edgetwin.agent", "run", str(cfg)],
            stderr=subprocess.PIPE,
            text=True,
        )
        status = tmp_path / "data" / "status.json"
        wait_until(lambda: status.exists())  # written once the agent is up
        time.sleep(1.0)  # let it poll and publish for a moment
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(15) == 0
        _, err = agent.communicate()
        assert "stopped" in err
        final = json.loads(edgetwin("status", str(cfg)).stdout)  # written at stop
        assert final["devices"]["meter1"]["polls"] >= 1
        assert final["outbox"]["pending"] == 0  # everything read was committed
    finally:
        sim.terminate()
        sim.wait()


def test_subscribe_reports_forged_and_tampered_messages_as_invalid(
    mosquitto: Mosquitto, keys: dict[str, Path]
) -> None:
    from edgetwin.wire.keys import load_private

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgetwin.agent",
            "subscribe",
            "--broker",
            mosquitto.url,
            "--trust",
            str(keys["trust"]),
            "--topic",
            TOPIC,  # not openfmb/#: other tests' agents left retained state on this broker
            "--count",
            "4",
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    good = Signer(load_private(keys["private"]), "test-agent")
    forger = Signer(Ed25519PrivateKey.generate(), "test-agent")
    payload = pack({"meterReading": {"x": 1}})
    tampered = unpack(
        good.sign(payload, seq=2, ts_ms=int(time.time() * 1000), topic=TOPIC, hist=False)
    )
    tampered["pl"] = pack({"meterReading": {"x": 999}})
    messages = [
        good.sign(payload, seq=1, ts_ms=int(time.time() * 1000), topic=TOPIC, hist=False),
        forger.sign(payload, seq=2, ts_ms=int(time.time() * 1000), topic=TOPIC, hist=False),
        pack(tampered),
        good.sign(payload, seq=5, ts_ms=int(time.time() * 1000), topic=TOPIC, hist=False),
    ]
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    time.sleep(1.0)  # the subscriber process needs a moment to subscribe
    for m in messages:
        client.publish(TOPIC, m, qos=1).wait_for_publish(5)
    out, err = proc.communicate(timeout=30)
    client.loop_stop()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["valid"] for line in lines] == [True, False, False, True], err
    assert lines[1]["reason"] == "bad_signature" and "payload" not in lines[1]
    assert lines[2]["reason"] == "bad_signature" and "payload" not in lines[2]
    assert lines[3]["gap"] == [2, 4]
    assert proc.returncode == 3  # some messages did not verify


@pytest.mark.parametrize("broker", [[], ["--broker", "embedded"]], ids=["mosquitto", "embedded"])
def test_demo_runs_for_a_duration_with_a_summary(tmp_path: Path, broker: list[str]) -> None:
    r = edgetwin(
        "demo", "--duration", "4", "--data-dir", str(tmp_path / "demo"), *broker, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MeterReadingProfile" in r.stdout and "verified" in r.stdout
    summary = next(line for line in r.stdout.splitlines() if line.startswith("summary:"))
    assert " 0 refused" in summary and " 0 gaps" in summary
    assert (tmp_path / "demo" / "keys" / "edgetwin-demo.key").exists()
    assert (tmp_path / "demo" / "keys" / "edgetwin-demo.pub.pem").exists()
    assert (tmp_path / "demo" / "outbox.db").exists()


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetwin.agent", "demo", "--data-dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:  # wait for live data before pressing Ctrl-C
        lines.append(line)
        if "MeterReadingProfile" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "summary:" in rest and "Traceback" not in rest


def test_an_http_port_in_use_ends_run_with_one_line(
    mosquitto: Mosquitto, make_config: Callable[..., Path]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = make_config(mqtt_port=mosquitto.port, devices=[("meter1", free_port())])
        cfg.write_text(cfg.read_text() + f"\n[http]\nport = {port}\n")
        r = edgetwin("run", str(cfg))
    assert r.returncode == 2, r.stderr
    assert f"error: http: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_numeric_password_is_never_echoed(
    tmp_path: Path, make_config: Callable[..., Path]
) -> None:
    cfg = make_config(mqtt_port=1883, devices=[("meter1", 5020)])
    cfg.write_text(cfg.read_text().replace("[mqtt]\n", "[mqtt]\npassword = 8675309\n", 1))
    r = edgetwin("check", str(cfg))
    assert r.returncode == 2 and "mqtt.password" in r.stderr
    assert "8675309" not in r.stderr and "<hidden>" in r.stderr
