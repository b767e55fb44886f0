"""The data concentrator against the simulated DLMS meter, a real broker and a central verifier:
interval data complete and once, back-fill after outages, billing, events, clock, kill -9."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.dlms_meter import (
    BILLING_PROFILE,
    DNV,
    EVENT_LOG,
    FRAUD_LOG,
    PDN,
    DlmsMeter,
    MeterState,
)
from tests.helpers import ShiftedClock, signed_command, until, write_config
from tests.test_end_to_end import running, subscribed

MRID = "6a1f0c2e-9b4d-4e8a-8d7c-2f3e4a5b6c7d"
PERIOD = 900


def secrets(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    out = {}
    for name, value in (("password", b"12345678\n"), ("ek", bytes(range(16)).hex().encode()),
                        ("ak", bytes(range(16, 32)).hex().encode())):  # fmt: skip
        path = folder / name
        path.write_bytes(value)
        path.chmod(0o600)
        out[name] = path
    return out


def dlms_body(port: int, files: dict[str, Path], **extra: Any) -> str:
    settings = {"security": "lls", "backfill_days": 1, "read_delay_s": 0, "read_window_s": 1,
                "clock_max_drift_s": 10, **extra}  # fmt: skip
    lines = ["[[devices]]", 'name = "m1"', 'driver = "dlms"', 'host = "127.0.0.1"', f"port = {port}",
             f'password_file = "{files["password"]}"', f'key_file = "{files["ek"]}"',
             f'auth_key_file = "{files["ak"]}"', "poll_interval_s = 60", "timeout_s = 2",
             "backoff_initial_s = 0.1", "backoff_max_s = 0.5"]  # fmt: skip
    for key, value in settings.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v) for v in value)}]".replace("'", '"'))
        else:
            lines.append(f"{key} = {value}")
    lines += ["", "[[twins]]", f'mrid = "{MRID}"', 'kind = "meter"', 'name = "Meter 1"',
              'device = "m1"', "points = [",
              '    { field = "readingMMTR.SupWh", address = "1.0.1.8.0.255", kind = "counter" },',
              '    { field = "readingMMXU.PhV.phsA", address = "1.0.32.7.0.255" },', "]"]  # fmt: skip
    return "\n".join(lines) + "\n"


def blocks(got: Any) -> list[dict[str, Any]]:
    """Every interval block received and verified, in arrival order, deduplicated by seq."""
    seen: set[int] = set()
    out = []
    for r in got.reports:
        if "MeterIntervalProfile" in r["topic"] and r["valid"] and r["seq"] not in seen:
            seen.add(r["seq"])
            out.append(r["payload"]["intervalBlock"])
    return out


def intervals(got: Any) -> list[dict[str, Any]]:
    """Every interval received, in arrival order."""
    return [i for block in blocks(got) for i in block["intervals"]]


def events(got: Any, kind: str) -> list[dict[str, Any]]:
    return [r["payload"]["meterEvent"][kind] for r in got.reports
            if "MeterEventProfile" in r["topic"] and kind in r["payload"]["meterEvent"]]  # fmt: skip


async def test_a_day_of_intervals_once_in_order_then_each_new_period(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    files = secrets(tmp_path / "secrets")
    clock = ShiftedClock()
    state = MeterState(history_days=3, now=clock.time)
    async with DlmsMeter(free_port(), state=state, security="lls") as meter:
        cfg = write_config(tmp_path, keys, mosquitto.port, dlms_body(meter.port, files))
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg, clock) as agent:
                await until(lambda: len(intervals(got)) >= 96, 30, "a day of intervals")
                clock.shift(4 * PERIOD)  # an hour passes
                agent.meters["m1"].wake()
                await until(lambda: len(intervals(got)) >= 100, 30, "the next hour")
                status = agent.status()["meters"]["m1"]
    got_ends = [i["end"] for i in intervals(got)]
    assert len(got_ends) == len(set(got_ends)) == 100  # each interval once
    assert got_ends == sorted(got_ends)
    assert all(b - a == PERIOD * 1000 for a, b in itertools.pairwise(got_ends))
    assert all(e % (PERIOD * 1000) == 0 for e in got_ends)  # clock-aligned ends from the meter
    first = intervals(got)[0]
    assert first["start"] == first["end"] - PERIOD * 1000 and first["durationS"] == PERIOD
    plus, minus = state.energy(first["end"] // 1000)
    assert first["values"] == [plus, minus]
    assert first["quality"] == {"validity": "good", "flags": []}
    assert status["intervals_behind"] == 0 and status["last_error"] is None
    assert status["marks"]["1.0.99.1.0.255"] == got_ends[-1] / 1000


async def test_agent_down_six_hours_then_every_missed_interval_once_and_in_order(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    """HLS-GMAC (ciphered) this time; a power outage inside the six hours: the meter did not
    capture those intervals, they come as a gap, and the first interval after it is flagged;
    an interval flagged invalid by the meter is published with invalid quality."""
    files = secrets(tmp_path / "secrets")
    clock = ShiftedClock()
    state = MeterState(history_days=2, now=clock.time)
    ek, ak = bytes(range(16)), bytes(range(16, 32))
    async with DlmsMeter(free_port(), state=state, security="hls-gmac", ek=ek, ak=ak) as meter:
        body = dlms_body(meter.port, files, security="hls-gmac", event_logs=[EVENT_LOG])
        cfg = write_config(tmp_path, keys, mosquitto.port, body)
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg, clock):
                await until(lambda: len(intervals(got)) >= 96, 30, "a day of intervals")
            before = len(intervals(got))
            last_end = intervals(got)[-1]["end"] // 1000
            clock.shift(6 * 3600)  # the agent is down six hours
            down, up = last_end + 2 * PERIOD + 60, last_end + 4 * PERIOD + 30
            state.power_outage(down, up)  # the meter was off for half an hour of them
            state.invalid.add(last_end + 10 * PERIOD)
            async with running(cfg, clock):
                await until(lambda: len(intervals(got)) >= before + 22, 30, "the six hours")
                await until(lambda: events(got, "restore"), 30, "the restore event")
    late = intervals(got)[before:]
    ends = [i["end"] // 1000 for i in late]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    expected = [t for t in range(last_end + PERIOD, last_end + 6 * 3600 + 1, PERIOD)
                if not down < t <= up]  # fmt: skip
    assert ends[: len(expected)] == expected  # every interval the meter holds, none twice
    by_end = {i["end"] // 1000: i for i in late}
    assert by_end[last_end + 5 * PERIOD]["status"] & PDN
    assert by_end[last_end + 5 * PERIOD]["quality"]["validity"] == "questionable"
    assert "powerDown" in by_end[last_end + 5 * PERIOD]["quality"]["flags"]
    assert by_end[last_end + 10 * PERIOD]["status"] & DNV
    assert by_end[last_end + 10 * PERIOD]["quality"]["validity"] == "invalid"
    gaps = [g for b in blocks(got) for g in b["gaps"]]
    assert [(last_end + 2 * PERIOD) * 1000, (last_end + 4 * PERIOD) * 1000] in gaps
    (restore,) = [e for e in events(got, "restore") if e["clearedAt"]["seconds"] == up]
    assert restore["durationS"] == pytest.approx(up - down)
    assert any(e["raisedAt"]["seconds"] == down for e in events(got, "lastGasp"))


def interval_copies(got: Any) -> dict[int, set[tuple[int, str]]]:
    """interval end -> {(seq of the message carrying it, its content)}."""
    out: dict[int, set[tuple[int, str]]] = {}
    for r in got.reports:
        if "MeterIntervalProfile" in r["topic"] and r["valid"]:
            for i in r["payload"]["intervalBlock"]["intervals"]:
                out.setdefault(i["end"], set()).add((r["seq"], repr(i)))
    return out


async def test_kill_9_during_a_backfill_then_no_interval_published_twice(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    from tests.test_end_to_end import agent_process

    files = secrets(tmp_path / "secrets")
    state = MeterState(history_days=31)
    async with DlmsMeter(free_port(), state=state, security="lls") as meter:
        meter.delay_s = 0.02  # a slow meter: the 30-day back-fill takes seconds
        body = dlms_body(meter.port, files, backfill_days=30)
        cfg = write_config(tmp_path, keys, mosquitto.port, body)
        log = tmp_path / "agent.log"
        with subscribed(mosquitto.url, keys["trust"]) as got:
            proc = await asyncio.to_thread(agent_process, cfg, log)
            await until(lambda: len(interval_copies(got)) >= 5 * 96, 60, "five days")
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            at_kill = len(interval_copies(got))
            proc = await asyncio.to_thread(agent_process, cfg, log)
            try:
                await until(lambda: len(interval_copies(got)) >= 30 * 96, 90, "thirty days")
            finally:
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(proc.wait, 15) == 0
    copies = interval_copies(got)
    assert at_kill < 30 * 96, "the kill came after the back-fill"
    twice = {end: c for end, c in copies.items() if len({seq for seq, _ in c}) > 1}
    assert not twice, f"intervals in two messages: {sorted(twice)[:3]}"
    assert all(len(c) == 1 for c in copies.values())  # and never with other content
    ends = sorted(copies)
    assert all(b - a == PERIOD * 1000 for a, b in itertools.pairwise(ends))


async def test_a_drifting_clock_is_set_as_an_event_and_billing_reads_come_once(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    files = secrets(tmp_path / "secrets")
    clock = ShiftedClock()
    state = MeterState(history_days=3, now=clock.time, offset_s=-45.0)  # 45 s slow
    async with DlmsMeter(free_port(), state=state, security="lls") as meter:
        meter.tamper(state.time() - 3600)
        body = dlms_body(meter.port, files, billing_profile=BILLING_PROFILE,
                         event_logs=[EVENT_LOG, FRAUD_LOG])  # fmt: skip
        cfg = write_config(tmp_path, keys, mosquitto.port, body)
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg, clock) as agent:
                await until(lambda: events(got, "tamper"), 30, "the tamper event")
                await until(lambda: len(intervals(got)) >= 96, 30, "a day of intervals")
                clock.shift(86400)  # a day later: one more billing snapshot
                agent.meters["m1"].wake()
                await until(lambda: len(billing(got)) >= 2, 30, "two billing reads")
                offset = agent.status()["meters"]["m1"]["clock_offset_s"]
    (adjusted, *_) = [e for e in events(got, "clockAdjusted") if e["source"] == "agent"]
    assert adjusted["driftS"] == pytest.approx(-45, abs=1.5)
    assert abs(offset) < 2  # set: the meter's clock agrees with the agent's now
    logged = [e for e in events(got, "clockAdjusted") if e["source"] == "meterEventLog"]
    assert {e["which"] for e in logged} == {"before", "after"}  # the meter logged the change
    (tamper,) = events(got, "tamper")
    assert tamper["kind"] == "terminalCoverRemoved"
    days = [b["billingTime"]["seconds"] for b in billing(got)]
    assert len(days) == len(set(days)) == 2 and all(d % 86400 == 0 for d in days)
    first = billing(got)[0]
    assert [r["value"] for r in first["registers"]] == list(state.energy(days[0]))
    assert first["registers"][0]["unit"] == "Wh"


def billing(got: Any) -> list[dict[str, Any]]:
    return [r["payload"]["billingRead"] for r in got.reports
            if "MeterBillingProfile" in r["topic"] and r["valid"]]  # fmt: skip


async def test_an_on_demand_read_by_signed_command_answers_with_fresh_registers(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    from edgetwin.agent.runtime.config import load_config
    from edgetwin.agent.tools.commission import commission
    from edgetwin.wire.keys import generate, load_private

    files = secrets(tmp_path / "secrets")
    key, _ = generate(tmp_path / "central" / "headend-1.key")
    trust = tmp_path / "central" / "trust.toml"
    trust.write_text('[[keys]]\nkid = "headend-1"\npublic_key = "headend-1.pub.pem"\n'
                     'twins = ["*"]\nactions = ["read"]\n')  # fmt: skip
    state = MeterState(history_days=2)
    async with DlmsMeter(free_port(), state=state, security="lls") as meter:
        body = f'[control]\ntrust_file = "{trust}"\n\n' + dlms_body(meter.port, files)
        cfg = write_config(tmp_path, keys, mosquitto.port, body)
        assert (await commission(load_config(cfg), MRID)).ok
        async with running(cfg) as agent:
            await until(lambda: agent._listener is not None
                        and agent._listener.subscribed.is_set(), 30)  # fmt: skip
            requests = meter.requests
            result = await signed_command(
                mosquitto.url, keys["trust"], load_private(key), kind="meter", mrid=MRID,
                action="read", kid="headend-1",
                registers=["1.0.1.8.0.255", "1.0.32.7.0.255", "1.0.99.99.0.255"],
            )  # fmt: skip
            assert meter.requests > requests  # read from the meter now, not from the twin
            everything = await signed_command(
                mosquitto.url, keys["trust"], load_private(key), kind="meter", mrid=MRID,
                action="read", kid="headend-1", registers=[])  # fmt: skip
    assert result is not None and result["result"] == "executed" and result["commandMRID"]
    energy, volts, unknown = result["readings"]
    assert energy["obis"] == "1.0.1.8.0.255" and energy["unit"] == "Wh"
    plus, _ = state.energy(int(state.time() // PERIOD) * PERIOD)
    assert plus <= energy["value"] <= plus + 250 and energy["quality"] == "good"
    assert volts["unit"] == "V" and 229 < volts["value"] < 233
    assert unknown == {"obis": "1.0.99.99.0.255", "value": None, "unit": None,
                       "quality": "invalid"}  # fmt: skip
    assert everything is not None
    assert [r["obis"] for r in everything["readings"]] == ["1.0.1.8.0.255", "1.0.32.7.0.255"]


async def test_many_meters_one_failing_delays_no_other_and_its_status_says_so(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    from edgetwin.agent.operations.metrics import render

    files = secrets(tmp_path / "secrets")
    clock = ShiftedClock()
    meters = [DlmsMeter(free_port(), state=MeterState(history_days=2, now=clock.time))
              for _ in range(3)]  # fmt: skip
    for m in meters:
        await m.start()
    meters[0].fault = "silent"
    try:
        body = "".join(dlms_body(m.port, files).replace('"m1"', f'"m{i}"')
                       .replace(MRID, MRID[:-1] + str(i)) for i, m in enumerate(meters))  # fmt: skip
        cfg = write_config(tmp_path, keys, mosquitto.port, body)
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg, clock) as agent:

                def per_meter() -> dict[str, int]:
                    out: dict[str, int] = {}
                    for block in blocks(got):
                        out[block["device"]] = out.get(block["device"], 0) + len(
                            block["intervals"])  # fmt: skip
                    return out

                await until(lambda: per_meter().get("m1", 0) >= 96
                            and per_meter().get("m2", 0) >= 96, 30, "two meters' day")  # fmt: skip
                clock.shift(3 * PERIOD)
                for name in ("m1", "m2"):
                    agent.meters[name].wake()
                await until(lambda: per_meter().get("m2", 0) >= 99, 30, "m2's next intervals")
                await until(lambda: agent.status()["meters"]["m0"]["last_error"], 30, "m0 failed")
                status = agent.status()["meters"]
                metrics = render(agent.status(), 0.0).decode()
    finally:
        for m in meters:
            await m.stop()
    assert "m0" not in per_meter()  # the silent meter published nothing
    assert status["m0"]["last_error"] and status["m0"]["last_success"] is None
    assert status["m2"]["last_error"] is None and status["m2"]["intervals_behind"] == 0
    assert 'edgetwin_meter_failing{meter="m0"} 1.0' in metrics
    assert 'edgetwin_meter_failing{meter="m2"} 0.0' in metrics
    assert 'edgetwin_meter_intervals_behind{meter="m2"} 0.0' in metrics


async def test_a_last_gasp_push_is_published_and_the_meter_read_at_once(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    """A ciphered data-notification (HLS) to ``[metering] push_port``: published as an event,
    the event log read at once (the lastGasp with its time), a replay and a forgery refused."""
    files = secrets(tmp_path / "secrets")
    ek, ak = bytes(range(16)), bytes(range(16, 32))
    state = MeterState(history_days=1)
    push_port = free_port()
    async with DlmsMeter(free_port(), state=state, security="hls-gmac", ek=ek, ak=ak) as meter:
        body = f"[metering]\npush_port = {push_port}\n\n" + dlms_body(
            meter.port, files, security="hls-gmac", event_logs=[EVENT_LOG]
        )
        cfg = write_config(tmp_path, keys, mosquitto.port, body)
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg) as agent:
                collector = agent.meters["m1"]
                await until(lambda: collector.reads >= 1, 30, "the first read")
                down = state.time() - 5
                state.events.append((down, 1))  # the meter logged the power failure
                apdu = meter.notification(b"\x02\x02\x09\x03EDG\x12\x00\x01")
                await meter.push("127.0.0.1", push_port, apdu)
                await until(lambda: events(got, "pushNotification"), 30, "the push event")
                await until(lambda: events(got, "lastGasp"), 30, "the lastGasp from the log")
                await meter.push("127.0.0.1", push_port, apdu)  # the same one again: replayed
                forger = DlmsMeter(0, security="hls-gmac", ek=bytes(16), ak=ak)
                forger.invocation_counter = meter.invocation_counter + 100
                await meter.push("127.0.0.1", push_port,
                                 forger.notification(b"\x12\x00\x01"))  # fmt: skip
                await meter.push("127.0.0.1", push_port, b"\x0f\x00")  # plain, garbage
                assert agent.push is not None
                await until(lambda: agent.push is not None
                            and agent.push.counters["received"] >= 4, 30)  # fmt: skip
                counters = dict(agent.push.counters)
                reads = collector.reads
    (pushed,) = events(got, "pushNotification")
    assert pushed["values"] == ["454447", 1] and pushed["source"] == "meterPush"
    assert any(e["raisedAt"]["seconds"] == int(down) for e in events(got, "lastGasp"))
    assert reads >= 2  # the push made it read now, not at the next period
    assert counters["accepted"] == 1 and counters["refused"] >= 2


async def test_billing_registers_at_the_billing_time_for_a_meter_without_a_billing_profile(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    import time

    files = secrets(tmp_path / "secrets")
    clock = ShiftedClock()
    state = MeterState(history_days=2, now=clock.time)
    billing_time = time.strftime("%H:%M", time.gmtime(clock.time()))  # it just passed
    async with DlmsMeter(free_port(), state=state) as meter:
        body = dlms_body(meter.port, files, billing_time=billing_time,
                         billing_registers=["1.0.1.8.0.255", "1.0.2.8.0.255"])  # fmt: skip
        cfg = write_config(tmp_path, keys, mosquitto.port, body)
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg, clock) as agent:
                await until(lambda: len(billing(got)) >= 1, 30, "the billing read")
                agent.meters["m1"].wake()  # read again: the same billing time, nothing new
                await until(lambda: agent.meters["m1"].reads >= 2, 30, "a second read")
                clock.shift(86400)
                agent.meters["m1"].wake()
                await until(lambda: len(billing(got)) >= 2, 30, "the next day's")
    first, second = billing(got)[:2]
    assert len(billing(got)) == 2
    assert second["billingTime"]["seconds"] - first["billingTime"]["seconds"] == 86400
    assert first["source"] == "registers" and first["onTime"] and first["lateS"] < 60
    energy = first["registers"][0]
    assert energy["obis"] == "1.0.1.8.0.255" and energy["unit"] == "Wh" and energy["value"] > 0


@settings(max_examples=25, deadline=None)
@given(garbage=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=3))
def test_the_push_listener_takes_any_bytes_and_stays_up(garbage: list[bytes]) -> None:
    """Anything sent to the push port -- not a wrapper, a wrapper announcing more than it
    sends, random APDUs -- is dropped or counted; the listener still takes the next push."""
    from edgetwin.agent.runtime.push import PushListener

    async def run() -> None:
        listener = PushListener("127.0.0.1", 0, {})
        await listener.start()
        try:
            for chunk in garbage:
                for data in (chunk, b"\x00\x01\x00\x01\x00\x66" + len(chunk).to_bytes(2, "big")
                             + chunk):  # fmt: skip
                    _r, w = await asyncio.open_connection("127.0.0.1", listener.port)
                    w.write(data)
                    await w.drain()
                    w.close()
            meter = DlmsMeter(0, security="none")
            before = listener.counters["received"]
            await meter.push("127.0.0.1", listener.port)
            await until(lambda: listener.counters["received"] > before, 10, "the next push")
            assert listener.counters["unknown"] >= 1  # no meter configured: counted
        finally:
            await listener.stop()

    asyncio.run(run())
