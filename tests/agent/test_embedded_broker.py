"""The embedded demo broker, exercised by real paho clients (MQTT 5 and 3.1.1)."""

from __future__ import annotations

import asyncio
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgetwin.agent.tools.broker import free_port
from edgetwin.agent.tools.embedded_broker import EmbeddedBroker, topic_matches
from tests.helpers import until


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("openfmb/#", "openfmb/metermodule/MeterReadingProfile/x", True),
        ("openfmb/+/MeterReadingProfile/+", "openfmb/metermodule/MeterReadingProfile/x", True),
        ("openfmb/+/SolarReadingProfile/+", "openfmb/metermodule/MeterReadingProfile/x", False),
        ("openfmb/metermodule", "openfmb/metermodule/MeterReadingProfile", False),
        ("a/#", "a", True),
        ("a/+", "a/b/c", False),
        ("#", "anything/at/all", True),
    ],
)
def test_topic_matching(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def client(
    port: int, protocol: int, name: str, got: list[paho.MQTTMessage] | None = None
) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol)
    if got is not None:
        c.on_message = lambda _c, _u, msg: got.append(msg)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


async def test_publish_subscribe_qos1_properties_and_retained() -> None:
    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    got5: list[paho.MQTTMessage] = []
    got311: list[paho.MQTTMessage] = []
    sub5 = client(broker.port, paho.MQTTv5, "sub5", got5)
    sub311 = client(broker.port, paho.MQTTv311, "sub311", got311)
    pub = client(broker.port, paho.MQTTv5, "pub")
    acked = threading.Event()
    pub.on_publish = lambda *_a: acked.set()
    try:
        for c in (sub5, sub311):
            await asyncio.to_thread(
                lambda c=c: c.subscribe("openfmb/+/MeterReadingProfile/#", 1)[0]
            )
        await asyncio.sleep(0.2)
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/x-test"
        pub.publish(
            "openfmb/metermodule/MeterReadingProfile/m1", b"\x01\x02", qos=1, properties=props
        )
        pub.publish("openfmb/other/Thing/m1", b"no", qos=1)
        pub.publish("openfmb/agent/state", b"online", qos=1, retain=True)
        await until(lambda: acked.is_set() and len(got5) == 1 and len(got311) == 1)
        assert got5[0].payload == b"\x01\x02" and got5[0].qos == 1
        assert got5[0].properties.ContentType == "application/x-test"
        assert got311[0].payload == b"\x01\x02"
        late: list[paho.MQTTMessage] = []
        sub_late = client(broker.port, paho.MQTTv5, "late", late)
        sub_late.subscribe("openfmb/agent/#", 1)
        await until(lambda: len(late) == 1)
        assert late[0].payload == b"online" and late[0].retain
        sub_late.loop_stop()
        sub_late.disconnect()
    finally:
        for c in (sub5, sub311, pub):
            c.disconnect()
            c.loop_stop()
        await broker.stop()
