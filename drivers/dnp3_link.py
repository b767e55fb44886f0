"""One physical DNP3 channel -- a TCP connection or a serial line -- shared by its outstations.

dnp3py's master runner speaks to one outstation over a channel it owns. A substation channel
often carries several: a multi-drop RS-485 line, or a port server in front of several RTUs, each
with its own link address. ``Dnp3Link`` is the small layer that makes that work with the
library unchanged: it owns the byte stream, parses link frames (dnp3py's ``FrameParser``) and
hands each outstation's runner an ``OutstationChannel`` (dnp3py's ``Channel`` protocol) that
yields only the frames *from* that outstation's address. Requests take the link's ``exchange``
lock, so one request is outstanding on the channel at a time (half duplex on serial); frames an
outstation sends unasked (unsolicited responses) are routed whenever they arrive.

The link opens on demand when its first outstation connects and closes when the last lets go.
A lost stream ends every outstation's channel (an empty read, as for EOF), so each runner sees
the loss and its driver reconnects. Links live in the agent-owned ``shared`` map of drivers,
keyed by what identifies the wire (``tcp:host:port``, ``serial:/dev/...``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

from dnp3.datalink.parser import FrameParser
from dnp3.transport_io.channel import ChannelState, ChannelStatistics

from edgetwin.drivers.streams import SerialSettings, Stream, open_serial, open_tcp

__all__ = ["Dnp3Link", "OutstationChannel", "SerialSettings", "open_serial", "open_tcp"]

MAX_QUEUED_FRAMES = 10_000  # per outstation; a peer that floods is cut off, not buffered


class OutstationChannel:
    """dnp3py's ``Channel`` for one outstation on a shared link: frames from its address."""

    def __init__(self, link: Dnp3Link, address: int) -> None:
        self._link, self.address = link, address
        self._frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.readable = asyncio.Event()  # a frame is waiting
        self._stats = ChannelStatistics()
        self._open = True

    @property
    def state(self) -> ChannelState:
        return ChannelState.OPEN if self.is_open else ChannelState.CLOSED

    @property
    def is_open(self) -> bool:
        return self._open and self._link.is_open

    @property
    def statistics(self) -> ChannelStatistics:
        return self._stats

    async def open(self) -> None:
        await self._link.ensure_open()
        self._open = True

    async def close(self) -> None:
        self._open = False

    def deliver(self, frame: bytes) -> None:
        if self._frames.qsize() >= MAX_QUEUED_FRAMES:
            self._link.fail("an outstation sent more frames than are read")
            return
        self._frames.put_nowait(frame)
        self.readable.set()

    def end(self) -> None:
        self._frames.put_nowait(b"")
        self.readable.set()

    async def read(self, max_bytes: int) -> bytes:
        data = await self._frames.get()
        if self._frames.empty():
            self.readable.clear()
        self._stats.bytes_received += len(data)
        return data

    async def read_exactly(self, num_bytes: int) -> bytes:
        return await self.read(num_bytes)

    async def write_all(self, data: bytes) -> None:
        self._stats.bytes_sent += len(data)
        await self._link.write(data)


class Dnp3Link:
    def __init__(
        self, name: str, opener: Callable[[], Awaitable[Stream]], *, settings: Hashable
    ) -> None:
        self.name = name
        self.settings = settings  # what outstations sharing this link must agree on
        self._opener = opener
        self._stream: Stream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._channels: dict[int, OutstationChannel] = {}
        self._lock = asyncio.Lock()
        #: one request and its response at a time on the channel
        self.exchange = asyncio.Lock()
        self.frames = 0
        self.foreign = 0  # frames from addresses nobody here speaks to

    @property
    def is_open(self) -> bool:
        return self._stream is not None

    async def attach(self, address: int) -> OutstationChannel:
        """An outstation starts using the link (opened if needed); its channel."""
        if address in self._channels:
            raise ValueError(f"{self.name}: outstation {address} is configured twice")
        channel = OutstationChannel(self, address)
        self._channels[address] = channel
        try:
            await self.ensure_open()
        except BaseException:
            del self._channels[address]
            raise
        return channel

    def detach(self, channel: OutstationChannel) -> None:
        """An outstation lets go; the last one closes the link."""
        if self._channels.get(channel.address) is channel:
            del self._channels[channel.address]
        if not self._channels:
            self._close()

    async def ensure_open(self) -> None:
        async with self._lock:
            if self._stream is None:
                self._stream = await self._opener()
                self._reader = asyncio.create_task(self._read_loop(self._stream))

    async def write(self, data: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise ConnectionError(f"{self.name}: link closed")
        await stream.write(data)

    def fail(self, why: str) -> None:
        self._close()

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        self._reader = None
        for channel in self._channels.values():
            channel.end()

    async def _read_loop(self, stream: Stream) -> None:
        parser = FrameParser()
        try:
            while data := await stream.read():
                for frame in parser.feed(data):
                    self.frames += 1
                    channel = self._channels.get(frame.header.source)
                    if channel is None:
                        self.foreign += 1
                    else:
                        channel.deliver(frame.to_bytes())
        except (OSError, ValueError):
            pass
        if self._stream is stream:
            self._close()
