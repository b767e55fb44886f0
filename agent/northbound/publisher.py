"""The publisher: drains the outbox to MQTT, oldest first, at QoS 1, through a bounded window.

::

    outbox.fetch(after=cursor) --sign(seq, ts, topic, hist)--> paho.publish(qos=1)
          ^                                                        |
          '----------- outbox.ack(seq) <------ PUBACK (on_publish) '

* At most ``max_inflight`` messages are unacknowledged at once (paho's 16-bit message ids wrap
  past 65,535 pending messages and overwrite them; a small window also keeps paho fast).
* A row is deleted only after its PUBACK. If the session drops, the paho client is discarded,
  everything unacknowledged stays in the outbox and is sent again -- same ``seq``, same payload --
  from the oldest, after a capped, jittered backoff. Receivers may see QoS 1 duplicates; ``seq``
  lets them detect those.
* Signing happens here, at publish time, a batch at a time on a worker thread (Ed25519 releases
  the GIL) while the previous batch is published: ``hist`` is then true to fact, and a key
  rotated during an outage signs the backlog. ``hist`` marks a row left from an earlier run, or
  one older than ``hist_after_s`` when it is sent (queued across an outage or behind a backlog).

* Birth and death (when ``state`` is given): before CONNECT the death certificate is signed
  and registered as the retained last will; right after CONNACK the retained birth goes out,
  before any queued data. Both carry the session's birth/death sequence (``bd: true``), which
  is persisted and separate from the data ``seq``. ``publish_death()`` is for a clean stop.

The MQTT session lives on paho's network thread; its callbacks are handed to the event loop
with ``call_soon_threadsafe`` and everything else runs in the loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import time
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgetwin.agent.northbound.mqtt import make_client
from edgetwin.agent.northbound.outbox import Outbox, Row
from edgetwin.agent.runtime.backoff import Backoff
from edgetwin.agent.runtime.config import MqttConfig
from edgetwin.wire.envelope import CONTENT_TYPE, Signer
from edgetwin.wire.mqtt import describe

log = logging.getLogger(__name__)

FETCH_BATCH = 500


class StateMessages(Protocol):
    """Builds the agent's birth and death payloads (topic, msgpack bytes) for a bdSeq."""

    def birth(self, bdseq: int) -> tuple[str, bytes]: ...

    def death(self, bdseq: int) -> tuple[str, bytes]: ...


class Publisher:
    def __init__(
        self,
        cfg: MqttConfig,
        outbox: Outbox,
        signer: Signer,
        *,
        client_id: str,
        hist_after_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        state: StateMessages | None = None,
    ) -> None:
        self._cfg = cfg
        self._outbox = outbox
        self._signer = signer
        self._client_id = client_id
        self._hist_after_ms = int(hist_after_s * 1000)
        self._connect_timeout = connect_timeout_s
        self._props = Properties(PacketTypes.PUBLISH)
        self._props.ContentType = CONTENT_TYPE
        self.connected = False
        self.published = 0
        self.acked = 0
        self.rejected = 0
        self.connects = 0
        self._inflight: dict[int, int] = {}  # paho mid -> seq
        self._state = state
        self._bdseq: int | None = None
        self._client: paho.Client | None = None

    def status(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "published": self.published,
            "acknowledged": self.acked,
            "rejected_by_broker": self.rejected,
            "in_flight": len(self._inflight),
            "connects": self.connects,
        }

    async def run(self) -> None:
        """Connect, drain, reconnect on loss; runs until cancelled."""
        backoff = Backoff(self._cfg.reconnect_initial_s, self._cfg.reconnect_max_s)
        while True:
            try:
                await self._session(backoff)
            except ConnectionError as err:
                if backoff.failures == 0:
                    log.warning("mqtt: %s; retrying with backoff", err)
            self.connected = False
            await asyncio.sleep(backoff.next())

    async def _session(self, backoff: Backoff) -> None:
        loop = asyncio.get_running_loop()
        connected: asyncio.Future[Any] = loop.create_future()  # a ReasonCode or an error
        lost = asyncio.Event()
        window = asyncio.Semaphore(self._cfg.max_inflight)
        inflight: dict[int, int] = {}
        self._inflight = inflight

        def on_connect(_c, _u, _f, reason, _p):
            loop.call_soon_threadsafe(_resolve, connected, reason)

        def on_connect_fail(_c, _u):
            # paho calls this inside its `except OSError:`, so the reason is at hand
            err = sys.exc_info()[1]
            loop.call_soon_threadsafe(_resolve, connected, err or OSError("connection failed"))

        def on_disconnect(_c, _u, _f, _reason, _p):
            loop.call_soon_threadsafe(lost.set)

        acks: collections.deque[tuple[int, int]] = collections.deque()

        def on_publish(_c, _u, mid, reason, _p):
            # one loop wake-up per burst of PUBACKs, not one per message
            acks.append((mid, int(getattr(reason, "value", 0) or 0)))
            if len(acks) == 1:
                loop.call_soon_threadsafe(self._on_pubacks, inflight, window, acks)

        client = make_client(self._cfg, self._client_id)
        client.max_inflight_messages_set(self._cfg.max_inflight)
        if self._state is not None:  # the death certificate: the broker publishes it for us
            self._bdseq = await self._outbox.next_bdseq()
            topic, death = self._state_envelope(self._state.death(self._bdseq))
            client.will_set(topic, death, qos=1, retain=True, properties=self._props)
        client.on_connect = on_connect
        client.on_connect_fail = on_connect_fail
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        try:
            client.connect_async(self._cfg.host, self._cfg.port, keepalive=self._cfg.keepalive_s)
            client.loop_start()
            where = f"{self._cfg.host}:{self._cfg.port}"
            try:
                async with asyncio.timeout(self._connect_timeout):  # (see agent.running)
                    outcome = await connected
            except TimeoutError:
                raise ConnectionError(f"no CONNACK from {where} within "
                                      f"{self._connect_timeout:g} s") from None  # fmt: skip
            if isinstance(outcome, BaseException):
                raise ConnectionError(f"cannot connect to {where}: {describe(outcome)}")
            if outcome.is_failure:
                raise ConnectionError(
                    f"broker {where} refused the connection: {outcome} (reason {outcome.value})"
                )
            self.connected = True
            self.connects += 1
            backoff.reset()
            log.info("mqtt: connected to %s:%s", self._cfg.host, self._cfg.port)
            self._client = client
            if self._state is not None and self._bdseq is not None:  # birth before any data
                topic, birth = self._state_envelope(self._state.birth(self._bdseq))
                client.publish(topic, birth, qos=1, retain=True, properties=self._props)
            drain = asyncio.create_task(
                self._drain(client, window, inflight), name="publisher-drain"
            )
            waiter = asyncio.create_task(lost.wait(), name="publisher-lost")
            try:
                done, _ = await asyncio.wait({drain, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (drain, waiter):
                    task.cancel()
                await asyncio.gather(drain, waiter, return_exceptions=True)
            if drain in done and not drain.cancelled() and drain.exception() is not None:
                raise drain.exception()  # type: ignore[misc]
            log.warning("mqtt: connection lost; %d messages stay queued", len(inflight))
        finally:
            self.connected = False
            self._client = None
            client.on_disconnect = client.on_publish = client.on_connect = None
            self._outbox.release()
            # joining paho's thread can take seconds (a connect in progress): never in the loop
            await asyncio.to_thread(_close, client)

    def _state_envelope(self, message: tuple[str, bytes]) -> tuple[str, bytes]:
        topic, payload = message
        assert self._bdseq is not None
        envelope = self._signer.sign(
            payload,
            seq=self._bdseq,
            ts_ms=int(time.time() * 1000),
            topic=topic,
            hist=False,
            bd=True,
        )
        return topic, envelope

    def publish_death(self, timeout: float = 2.0) -> bool:
        """On a clean stop: publish the death certificate ourselves (a clean DISCONNECT makes
        the broker drop the will). Returns whether the broker acknowledged it in time."""
        client, state = self._client, self._state
        if client is None or state is None or self._bdseq is None:
            return False
        topic, death = self._state_envelope(state.death(self._bdseq))
        info = client.publish(topic, death, qos=1, retain=True, properties=self._props)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def _on_pubacks(
        self,
        inflight: dict[int, int],
        window: asyncio.Semaphore,
        acks: collections.deque[tuple[int, int]],
    ) -> None:
        while acks:
            mid, code = acks.popleft()
            seq = inflight.pop(mid, None)
            if seq is None:
                continue
            if code >= 0x80:
                # refused by the broker (e.g. not authorized): resending would loop forever
                self.rejected += 1
                log.error(
                    "mqtt: broker refused seq %d (reason %#x); counted as rejected", seq, code
                )
            self._outbox.ack(seq)
            self.acked += 1
            window.release()

    async def _drain(
        self,
        client: paho.Client,
        window: asyncio.Semaphore,
        inflight: dict[int, int],
    ) -> None:
        cursor = 0
        outbox = self._outbox
        signing: asyncio.Task[list[tuple[Row, bytes]]] | None = None
        try:
            while True:
                if signing is None:
                    outbox.new_rows.clear()
                    rows = await outbox.fetch(cursor, FETCH_BATCH)
                    if not rows:
                        await outbox.new_rows.wait()
                        continue
                    signing = asyncio.create_task(asyncio.to_thread(self._sign_batch, rows))
                batch = await signing
                # drop notices come first, out of seq order: the cursor follows the backlog
                cursor = max((r.seq for r, _ in batch if not r.urgent), default=cursor)
                # sign the next batch on a worker thread while this one is published
                outbox.new_rows.clear()
                rows = await outbox.fetch(cursor, FETCH_BATCH)
                signing = (
                    asyncio.create_task(asyncio.to_thread(self._sign_batch, rows)) if rows else None
                )
                for row, envelope in batch:
                    await window.acquire()
                    info = client.publish(row.topic, envelope, qos=1, properties=self._props)
                    if info.rc != paho.MQTT_ERR_SUCCESS:
                        window.release()
                        raise ConnectionError(f"publish failed: {paho.error_string(info.rc)}")
                    inflight[info.mid] = row.seq
                    self.published += 1
        finally:
            if signing is not None:
                signing.cancel()
                await asyncio.gather(signing, return_exceptions=True)

    def _sign_batch(self, rows: list[Row]) -> list[tuple[Row, bytes]]:
        """Sign rows (on a worker thread: Ed25519 releases the GIL while it signs)."""
        now_ms = int(time.time() * 1000)
        recovered = self._outbox.recovered_upto
        return [
            (
                row,
                self._signer.sign(
                    row.payload,
                    seq=row.seq,
                    ts_ms=now_ms,
                    topic=row.topic,
                    hist=row.seq <= recovered or now_ms - row.created_ms > self._hist_after_ms,
                ),
            )
            for row in rows
        ]


def _close(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


def _resolve(fut: asyncio.Future[Any], outcome: Any) -> None:
    if not fut.done():
        fut.set_result(outcome)
