"""The DLMS/COSEM driver against the simulated meter over loopback TCP: associations (LLS,
HLS-GMAC), registers with their scaler, the clock, profiles by range with block transfer, the
faults (wrong password, wrong key, drop, silent, reboot, an entry flagged invalid), secret
files, and hostile bytes from a meter (Hypothesis) that refuse, never crash."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetwin.core.errors import DeviceRejected, DeviceUnavailable
from edgetwin.core.points import PointSpec
from edgetwin.drivers.dlms import DlmsConfig, DlmsDriver, parse_address
from edgetwin.drivers.dlms_axdr import AxdrError, cosem_datetime, datetime_octets, decode
from edgetwin.firmware_sim.dlms_meter import DNV, LOAD_PROFILE, DlmsMeter, MeterState

EK, AK = bytes(range(16)), bytes(range(16, 32))
POINTS = [PointSpec("energy", "1.0.1.8.0.255"), PointSpec("volts", "1.0.32.7.0.255"),
          PointSpec("amps", "1.0.31.7.0.255"), PointSpec("nothing", "1.0.99.9.0.255"),
          PointSpec("clock", "8:0.0.1.0.0.255")]  # fmt: skip


def secret(folder: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def config(tmp_path: Path, port: int, **kw: object) -> DlmsConfig:
    folder = tmp_path / "secrets"
    settings: dict[str, object] = {
        "password_file": secret(folder, "pw", b"12345678\n"),
        "key_file": secret(folder, "ek", EK.hex().encode()),
        "auth_key_file": secret(folder, "ak", AK),  # raw octets are accepted too
        "timeout_s": 0.5, "host": "127.0.0.1", "port": port or 4059, **kw,
    }  # fmt: skip
    return DlmsConfig(name="m1", driver="dlms", **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("security", ["lls", "hls-gmac"])
async def test_registers_clock_and_a_profile_by_range(tmp_path: Path, security: str) -> None:
    state = MeterState(history_days=3)
    async with DlmsMeter(0, state=state, security=security, ek=EK, ak=AK) as meter:
        driver = DlmsDriver(config(tmp_path, meter.port, security=security, max_pdu=256), POINTS)
        await driver.connect()
        try:
            got = {r.point: r for r in await driver.read(POINTS)}
            meter_now = await driver.meter_time()
            end = meter_now.replace(minute=0, second=0, microsecond=0)
            before = driver.stats["requests"]
            prof = await driver.profile(LOAD_PROFILE, end - dt.timedelta(hours=6), end)
        finally:
            await driver.close()
    regs = state.registers()
    assert got["volts"].value == pytest.approx(regs["1.0.32.7.0.255"][0] / 10, abs=2)  # scaler -1
    assert got["amps"].value == pytest.approx(regs["1.0.31.7.0.255"][0] / 100, abs=0.5)
    assert got["energy"].quality.is_good and isinstance(got["energy"].value, int)
    assert got["nothing"].value is None and got["nothing"].quality.detail == {"badReference"}
    assert got["clock"].value == pytest.approx(meter_now.timestamp(), abs=2)
    assert abs(driver.offset_s or 0) < 2
    assert prof.period_s == 900 and [c.obis for c in prof.columns] == [
        "1.0.1.8.0.255",
        "1.0.2.8.0.255",
    ]
    assert [c.unit for c in prof.columns] == ["Wh", "Wh"]
    ends = [r.time for r in prof.rows]
    assert ends[0] == end - dt.timedelta(hours=6) and ends[-1] == end and len(ends) == 25
    assert all(r.values == state.energy(int(r.time.timestamp())) for r in prof.rows)
    # capture objects, period, one scaler not read before, then 700 octets in 256-octet PDUs
    assert driver.stats["requests"] - before >= 3 + 3


async def test_an_entry_the_meter_flags_invalid_keeps_its_status(tmp_path: Path) -> None:
    state = MeterState(history_days=1)
    async with DlmsMeter(0, state=state) as meter:
        driver = DlmsDriver(config(tmp_path, meter.port), POINTS)
        await driver.connect()
        now = await driver.meter_time()
        end = int(now.timestamp() // 900) * 900
        state.invalid.add(end - 900)
        prof = await driver.profile(LOAD_PROFILE, now - dt.timedelta(hours=1), now)
        await driver.close()
    flagged = {int(r.time.timestamp()): r.status for r in prof.rows}
    assert flagged[end - 900] == DNV and flagged[end] == 0


@pytest.mark.parametrize("wrong", ["password", "key"])
async def test_wrong_credentials_are_a_refusal(tmp_path: Path, wrong: str) -> None:
    security = "lls" if wrong == "password" else "hls-gmac"
    ek = bytes(16) if wrong == "key" else EK
    async with DlmsMeter(0, security=security, password=b"other", ek=ek, ak=AK) as meter:
        driver = DlmsDriver(config(tmp_path, meter.port, security=security), POINTS)
        with pytest.raises((DeviceRejected, DeviceUnavailable)) as err:
            await driver.connect()
        await driver.close()
    if wrong == "password":
        assert isinstance(err.value, DeviceRejected) and "AUTHENTICATION_FAILED" in str(err.value)
    assert b"12345678" not in str(err.value).encode() and EK.hex() not in str(err.value)


@pytest.mark.parametrize("fault", ["drop", "silent", "reboot"])
async def test_a_failing_meter_is_unavailable_then_read_again(tmp_path: Path, fault: str) -> None:
    async with DlmsMeter(0) as meter:
        driver = DlmsDriver(config(tmp_path, meter.port, timeout_s=0.3), POINTS)
        await driver.connect()
        if fault == "reboot":
            meter.reboot()
        else:
            meter.fault = fault
        with pytest.raises(DeviceUnavailable):
            await driver.read(POINTS)
        meter.fault = None
        await driver.connect()  # what the runtime does after its backoff
        readings = await driver.read(POINTS)
        await driver.close()
    assert readings[0].quality.is_good and driver.stats["associations"] == 2


async def test_a_meter_that_is_not_there_is_unavailable(tmp_path: Path) -> None:
    from edgetwin.agent.tools.broker import free_port

    driver = DlmsDriver(config(tmp_path, free_port()), POINTS)
    with pytest.raises(DeviceUnavailable, match=r"127\.0\.0\.1"):
        await driver.connect()


def test_secret_files_others_can_read_are_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, 4059)
    cfg.password_file.chmod(0o644)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"pw: .*mode 0644.*chmod 600"):
        DlmsDriver(cfg, POINTS)
    short = secret(tmp_path / "secrets", "short", b"abc")
    with pytest.raises(ValueError, match="16 octets"):
        DlmsDriver(config(tmp_path, 4059, security="hls-gmac", key_file=short), POINTS)


def test_addresses_name_the_expected_form() -> None:
    assert parse_address("1.0.1.8.0.255") == (3, "1.0.1.8.0.255", 2)
    assert parse_address("1:0.0.96.1.0.255") == (1, "0.0.96.1.0.255", 2)
    assert parse_address("4:1.0.1.6.0.255:5") == (4, "1.0.1.6.0.255", 5)
    for bad in ("1.8.0", "1.0.1.8.0.256", "999:1.0.1.8.0.255", "1.0.1.8.0.255:x"):
        with pytest.raises(ValueError, match="DLMS address"):
            parse_address(bad)


def test_datetime_octets_round_trip() -> None:
    when = dt.datetime(2026, 12, 2, 23, 45, 10, tzinfo=dt.UTC)
    assert cosem_datetime(datetime_octets(when)) == (when, 0)
    assert cosem_datetime(b"\xff" * 12)[0] is None  # unspecified: no time, no crash


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_refuse_with_axdr_error(data: bytes) -> None:
    try:
        decode(data)
    except AxdrError:
        pass


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**32 - 1) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5), max_leaves=30))  # fmt: skip
def test_what_the_meter_encodes_the_driver_decodes(value: object) -> None:
    from edgetwin.firmware_sim.dlms_meter import _Enc

    def enc(v: object) -> bytes:
        if v is None:
            return b"\x00"
        if isinstance(v, bool):
            return b"\x03" + bytes([v])
        if isinstance(v, int):
            return _Enc.u32(v) if v >= 0 else b"\x05" + v.to_bytes(4, "big", signed=True)
        if isinstance(v, bytes):
            return _Enc.octets(v)
        assert isinstance(v, list)
        return _Enc.array([enc(i) for i in v])

    assert decode(enc(value)) == value


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(garbage=st.binary(min_size=1, max_size=600), wrapped=st.booleans())
def test_a_peer_sending_garbage_is_unavailable_not_a_crash(
    tmp_path: Path, garbage: bytes, wrapped: bool
) -> None:
    async def run() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(500)
            head = b"\x00\x01\x00\x01\x00\x01" + len(garbage).to_bytes(2, "big")
            writer.write((head if wrapped else b"") + garbage)
            await writer.drain()
            await reader.read(500)
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            driver = DlmsDriver(config(tmp_path, port, timeout_s=0.3), POINTS)
            with pytest.raises((DeviceUnavailable, DeviceRejected)):
                await driver.connect()
            await driver.close()

    asyncio.run(run())


async def test_two_meters_on_one_serial_bus_over_hdlc(
    tmp_path: Path, serial_pair: tuple[str, str]
) -> None:
    """HDLC on a socat pty pair: two meters on the bus by physical address, one line shared
    (the driver's ``shared`` map), answers in 128-octet segments, then a reconnect."""
    from edgetwin.firmware_sim.dlms_hdlc import HdlcMeterBus

    bus_end, agent_end = serial_pair
    states = {
        17: MeterState(serial="A", history_days=1),
        18: MeterState(serial="B", history_days=1),
    }
    meters = {addr: DlmsMeter(0, state=st) for addr, st in states.items()}
    shared: dict[str, object] = {}
    drivers = {addr: DlmsDriver(config(tmp_path, 0, host=None, serial_port=agent_end,
                                       physical_address=addr, timeout_s=5), POINTS, shared)
               for addr in meters}  # fmt: skip
    with HdlcMeterBus(bus_end, meters) as bus:
        for d in drivers.values():
            await d.connect()

        async def both(addr: int) -> tuple[object, object]:
            d = drivers[addr]
            now = await d.meter_time()
            prof = await d.profile(LOAD_PROFILE, now - dt.timedelta(hours=4), now)
            return (await d.read(POINTS))[0], prof

        (r17, p17), (r18, p18) = await asyncio.gather(both(17), both(18))
        meters[17].fault = "drop"
        with pytest.raises(DeviceUnavailable):
            await drivers[17].read(POINTS)
        meters[17].fault = None
        await drivers[17].connect()
        again = await drivers[17].read(POINTS)
        for d in drivers.values():
            await d.close()
    assert len(shared) == 1  # one line for both meters
    assert r17.quality.is_good and r18.quality.is_good  # type: ignore[attr-defined]
    assert len(p17.rows) == len(p18.rows) == 16  # type: ignore[attr-defined]
    assert again[0].quality.is_good and bus.frames > 40  # the buffers came in segments


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    apdu=st.binary(max_size=200),
    prefix=st.sampled_from([b"", b"\x0f", b"\xdb\x08EDG\x00\x00\x00\x00\x01"]),
)
def test_any_push_is_this_meters_another_or_refused(
    tmp_path: Path, apdu: bytes, prefix: bytes
) -> None:
    for security in ("lls", "hls-gmac"):
        driver = DlmsDriver(config(tmp_path, 4059, security=security), POINTS)
        driver._meter_title = b"EDG\x00\x00\x00\x00\x01"  # as learned at an association
        try:
            push = driver.open_push("127.0.0.1", prefix + apdu)
        except ValueError:
            continue
        assert push is None or (prefix + apdu)[:1] == b"\x0f"


@pytest.mark.parametrize("read_counter", [True, False])
async def test_a_restarted_agent_goes_on_from_the_meters_frame_counter(
    tmp_path: Path, read_counter: bool
) -> None:
    """The meter keeps the highest invocation counter it saw from our client across
    associations. One agent used many (a back-fill: faster than 16 a second); a restarted one
    must go on from there: it reads the meter's frame counter through the public client."""
    async with DlmsMeter(0, security="hls-gmac", ek=EK, ak=AK) as meter:
        busy = DlmsDriver(config(tmp_path, meter.port, security="hls-gmac",
                                 read_frame_counter=False), POINTS)  # from the clock  # fmt: skip
        await busy.connect()
        for _ in range(40):
            await busy.read(POINTS)
        await busy.close()
        used = meter.client_ics[1]
        fresh = DlmsDriver(config(tmp_path, meter.port, security="hls-gmac",
                                  read_frame_counter=read_counter), POINTS)  # fmt: skip
        if read_counter:
            await fresh.connect()
            assert (await fresh.read(POINTS))[0].quality.is_good
            await fresh.close()
            assert meter.client_ics[1] > used
        else:  # counted from the clock: behind what the meter saw, so refused
            with pytest.raises(DeviceRejected, match="AUTHENTICATION_FAILED"):
                await fresh.connect()
            await fresh.close()


@given(infos=st.lists(st.binary(min_size=0, max_size=140), min_size=1, max_size=5),
       noise=st.binary(max_size=20))  # fmt: skip
def test_hdlc_frames_holding_0x7e_are_split_by_their_length(
    infos: list[bytes], noise: bytes
) -> None:
    """DLMS HDLC has no byte stuffing: data and check sequences may contain the flag (0x7E).
    Frames back to back, after line noise, come out whole and in order."""
    from edgetwin.drivers.dlms_link import Frame, decode_frame, encode_frame, next_frame

    frames = [Frame(b"\x03", b"\x02\x00\x00\x23", 0x10, b"\x7e" + info) for info in infos]
    buf = bytearray(noise.replace(b"\x7e", b"") + b"".join(encode_frame(f) for f in frames))
    out = []
    while (raw := next_frame(buf)) is not None:
        out.append(decode_frame(raw))
    assert out == frames


@given(st.binary(max_size=300))
def test_any_bytes_on_an_hdlc_line_are_frames_or_dropped_never_a_crash(data: bytes) -> None:
    """What a serial line brings (noise, half frames, a hostile device): ``next_frame`` ends,
    gives frames no longer than the line brought, and each one decodes or is an HdlcError."""
    from edgetwin.drivers.dlms_link import HdlcError, decode_frame, next_frame

    buf = bytearray(data)
    while (raw := next_frame(buf)) is not None:
        assert len(raw) < len(data)
        try:
            decode_frame(raw)
        except HdlcError:
            pass
    assert len(buf) <= len(data)
