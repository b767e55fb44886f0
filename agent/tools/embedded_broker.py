"""A small MQTT broker in pure asyncio, for ``edgetwin demo`` on machines without mosquitto.

Speaks MQTT 3.1.1 and 5 well enough for the demo and the CLI: CONNECT (clean sessions only),
PUBLISH at QoS 0 and 1 (PUBACK sent once the message is routed), SUBSCRIBE / UNSUBSCRIBE with
``+`` and ``#`` wildcards, retained messages, PINGREQ, DISCONNECT. MQTT 5 properties of a
PUBLISH (e.g. the content type) are forwarded to MQTT 5 subscribers. It keeps nothing on disk,
has no authentication and binds to 127.0.0.1 only: it is not a production broker -- in the field
use mosquitto or the utility's own broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching: ``+`` one level, ``#`` the rest (including the parent level)."""
    p_parts, t_parts = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(p_parts) == len(t_parts)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + varint(len(body)) + body


def mqtt_str(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u8(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        self.pos += 2
        return int.from_bytes(self.data[self.pos - 2 : self.pos], "big")

    def string(self) -> bytes:
        n = self.u16()
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def varint(self) -> int:
        mult = value = 0
        while True:
            byte = self.u8()
            value += (byte & 0x7F) << (7 * mult)
            mult += 1
            if not byte & 0x80:
                return value

    def properties(self) -> bytes:
        n = self.varint()
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def rest(self) -> bytes:
        return self.data[self.pos :]


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    version: int
    client_id: str
    subscriptions: dict[bytes, int] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def deliver(self, topic: bytes, payload: bytes, qos: int, retain: bool, props: bytes) -> None:
        body = mqtt_str(topic)
        if qos:
            body += (next(self.ids) % 65535 + 1).to_bytes(2, "big")
        if self.version == 5:
            body += varint(len(props)) + props
        self.send(packet(PUBLISH, (qos << 1) | int(retain), body + payload))


class EmbeddedBroker:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._clients: set[_Client] = set()
        self._retained: dict[bytes, tuple[bytes, int, bytes]] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _read_packet(self, reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        first = (await reader.readexactly(1))[0]
        length = mult = 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length += (byte & 0x7F) << (7 * mult)
            mult += 1
            if not byte & 0x80:
                break
        return first >> 4, first & 0x0F, await reader.readexactly(length)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client: _Client | None = None
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            kind, _flags, body = await self._read_packet(reader)
            if kind != CONNECT:
                return
            client = self._connect(body, writer)
            while True:
                kind, flags, body = await self._read_packet(reader)
                if kind == PUBLISH:
                    self._publish(client, flags, body)
                elif kind == SUBSCRIBE:
                    self._subscribe(client, body)
                elif kind == UNSUBSCRIBE:
                    self._unsubscribe(client, body)
                elif kind == PINGREQ:
                    client.send(packet(PINGRESP, 0, b""))
                elif kind == DISCONNECT:
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the broker is stopping
        finally:
            self._handlers.discard(task)
            if client is not None:
                self._clients.discard(client)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _connect(self, body: bytes, writer: asyncio.StreamWriter) -> _Client:
        r = _Reader(body)
        r.string()  # "MQTT"
        version = r.u8()
        flags = r.u8()
        r.u16()  # keepalive: loopback demo, not enforced
        if version == 5:
            r.properties()
        client = _Client(writer, version, r.string().decode())
        if flags & 0x04:  # a will: accepted, not published (demo broker)
            if version == 5:
                r.properties()
            r.string()
            r.string()
        self._clients.add(client)
        ack = b"\x00\x00" + (b"\x00" if version == 5 else b"")
        client.send(packet(CONNACK, 0, ack))
        return client

    def _publish(self, client: _Client, flags: int, body: bytes) -> None:
        qos, retain = (flags >> 1) & 3, bool(flags & 1)
        r = _Reader(body)
        topic = r.string()
        pid = r.u16() if qos else 0
        props = r.properties() if client.version == 5 else b""
        payload = r.rest()
        if retain:
            if payload:
                self._retained[topic] = (payload, qos, props)
            else:
                self._retained.pop(topic, None)
        text = topic.decode()
        for sub in list(self._clients):
            granted = max(
                (q for f, q in sub.subscriptions.items() if topic_matches(f.decode(), text)),
                default=-1,
            )
            if granted >= 0:
                sub.deliver(topic, payload, min(qos, granted), False, props)
        if qos == 1:
            client.send(packet(PUBACK, 0, pid.to_bytes(2, "big")))

    def _subscribe(self, client: _Client, body: bytes) -> None:
        r = _Reader(body)
        pid = r.u16()
        if client.version == 5:
            r.properties()
        codes = bytearray()
        while r.pos < len(body):
            pattern = r.string()
            qos = min(r.u8() & 3, 1)
            client.subscriptions[pattern] = qos
            codes.append(qos)
            for topic, (payload, rqos, props) in self._retained.items():
                if topic_matches(pattern.decode(), topic.decode()):
                    client.deliver(topic, payload, min(rqos, qos), True, props)
        head = pid.to_bytes(2, "big") + (b"\x00" if client.version == 5 else b"")
        client.send(packet(SUBACK, 0, head + bytes(codes)))

    def _unsubscribe(self, client: _Client, body: bytes) -> None:
        r = _Reader(body)
        pid = r.u16()
        if client.version == 5:
            r.properties()
        count = 0
        while r.pos < len(body):
            client.subscriptions.pop(r.string(), None)
            count += 1
        head = pid.to_bytes(2, "big")
        tail = b"\x00" + b"\x00" * count if client.version == 5 else b""
        client.send(packet(UNSUBACK, 0, head + tail))
