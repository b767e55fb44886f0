"""Byte streams drivers open: a TCP connection or a serial line (pyserial, read through the
event loop, no thread), behind one small interface (``Stream``). Used by the DNP3 and DLMS
links; what travels on them is the link's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edgetwin.core.errors import DeviceUnavailable


@dataclass(frozen=True, slots=True)
class SerialSettings:
    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1


@dataclass
class Stream:
    """A byte stream: ``read()`` gives what arrived, ``b""`` at its end."""

    read: Callable[[], Awaitable[bytes]]  # b"" at the end
    write: Callable[[bytes], Awaitable[None]]
    close: Callable[[], None]


async def open_tcp(host: str, port: int, limit_s: float) -> Stream:
    try:
        async with asyncio.timeout(limit_s):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as err:
        raise DeviceUnavailable(f"{host}:{port}: {getattr(err, 'strerror', None) or err}") from None

    async def write(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    return Stream(lambda: reader.read(4096), write, writer.close)


async def open_serial(settings: SerialSettings) -> Stream:
    """A serial line through pyserial, read without a thread (the descriptor in the loop)."""
    import serial  # pyserial, a core dependency

    try:
        line = serial.Serial(settings.port, settings.baudrate, bytesize=settings.bytesize,
                             parity=settings.parity, stopbits=settings.stopbits,
                             timeout=0)  # fmt: skip
    except (serial.SerialException, ValueError) as err:
        raise DeviceUnavailable(f"{settings.port}: {err}") from None
    fd = line.fileno()
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        chunks.put_nowait(data)

    loop.add_reader(fd, readable)

    async def write(data: bytes) -> None:
        await asyncio.to_thread(line.write, data)

    def close() -> None:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(fd)
        line.close()
        chunks.put_nowait(b"")

    return Stream(chunks.get, write, close)
