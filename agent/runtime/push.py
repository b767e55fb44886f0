"""Where meters push to: a TCP listener for DLMS data-notifications (IEC 62056-47 wrapper).

IDIS meters call the data concentrator by themselves -- a last gasp when the power fails, an
alarm, a push of their data -- instead of waiting to be read. Each APDU that arrives is offered
to the meters' drivers (``drivers.metering.PushSource``): the one whose meter it is (its host
for a plain push, its system title for a ciphered one) opens it -- deciphers, authenticates,
checks the invocation counter -- and its ``MeterCollector`` publishes it as an event and reads
the meter at once (its event log then gives the outage with its time). A push no meter claims
is counted and logged once per peer; one that claims a meter but fails its checks (forged,
replayed, malformed) is refused, counted and logged: never acted on.

Bounded: at most ``MAX_CONNECTIONS`` at a time, APDUs up to 64 KiB, a connection idle for
``IDLE_S`` is closed.

What it leaves to others: what a push means (``agent.runtime.ami``), the ciphering (drivers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping

from edgetwin.agent.runtime.ami import MeterCollector
from edgetwin.core.errors import StartError
from edgetwin.drivers.metering import PushSource

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
IDLE_S = 30.0


class PushListener:
    def __init__(self, bind: str, port: int, meters: Mapping[str, MeterCollector]) -> None:
        self.bind, self.port = bind, port
        self.meters = meters
        self.counters = {"received": 0, "accepted": 0, "unknown": 0, "refused": 0}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._unknown_peers: set[str] = set()

    async def start(self) -> None:
        """Listen; raises ``StartError`` (one line: where and why) when it cannot."""
        try:
            self._server = await asyncio.start_server(self._serve, self.bind, self.port)
        except OSError as err:
            raise StartError(
                f"metering: cannot listen for meter pushes on {self.bind}:{self.port}: "
                f"{os.strerror(err.errno) if err.errno else err} (see [metering] push_port)"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("meter pushes: listening on %s:%d", self.bind, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername", ("?",))[0])
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections.add(writer)
        try:
            while True:
                async with asyncio.timeout(IDLE_S):
                    head = await reader.readexactly(8)
                    if head[0:2] != b"\x00\x01":
                        break  # not a DLMS wrapper: the connection is not a meter's
                    apdu = await reader.readexactly(int.from_bytes(head[6:8], "big"))
                self.offer(peer, apdu)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    def offer(self, peer: str, apdu: bytes) -> bool:
        """Hand one APDU from ``peer`` to the meter it belongs to; True when one took it."""
        self.counters["received"] += 1
        for name, collector in self.meters.items():
            driver = collector.device.driver
            if not isinstance(driver, PushSource):
                continue
            try:
                push = driver.open_push(peer, apdu)
            except ValueError as err:
                self.counters["refused"] += 1
                log.warning("meter push from %s refused for %s: %s", peer, name, err)
                return False
            if push is not None:
                self.counters["accepted"] += 1
                collector.on_push(push)
                return True
        self.counters["unknown"] += 1
        if peer not in self._unknown_peers and len(self._unknown_peers) < 1000:
            self._unknown_peers.add(peer)
            log.warning("meter push from %s: no configured meter claims it", peer)
        return False

    def status(self) -> dict[str, object]:
        return {"port": self.port, **self.counters}
