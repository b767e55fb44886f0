"""The data concentrator: each meter's interval data complete, its billing reads and its events.

For every device whose driver is a ``MeterSource`` and whose config carries
``MeteringSettings`` (``drivers.metering``), one ``MeterCollector`` task reads the meter's own
memory once per profile period, a little after each period ends (``read_delay_s``, plus a
per-meter offset spreading the meters over ``read_window_s``):

1. **Clock.** The meter's clock against the agent's. Beyond ``clock_max_drift_s`` it is set,
   and the adjustment is an event (``clockAdjusted``: drift, old and new time, and whether the
   step crossed an interval boundary -- the meter flags that interval, and so does its
   quality: never silently).
2. **Load profile.** Every interval after the meter's high-water mark, oldest first, in
   blocks of at most a day, each block one signed message on ``MeterIntervalProfile`` shaped
   after an interval block: the channels (OBIS, unit), and per interval its start, end (the
   meter's capture time) and duration, the values, the meter's status octet and the quality
   it means (power down, clock adjusted, clock invalid: ``questionable``; data not valid,
   critical error: ``invalid``). Intervals the meter does not hold between two it does (no
   capture during a power failure) are listed as ``gaps``: the centre knows they will never
   come. The first read of a meter goes ``backfill_days`` back.
3. **Billing profile** (when configured): each snapshot once, on ``MeterBillingProfile``; a
   meter without one: its ``billing_registers`` read at the first read after each
   ``billing_time`` (with ``lateS``, ``onTime``).
4. **Pushes** (``agent.runtime.push``): a data-notification the meter sends by itself is
   published as a ``pushNotification`` event and the meter is read at once.
5. **Event logs**: power down / up become ``lastGasp`` / ``restore`` events of the meter's twin
   (the restore with the outage's duration, as the voltage analytics report them), tamper
   codes ``tamper``, clock changes ``clockAdjusted``, on ``MeterEventProfile``.

**Exactly once.** Every message carries a high-water mark (``<device>/<profile>`` -> the last
capture time it holds) that the outbox commits *in the same transaction* as the message
(``Outbox.submit(mark=...)``). After a link loss, a meter outage, an agent outage or ``kill
-9``, the next read starts after the committed mark: what was committed is never read again,
what was not is read again from the meter's memory. The collector waits until the outbox has
opened its database (marks known) before its first read.

A meter that fails is retried with the device's backoff, capped at the period, and never
delays another meter (one task each). Status (``status()``) per meter: the last successful
read, the high-water marks, intervals behind, the clock offset, the last error.

What it leaves to others: the protocol (the driver), signing and delivery (outbox, publisher).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import zlib
from collections.abc import Sequence
from typing import Any

from edgetwin.agent.northbound.outbox import EVENT, Outbox
from edgetwin.agent.runtime.backoff import Backoff
from edgetwin.agent.runtime.running import RunningDevice
from edgetwin.core.clock import Clock
from edgetwin.core.errors import DeviceError, DeviceRejected
from edgetwin.drivers.metering import MeteringSettings, MeterSource, Profile, ProfileRow, Push
from edgetwin.wire.envelope import pack
from edgetwin.wire.openfmb import (
    METER_BILLING,
    METER_EVENT,
    METER_INTERVAL,
    event_body,
    timestamp,
)
from edgetwin.wire.openfmb import Profile as OpenFmbProfile

log = logging.getLogger(__name__)

UTC = dt.UTC
BILLING_REGISTERS = "billing-registers"  # the high-water mark of register billing reads
BLOCK_S = 86_400  # one read (and one message) covers at most a day of intervals
READ_TIMEOUT_S = 120.0  # one cycle's reads (a 7-day back-fill is 7 of them)
#: AMR profile status bits (IDIS / DLMS UA 1000-1 blue book, "AMR profile status")
STATUS_BITS = {0x01: "criticalError", 0x02: "clockInvalid", 0x04: "dataNotValid",
               0x08: "daylightSaving", 0x20: "clockAdjusted", 0x80: "powerDown"}  # fmt: skip
INVALID_BITS = 0x01 | 0x04
QUESTIONABLE_BITS = 0x02 | 0x20 | 0x80
#: IDIS event codes (standard event log and fraud detection log)
POWER_DOWN, POWER_UP, CLOCK_OLD, CLOCK_NEW = 1, 2, 4, 5
TAMPER_CODES = {40: "terminalCoverRemoved", 41: "terminalCoverClosed", 42: "strongDcField",
                43: "strongDcFieldGone", 44: "meterCoverRemoved",
                45: "meterCoverClosed"}  # fmt: skip


def interval_quality(status: int | None) -> dict[str, Any]:
    """The quality an interval's status octet means, with the flags set."""
    s = status or 0
    flags = [name for bit, name in STATUS_BITS.items() if s & bit]
    validity = (
        "invalid" if s & INVALID_BITS else "questionable" if s & QUESTIONABLE_BITS else "good"
    )
    return {"validity": validity, "flags": flags}


def ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


class MeterCollector:
    def __init__(
        self,
        device: RunningDevice,
        settings: MeteringSettings,
        mrid: str,
        prefix: str,
        outbox: Outbox,
        clock: Clock,
    ) -> None:
        self.device = device
        self.name = device.config.name
        self.s = settings
        self.mrid = mrid
        self.prefix = prefix
        self.outbox = outbox
        self.clock = clock
        self.period_s: int | None = None  # from the meter's load profile
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.reads = 0
        self.intervals = 0
        self.offset_s: float | None = None
        self._wake = asyncio.Event()
        self._clock_refused = False  # announced once, until a set succeeds
        self.pushes = 0

    # -- marks -------------------------------------------------------------------------------
    def _mark_name(self, obis: str) -> str:
        return f"ami/{self.name}/{obis}"

    def mark(self, obis: str) -> dt.datetime | None:
        value = self.outbox.mark(self._mark_name(obis))
        if value is None:
            return None
        return dt.datetime.fromtimestamp(float(value.split(";")[0]), UTC)

    def _open_outage(self, obis: str) -> float | None:
        value = self.outbox.mark(self._mark_name(obis)) or ""
        _, _, down = value.partition(";")
        return float(down) if down else None

    # -- the schedule --------------------------------------------------------------------------
    def spread_s(self, period: float) -> float:
        window = self.s.read_window_s if self.s.read_window_s is not None else min(period / 3, 300)
        return (zlib.crc32(self.name.encode()) % 10_000) / 10_000 * min(window, period)

    def next_read(self, now: float, period: float) -> float:
        return (now // period + 1) * period + self.s.read_delay_s + self.spread_s(period)

    def wake(self) -> None:
        """Read now (an on-demand request, a test)."""
        self._wake.set()

    async def run(self) -> None:
        while not self.outbox.available:  # the committed marks must be known first
            await self.clock.sleep(1.0)
        backoff = Backoff(self.device.config.backoff_initial_s, self.device.config.backoff_max_s)
        while True:
            try:
                await self.collect()
            except DeviceError as err:
                self.last_error = f"{type(err).__name__}: {err}"
                delay = min(backoff.next(), self.period_s or 900)
                log.debug("meter %s: read failed (%s), again in %.0f s", self.name, err, delay)
            else:
                backoff.reset()
                period = self.period_s or 900
                delay = max(0.0, self.next_read(self.clock.time(), period) - self.clock.time())
            self._wake.clear()
            sleep = asyncio.ensure_future(self.clock.sleep(delay))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                woken.cancel()

    async def collect(self) -> None:
        """One cycle: clock, load profile, billing, event logs (one association)."""
        await self.device.use(self._cycle, READ_TIMEOUT_S)
        self.last_success = self.clock.time()
        self.last_error = None
        self.reads += 1

    async def _cycle(self, driver: Any) -> None:
        assert isinstance(driver, MeterSource)
        meter_now = await self._clock_check(driver)
        if self.s.load_profile:
            await self._intervals(driver, self.s.load_profile, meter_now)
        if self.s.billing_profile:
            await self._billing(driver, self.s.billing_profile, meter_now)
        elif self.s.billing_registers:
            await self._billing_registers(driver, meter_now)
        for obis in self.s.event_logs:
            await self._events(driver, obis, meter_now)

    # -- 1. clock ------------------------------------------------------------------------------
    async def _clock_check(self, driver: MeterSource) -> dt.datetime:
        sent = self.clock.time()
        meter = await driver.meter_time()
        agent = (sent + self.clock.time()) / 2
        self.offset_s = drift = meter.timestamp() - agent
        if abs(drift) <= self.s.clock_max_drift_s:
            return meter
        target = dt.datetime.fromtimestamp(self.clock.time(), UTC)
        try:
            await driver.set_meter_time(target)
        except DeviceRejected as err:  # e.g. the public client may not: read on regardless
            if not self._clock_refused:
                log.warning("meter %s: clock off by %.1f s, setting it refused (%s)",
                            self.name, drift, err)  # fmt: skip
                self._event(
                    "clockAdjustRefused",
                    {"driftS": round(drift, 3), "detail": str(err), "source": "agent"},
                )
            self._clock_refused = True
            return meter
        self._clock_refused = False
        period = self.period_s or 900
        crossed = int(meter.timestamp() // period) != int(target.timestamp() // period)
        log.warning("meter %s: clock off by %.1f s, set", self.name, drift)
        self._event("clockAdjusted", {
            "driftS": round(drift, 3), "meterTimeAt": meter.timestamp(),
            "setToAt": target.timestamp(), "crossesIntervalBoundary": crossed,
            "source": "agent"})  # fmt: skip
        self.offset_s = 0.0
        return target

    # -- 2. load profile -----------------------------------------------------------------------
    async def _intervals(self, driver: MeterSource, obis: str, meter_now: dt.datetime) -> None:
        start = self.mark(obis)
        first_read = start is None
        if start is None:
            start = meter_now - dt.timedelta(days=self.s.backfill_days)
        while start < meter_now:
            end = min(start + dt.timedelta(seconds=BLOCK_S), meter_now)
            prof = await driver.profile(obis, start + dt.timedelta(seconds=1), end)
            if prof.period_s:
                self.period_s = prof.period_s
            rows = [r for r in prof.rows if r.time > start]
            if rows:
                self._publish_block(prof, rows, start, first_read, meter_now)
                start = rows[-1].time
                first_read = False
            else:
                if end >= meter_now:
                    break
                start = end  # a day the meter holds nothing of (switched off): go on

    def _publish_block(
        self,
        prof: Profile,
        rows: Sequence[ProfileRow],
        after: dt.datetime,
        first_read: bool,
        meter_now: dt.datetime,
    ) -> None:
        period = prof.period_s or self.period_s or 900
        step = dt.timedelta(seconds=period)
        intervals, gaps = [], []
        expected = None if first_read else after + step
        for row in rows:
            if expected is not None and row.time > expected:
                gaps.append([ms(expected - step), ms(row.time - step)])
            intervals.append({
                "start": ms(row.time - step), "end": ms(row.time), "durationS": period,
                "values": list(row.values), "status": row.status,
                "quality": interval_quality(row.status)})  # fmt: skip
            expected = row.time + step
        body = {
            "device": self.name,
            "profile": prof.obis,
            "periodS": period,
            "channels": [c.as_dict() for c in prof.columns],
            "intervals": intervals,
            "gaps": gaps,
            "firstEnd": intervals[0]["end"],
            "lastEnd": intervals[-1]["end"],
            "backfill": rows[-1].time < meter_now - step,
        }
        self._submit(METER_INTERVAL, body, prof.obis, str(rows[-1].time.timestamp()))
        self.intervals += len(intervals)

    def _submit(self, profile: OpenFmbProfile, body: dict[str, Any], mark: str | None = None,
                value: str = "") -> None:  # fmt: skip
        """One signed message of this meter's twin, with the high-water mark ``mark`` ->
        ``value`` committed with it (``Outbox.submit``)."""
        payload = profile.frame(mrid=self.mrid, body=body, now=self.clock.time())
        self.outbox.submit(
            profile.topic(self.prefix, self.mrid),
            pack(payload),
            EVENT,
            mark=None if mark is None else (self._mark_name(mark), value),
        )

    async def _new_rows(
        self, driver: MeterSource, obis: str, meter_now: dt.datetime
    ) -> tuple[Profile, list[ProfileRow]]:
        """A profile's rows after its mark (the first read: ``backfill_days`` back)."""
        start = self.mark(obis) or meter_now - dt.timedelta(days=self.s.backfill_days)
        prof = await driver.profile(obis, start + dt.timedelta(seconds=1), meter_now)
        return prof, [r for r in prof.rows if r.time > start]

    # -- 3. billing ----------------------------------------------------------------------------
    async def _billing(self, driver: MeterSource, obis: str, meter_now: dt.datetime) -> None:
        prof, rows = await self._new_rows(driver, obis, meter_now)
        for row in rows:
            body = {
                "device": self.name, "profile": obis,
                "billingTime": timestamp(row.time.timestamp()),
                "registers": [{**c.as_dict(), "value": v}
                              for c, v in zip(prof.columns, row.values, strict=False)],
            }  # fmt: skip
            self._submit(METER_BILLING, body, obis, str(row.time.timestamp()))

    async def _billing_registers(self, driver: MeterSource, meter_now: dt.datetime) -> None:
        """A meter without a billing profile: its ``billing_registers`` read at the first
        read after each ``billing_time`` (UTC, meter clock), with how late that was."""
        hour, minute = (int(p) for p in self.s.billing_time.split(":"))
        moment = meter_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if moment > meter_now:
            moment -= dt.timedelta(days=1)
        last = self.mark(BILLING_REGISTERS)
        if last is not None and last >= moment:
            return
        found = await driver.registers(self.s.billing_registers)
        late = (meter_now - moment).total_seconds()
        period = self.period_s or 900
        body = {
            "device": self.name, "profile": None, "source": "registers",
            "billingTime": timestamp(moment.timestamp()),
            "readTime": timestamp(meter_now.timestamp()), "lateS": round(late, 1),
            "onTime": late <= period, "registers": [r.as_dict() for r in found],
        }  # fmt: skip
        self._submit(METER_BILLING, body, BILLING_REGISTERS, str(moment.timestamp()))

    # -- 4. events ------------------------------------------------------------------------------
    async def _events(self, driver: MeterSource, obis: str, meter_now: dt.datetime) -> None:
        down = self._open_outage(obis)
        _, rows = await self._new_rows(driver, obis, meter_now)
        for row in rows:
            code = row.values[0] if row.values else None
            at = row.time.timestamp()
            common = {"device": self.name, "log": obis, "code": code, "source": "meterEventLog"}
            if code == POWER_DOWN:
                down = at
                self._event("lastGasp", {**common, "raisedAt": at}, obis, at, down)
            elif code == POWER_UP:
                duration = None if down is None else round(at - down, 3)
                self._event("restore", {**common, "clearedAt": at, "durationS": duration},
                            obis, at, None)  # fmt: skip
                down = None
            elif code in (CLOCK_OLD, CLOCK_NEW):
                kind = "before" if code == CLOCK_OLD else "after"
                self._event("clockAdjusted", {**common, "meterTimeAt": at, "which": kind},
                            obis, at, down)  # fmt: skip
            elif code in TAMPER_CODES:
                self._event("tamper", {**common, "raisedAt": at, "kind": TAMPER_CODES[code]},
                            obis, at, down)  # fmt: skip
            else:
                self._event("meterEvent", {**common, "raisedAt": at}, obis, at, down)

    def _event(
        self,
        kind: str,
        body: dict[str, Any],
        obis: str | None = None,
        at: float | None = None,
        down: float | None = None,
    ) -> None:
        value = "" if at is None else f"{at};{'' if down is None else down}"
        self._submit(METER_EVENT, event_body(kind, body), obis if at is not None else None, value)

    def on_push(self, push: Push) -> None:
        """The meter pushed (a last gasp, an alarm): publish what it said, read it now."""
        at = push.time.timestamp() if push.time else self.clock.time()
        self.pushes += 1
        self._event(
            "pushNotification",
            {
                "device": self.name,
                "pushedAt": at,
                "values": _plain(push.values),
                "source": "meterPush",
            },
        )
        self.wake()

    def intervals_behind(self) -> int:
        """Load profile intervals that are due (their read time has passed) and not published;
        0 before the first read."""
        if not self.s.load_profile or (last := self.mark(self.s.load_profile)) is None:
            return 0
        period = self.period_s or 900
        due = self.clock.time() + (self.offset_s or 0.0) - self.s.read_delay_s
        due -= self.spread_s(period)
        return max(0, int((due - last.timestamp()) // period))

    def status(self) -> dict[str, Any]:
        marks = {o: (m.timestamp() if (m := self.mark(o)) else None)
                 for o in [self.s.load_profile, self.s.billing_profile, *self.s.event_logs]
                 if o}  # fmt: skip
        return {
            "last_success": self.last_success,
            "last_error": self.last_error or self.device.stats.last_error,
            "reads": self.reads,
            "intervals_published": self.intervals,
            "pushes": self.pushes,
            "intervals_behind": self.intervals_behind(),
            "clock_offset_s": None if self.offset_s is None else round(self.offset_s, 3),
            "marks": marks,
        }


def _plain(value: Any) -> Any:
    """A pushed value for the message: octet strings as hex, nesting kept (bounded)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_plain(v) for v in value[:64]]
    return value
