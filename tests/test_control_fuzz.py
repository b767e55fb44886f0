"""Hostile control traffic against a running agent process: it stays up and executes nothing.

A real ``edgetwin run`` (its own process), a real simulated breaker (its own process) and the
session's mosquitto. Hypothesis makes the messages: raw bytes, msgpack of any shape, envelopes
with hostile headers (huge, negative, wrong-typed seq / ts / exp / kid / tpc) and garbage
signatures, and -- the deepest path -- bodies of any shape *validly signed by a trusted key*
with a valid header, so they reach the body parser. The twin is not commissioned, so even a
body that happens to be a well-formed command must not execute; the counters say how far each
message got. Some are sent retained, and the agent is then restarted onto them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.wire.envelope import b64url
from edgetwin.wire.keys import generate, load_private
from tests.helpers import wait_until, write_config

BREAKER = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
TOPIC = f"openfmb/switchmodule/SwitchDiscreteControlProfile/{BREAKER}"
KEYS = ["controlMessageInfo", "messageInfo", "identifiedObject", "mRID", "protectedSwitch",
        "breaker", "conductingEquipment", "switchDiscreteControl", "switchDiscreteControlXSWI",
        "Pos", "ctlVal", "v", "jws", "pl"]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.just(BREAKER)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)


def packb(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):  # ints beyond 64 bits: send as text
        return msgpack.packb(repr(obj), use_bin_type=True)


def envelope(header: dict[str, Any], payload: bytes, key: Ed25519PrivateKey | None) -> bytes:
    protected = b64url(json.dumps(header).encode())
    sig = key.sign(protected + b"." + payload) if key else b"\x00" * 64
    return packb({"v": 1, "jws": (protected + b".." + b64url(sig)).decode(), "pl": payload})


def good_header(seq: int) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {"alg": "EdDSA", "b64": False, "crit": ["b64"], "kid": "scada-1", "seq": seq,
            "ts": now, "tpc": TOPIC, "hist": False, "exp": now + 30_000}  # fmt: skip


@st.composite
def hostile(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(message, retain)."""
    kind = draw(st.sampled_from(["bytes", "msgpack", "header", "signed_body"]))
    retain = draw(st.booleans()) and draw(st.booleans())  # about a quarter retained
    if kind == "bytes":
        return draw(st.binary(max_size=600)), retain
    if kind == "msgpack":
        return packb(draw(values)), retain
    if kind == "header":  # the header's fields replaced by anything; a garbage signature
        header = good_header(draw(st.integers(0, 2**62)))
        for name in draw(st.lists(st.sampled_from(list(header)), max_size=4)):
            header[name] = draw(json_values)
        return envelope(header, packb(draw(values)), None), retain
    # a valid header signed by the trusted key over a body of any shape
    body = draw(values)
    if draw(st.booleans()):  # near-miss: the real frame with hostile parts
        body = {"controlMessageInfo": draw(values), "protectedSwitch": draw(values),
                "switchDiscreteControl": draw(values)}  # fmt: skip
    return envelope(good_header(draw(st.integers(0, 2**62))), packb(body), SCADA["key"]), retain


SCADA: dict[str, Any] = {}


class Site:
    """The agent and the breaker as processes, and a publishing client."""

    def __init__(self, tmp: Path, mosquitto: Mosquitto) -> None:
        from edgetwin.agent.northbound.mqtt import make_client
        from edgetwin.agent.runtime.config import MqttConfig

        self.mosquitto = mosquitto
        keys = {"private": generate(tmp / "keys" / "agent.key")[0]}
        scada, _ = generate(tmp / "central" / "scada-1.key")
        SCADA["key"] = load_private(scada)
        trust = tmp / "central" / "trust.toml"
        trust.write_text('[[keys]]\nkid = "scada-1"\npublic_key = "scada-1.pub.pem"\n'
                         'twins = ["*"]\nactions = ["*"]\n')  # fmt: skip
        self.sim_port, self.http_port = free_port(), free_port()
        self.sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgetwin.firmware_sim",
                "breaker",
                "--port",
                str(self.sim_port),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.cfg = write_config(tmp, keys, mosquitto.port, f"""
[http]
port = {self.http_port}

[control]
trust_file = "{trust}"
refusal_events_per_s = 1000

[[devices]]
name = "breaker1"
driver = "modbus_tcp"
host = "127.0.0.1"
port = {self.sim_port}
poll_interval_s = 0.2

[[twins]]
mrid = "{BREAKER}"
kind = "switch"
device = "breaker1"
point_map = "sim_breaker"
""")  # fmt: skip
        self.log = tmp / "agent.log"
        self.agent: subprocess.Popen[bytes] | None = None
        self.client = make_client(MqttConfig(port=mosquitto.port), "fuzzer")
        self.client.connect("127.0.0.1", mosquitto.port)
        self.client.loop_start()
        self.sent = 0

    def start(self) -> None:
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "edgetwin.agent", "run", str(self.cfg)],
            stderr=self.log.open("ab"),
        )
        wait_until(lambda: self.metrics().get("edgetwin_mqtt_connected") == 1.0, 60, "agent up")

    def stop(self) -> int:
        assert self.agent is not None
        self.agent.terminate()
        return self.agent.wait(30)

    def metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/metrics", timeout=5
            ) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def alive(self) -> bool:
        return self.agent is not None and self.agent.poll() is None

    def send(self, message: bytes, retain: bool) -> None:
        self.client.publish(TOPIC, message, qos=1, retain=retain).wait_for_publish(10)
        self.sent += 1

    def close(self) -> None:
        self.client.publish(TOPIC, b"", qos=1, retain=True).wait_for_publish(10)  # clear
        self.client.disconnect()
        self.client.loop_stop()
        if self.alive():
            self.stop()
        self.sim.terminate()
        self.sim.wait(10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, mosquitto: Mosquitto) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("fuzz"), mosquitto)
    s.start()
    yield s
    s.close()


def received(site: Site) -> float:
    return site.metrics().get("edgetwin_commands_received_total", -1)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=hostile())
# the messages that stopped the agent before (issue 11), each as it was reported
@example(message=(packb({"controlMessageInfo": {"messageInfo": "x"}}), True))
@example(message=(envelope({**good_header(1), "seq": 2**70}, b"\x80", None), False))
@example(message=(envelope({**good_header(1), "kid": 2**70}, b"\x80", None), False))
@example(message=(envelope(good_header(2**63), packb({"breaker": 5}), None), False))
def test_hostile_control_messages_never_stop_the_agent(
    site: Site, message: tuple[bytes, bool]
) -> None:
    before = site.sent
    site.send(*message)
    wait_until(lambda: received(site) >= before + 1 or not site.alive(), 30, "the message taken")
    assert site.alive(), site.log.read_text()[-3000:]


def test_after_the_fuzz_nothing_executed_and_a_restart_onto_retained_garbage_survives(
    site: Site,
) -> None:
    # one more retained message of the kind that killed every restart, then a restart
    forged = envelope(good_header(5), packb({"controlMessageInfo": {"messageInfo": "x"}}), None)
    site.send(forged, True)
    wait_until(lambda: received(site) >= site.sent, 30, "all messages taken")
    m = site.metrics()
    assert m["edgetwin_commands_executed_total"] == 0
    refused = sum(v for k, v in m.items() if k.startswith("edgetwin_commands_refused_total"))
    assert refused == m["edgetwin_commands_received_total"] == site.sent
    assert site.stop() == 0
    site.start()  # the broker hands it the retained message at once
    wait_until(lambda: received(site) >= 1, 30, "the retained message delivered")
    assert site.alive() and site.metrics()["edgetwin_commands_executed_total"] == 0
    wait_until(lambda: site.metrics().get("edgetwin_mqtt_connected") == 1.0, 30)


def test_oversized_messages_never_reach_the_agent(site: Site) -> None:
    """A 100 MB forged message grew the agent by 212 MB for good. The control session tells
    the broker its Maximum Packet Size (MQTT 5), so the broker drops anything larger; what
    arrives anyway is refused `oversized` before decoding."""
    before = received(site)
    for _ in range(5):
        site.client.publish(TOPIC, b"\x00" * (8 * 1024 * 1024), qos=1).wait_for_publish(30)
    site.send(envelope(good_header(7), b"\x80", None), False)  # one small one after them
    wait_until(lambda: received(site) >= before + 1, 30, "the small message taken")
    assert received(site) == before + 1  # the five 8 MB messages never reached the agent
    assert site.alive()
