"""A TCP fault proxy: put it between a client and any simulated TCP device (OPC UA, Modbus)
to make the device stop answering, answer slowly, or drop its connections.

``mode``: ``"pass"`` forwards both ways; ``"silent"`` keeps connections open but drops what the
device sends (the client times out); ``("slow", seconds)`` delays every chunk from the device;
``drop()`` closes every open connection (clients see a reset and reconnect). Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class FaultProxy:
    def __init__(self, *, port: int, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.target_port = host, port, target_port
        self.mode: Any = "pass"
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self._conns |= {writer, up_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, from_device=False)),
            asyncio.create_task(self._pump(up_reader, writer, from_device=True)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
            self._tasks.discard(task)
        for w in (writer, up_writer):
            self._conns.discard(w)
            w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_device: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if from_device and self.mode == "silent":
                    continue
                if from_device and isinstance(self.mode, tuple) and self.mode[0] == "slow":
                    await asyncio.sleep(self.mode[1])
                writer.write(data)
                await writer.drain()

    def drop(self) -> None:
        for w in list(self._conns):
            w.close()
        self._conns.clear()

    async def stop(self) -> None:
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
