"""The simulated DLMS meter proved with an independent client library, gurux-dlms (the driver
is built on dlms-cosem): association with the password, the clock, a register's scaler and
unit, a profile's capture objects and its rows by range, all as the standard says, and a wrong
password refused. (HLS-GMAC is proved by the driver's tests; gurux's ciphering is not used.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import socket
from typing import Any

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister

from edgetwin.firmware_sim.dlms_meter import LOAD_PROFILE, UNIT_V, DlmsMeter, MeterState


class Gurux:
    """A blocking gurux session over the IEC 62056-47 wrapper."""

    def __init__(self, port: int, password: str) -> None:
        self.client = GXDLMSClient(True, 1, 1, Authentication.LOW, password, InterfaceType.WRAPPER)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def _packet(self, data: Any, reply: GXReplyData) -> None:
        if data is not None:
            self.sock.sendall(bytes(data))
        buf = GXByteBuffer()
        while not self.client.getData(buf, reply, None):
            chunk = self.sock.recv(4096)
            assert chunk, "the meter closed the connection"
            buf.set(chunk)

    def exchange(self, frames: Any) -> GXReplyData:
        reply = GXReplyData()
        for frame in frames if isinstance(frames, list) else [frames]:
            reply.clear()
            self._packet(frame, reply)
            while reply.isMoreData():
                self._packet(self.client.receiverReady(reply), reply)
        return reply

    def associate(self) -> None:
        self.client.parseAareResponse(self.exchange(self.client.aarqRequest()).data)

    def read(self, obj: Any, attribute: int) -> Any:
        self.client.updateValue(
            obj, attribute, self.exchange(self.client.read(obj, attribute)).value
        )
        return obj

    def close(self) -> None:
        self.exchange(self.client.releaseRequest())
        self.sock.close()


def read_everything(port: int) -> dict[str, Any]:
    g = Gurux(port, "12345678")
    g.associate()
    clock = g.read(GXDLMSClock("0.0.1.0.0.255"), 2)
    volts = g.read(g.read(GXDLMSRegister("1.0.32.7.0.255"), 3), 2)
    pg = g.read(GXDLMSProfileGeneric(LOAD_PROFILE), 3)
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(hours=3)
    reply = g.exchange(g.client.readRowsByRange(pg, start, end))
    g.client.updateValue(pg, 2, reply.value)
    g.close()
    return {"clock": clock.time.value, "volts": volts, "pg": pg, "start": start, "end": end}


async def test_an_independent_client_reads_clock_register_and_profile_by_range() -> None:
    state = MeterState(history_days=1)
    async with DlmsMeter(0, state=state) as meter:
        got = await asyncio.to_thread(read_everything, meter.port)
    assert abs(got["clock"].timestamp() - state.time()) < 3
    volts = got["volts"]
    assert (volts.scaler, volts.unit) == (0.1, UNIT_V) and 229 < volts.value < 233
    pg = got["pg"]
    assert [(o.logicalName, a.attributeIndex) for o, a in pg.captureObjects] == [
        ("0.0.1.0.0.255", 2),
        ("0.0.96.10.1.255", 2),
        ("1.0.1.8.0.255", 2),
        ("1.0.2.8.0.255", 2),
    ]
    ends = [row[0].value.timestamp() for row in pg.buffer]
    assert ends[0] == got["start"].timestamp() and ends[-1] == got["end"].timestamp()
    assert len(ends) == 13 and all(b - a == 900 for a, b in itertools.pairwise(ends))
    for row in pg.buffer:
        assert tuple(row[2:]) == state.energy(int(row[0].value.timestamp())) and row[1] == 0


async def test_an_independent_client_with_a_wrong_password_is_refused() -> None:
    def attempt(port: int) -> None:
        g = Gurux(port, "wrong")
        try:
            g.associate()
        finally:
            g.sock.close()

    async with DlmsMeter(0) as meter:
        with pytest.raises(Exception, match=r"(?i)authentication|rejected|denied"):
            await asyncio.to_thread(attempt, meter.port)
        assert meter.associations == 0
