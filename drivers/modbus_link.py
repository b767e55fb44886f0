"""One physical Modbus link -- a TCP connection or a serial line -- shared by every unit id on it.

Modbus allows one outstanding request per serial line, and most TCP gateways serve the unit ids
behind them one request at a time, over one or a few connections. So every device (unit id) on
the same link shares one ``ModbusLink``: one pymodbus client, one lock (one request at a time),
and at least ``inter_frame_delay`` between the end of one exchange and the next frame.

A unit that times out does not close the link: the others on it keep being served, and the
runtime backs that one unit off. The link is (re)opened on demand by the next request after it
failed, and closed when its last device lets go. Links are kept in the agent-owned ``shared``
map that drivers receive, keyed by what identifies the wire (``tcp:host:port``, ``rtu:/dev/..``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusException

from edgetwin.core.errors import DeviceUnavailable


class ModbusLink:
    def __init__(
        self,
        name: str,
        make_client: Callable[[], ModbusBaseClient],
        *,
        inter_frame_delay: float,
        settings: Hashable,
        explain: Callable[[], str | None] | None = None,
    ) -> None:
        self.name = name
        self._make_client = make_client
        self._explain = explain  # why the link would not open, when pymodbus only logs it
        self.inter_frame_delay = inter_frame_delay
        self.settings = settings  # what devices sharing this link must agree on
        self._client: ModbusBaseClient | None = None
        self._lock = asyncio.Lock()
        self._users = 0
        self._last_frame = 0.0
        self.requests = 0

    async def acquire(self) -> None:
        """A device starts using the link; opens it if needed (raises ``DeviceUnavailable``)."""
        async with self._lock:
            self._users += 1
            await self._ensure_open()

    async def release(self) -> None:
        """A device stops using the link; the last one closes it."""
        async with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._close()

    async def request(
        self, call: Callable[[ModbusBaseClient], Awaitable[Any]], *, within: float
    ) -> Any:
        """Run one request/response exchange under the link's lock; no answer ``within``
        seconds raises ``DeviceUnavailable``."""
        async with self._lock:
            await self._ensure_open()
            assert self._client is not None
            wait = self._last_frame + self.inter_frame_delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.requests += 1
            try:
                async with asyncio.timeout(within):
                    return await call(self._client)
            except (ModbusException, TimeoutError) as err:
                why = str(err) or f"no answer within {within:g} s"
                raise DeviceUnavailable(f"{self.name}: {why}") from err
            finally:
                self._last_frame = time.monotonic()

    async def _ensure_open(self) -> None:
        if self._client is not None and self._client.connected:
            return
        self._close()
        client = self._make_client()
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as err:
            client.close()
            raise DeviceUnavailable(f"{self.name}: {err}") from err
        if not ok:
            client.close()
            why = await asyncio.to_thread(self._explain) if self._explain else None
            raise DeviceUnavailable(f"{self.name}: {why or 'cannot open the link'}")
        self._client = client

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
