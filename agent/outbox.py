"""The durable outbox: messages wait here, in SQLite, until the broker acknowledges them.

Promise: once ``submit``'s commit has happened, a message survives a crash, ``kill -9``, a reboot
(with ``synchronous="full"``) or a dead broker, and leaves only after its PUBACK (``ack``) or an
explicit, counted drop by the size policy.

* One SQLite database in WAL mode, one writer task. ``submit`` queues in memory; the writer
  commits everything queued every ``commit_interval`` (group commit) -- inserts, acknowledged
  deletes and size-policy drops in one transaction.
* ``seq`` is an ``INTEGER PRIMARY KEY AUTOINCREMENT``: assigned by SQLite in the transaction that
  commits the row, strictly increasing, and never reused even after rows are deleted or the
  process is killed (SQLite keeps the high-water mark in ``sqlite_sequence``).
* Bounded by ``max_bytes``: when a commit would exceed it, the oldest **telemetry** rows not
  currently in flight are dropped first, events only when no telemetry is left. Drops are counted
  (persisted) and reported to ``drop_notice``, whose message is committed in the same
  transaction so the centre can tell policy from loss.
* fsync policy: ``synchronous="full"`` (default) fsyncs the WAL at every group commit: durable
  across power loss. ``"normal"`` survives process crashes but may lose the last commits on
  power loss.

What it leaves to others: the payload format (codec), topics and the MQTT session (publisher).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosqlite

from agent.errors import OutboxError
from agent.files import state_db

log = logging.getLogger(__name__)

TELEMETRY, EVENT = 0, 1
ROW_OVERHEAD = 48  # bytes per row beyond topic and payload, for the size cap
MAX_PENDING = 200_000  # messages held in memory while the disk refuses writes

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms INTEGER NOT NULL,
    klass      INTEGER NOT NULL,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_class ON outbox (klass, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

DropNotice = Callable[[list[tuple[int, int]], int, int], tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    created_ms: int
    klass: int
    topic: str
    payload: bytes


@dataclass(slots=True)
class _Pending:
    created_ms: int
    klass: int
    topic: str
    payload: bytes
    done: asyncio.Future[None] | None

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic) + ROW_OVERHEAD


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Compress sequence numbers into inclusive (first, last) ranges."""
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


class Outbox:
    """See the module docstring. Create with ``await Outbox.open(...)``; close with ``close()``."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        max_bytes: int,
        commit_interval: float,
        drop_notice: DropNotice | None,
    ) -> None:
        self._db = db
        self.max_bytes = max_bytes
        self._interval = commit_interval
        self._drop_notice = drop_notice
        self._pending: list[_Pending] = []
        self._acked: set[int] = set()  # acknowledged, delete at next commit
        self._claimed_upto = 0  # rows up to here may be in flight: never dropped
        self._wake = asyncio.Event()
        self.new_rows = asyncio.Event()  # set after a commit that added rows
        self._tx_lock = asyncio.Lock()  # one transaction at a time on the connection
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.bytes = 0
        self.depth = 0
        self.counters: dict[str, int] = {}
        self.last_error: str | None = None
        self.recovered_upto = 0  # rows up to this seq were left from an earlier run

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        commit_interval: float = 0.02,
        synchronous: Literal["full", "normal"] = "full",
        drop_notice: DropNotice | None = None,
    ) -> Outbox:
        db = await aiosqlite.connect(state_db(path), isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        await db.executescript(SCHEMA)
        box = cls(db, max_bytes=max_bytes, commit_interval=commit_interval, drop_notice=drop_notice)
        async with db.execute(
            "SELECT count(*), coalesce(sum(length(payload) + length(topic)), 0) FROM outbox"
        ) as cur:
            depth, size = await cur.fetchone()  # type: ignore[misc]
        box.depth = depth
        async with db.execute("SELECT coalesce(max(seq), 0) FROM outbox") as cur:
            box.recovered_upto = (await cur.fetchone())[0]  # type: ignore[index]
        box.bytes = size + depth * ROW_OVERHEAD
        async with db.execute("SELECT name, value FROM counters") as cur:
            box.counters = {name: value async for name, value in cur}
        box._writer = asyncio.create_task(box._write_loop(), name="outbox-writer")
        return box

    # -- producers ---------------------------------------------------------------------------
    def submit(
        self, topic: str, payload: bytes, klass: int = TELEMETRY, *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue a message for the next group commit. With ``wait``, return a future that
        resolves once the message is durable (or fails with ``OutboxError``)."""
        if self._closing:
            raise OutboxError("outbox is closed")
        done = asyncio.get_running_loop().create_future() if wait else None
        if len(self._pending) >= MAX_PENDING:
            self._count("lost_memory_full", 1)
            log.error("outbox: %d messages waiting for the disk; dropping the newest", MAX_PENDING)
            if done:
                done.set_exception(OutboxError("outbox memory queue full"))
            return done
        self._pending.append(_Pending(int(time.time() * 1000), klass, topic, payload, done))
        if len(self._pending) >= 1000:
            self._wake.set()
        return done

    # -- the publisher -----------------------------------------------------------------------
    async def fetch(self, after: int, limit: int) -> list[Row]:
        """The oldest committed rows with ``seq > after`` that are not acknowledged yet. They are
        considered in flight (exempt from drops) until acknowledged or ``release()``."""
        async with self._db.execute(
            "SELECT seq, created_ms, klass, topic, payload FROM outbox "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit + len(self._acked)),
        ) as cur:
            rows = [Row(*r) async for r in cur if r[0] not in self._acked]
        rows = rows[:limit]
        if rows:
            self._claimed_upto = max(self._claimed_upto, rows[-1].seq)
        return rows

    def ack(self, seq: int) -> None:
        """The broker acknowledged ``seq``: delete it at the next commit."""
        self._acked.add(seq)
        if len(self._acked) >= 1000:
            self._wake.set()

    def release(self) -> None:
        """Nothing is in flight any more (the session was lost); rows become droppable."""
        self._claimed_upto = 0

    # -- the writer --------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        """Group commits until ``close`` asks it to stop -- asks, never cancels: a cancel in the
        middle of a transaction would abandon its batch and leave the transaction open."""
        while not self._closing:
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.commit()

    async def commit(self) -> None:
        """Commit everything queued now (inserts, acknowledged deletes, drops). Commits are
        serialised: the writer's and an explicit one (at stop) must never interleave on the
        one connection, or one would roll back the other's transaction."""
        async with self._tx_lock:
            await self._commit()

    async def _commit(self) -> None:
        if not self._pending and not self._acked:
            return
        batch, self._pending = self._pending, []
        acked = self._acked
        self._acked = set()
        try:
            added, deleted_bytes, deleted_rows = await self._transaction(batch, acked)
        except (sqlite3.Error, OutboxError) as err:
            self._pending = batch + self._pending
            self._acked |= acked
            if self.last_error is None:
                log.error("outbox: commit failed, will retry (%s)", err)
            self.last_error = str(err)
            self._count("write_errors", 1)
            return
        if self.last_error is not None:
            log.info("outbox: commits succeed again")
            self.last_error = None
        self.depth += len(batch) - deleted_rows
        self.bytes += added - deleted_bytes
        for p in batch:
            if p.done and not p.done.done():
                p.done.set_result(None)
        if batch:
            self.new_rows.set()

    async def _transaction(self, batch: list[_Pending], acked: set[int]) -> tuple[int, int, int]:
        db = self._db
        added = sum(p.size for p in batch)
        deleted_bytes = deleted_rows = 0
        await db.execute("BEGIN IMMEDIATE")
        try:
            if acked:
                gone = await self._delete(sorted(acked))
                deleted_bytes += gone[0]
                deleted_rows += gone[1]
                self._count("acked", gone[1])
            await db.executemany(
                "INSERT INTO outbox (created_ms, klass, topic, payload) VALUES (?, ?, ?, ?)",
                [(p.created_ms, p.klass, p.topic, p.payload) for p in batch],
            )
            overflow = self.bytes - deleted_bytes + added - self.max_bytes
            if overflow > 0:  # the new rows have their seq now and may be dropped too
                freed, rows = await self._drop(overflow)
                deleted_bytes += freed
                deleted_rows += rows
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite has already rolled back after e.g. SQLITE_FULL
                await db.execute("ROLLBACK")
            raise
        return added, deleted_bytes, deleted_rows

    async def _delete(self, seqs: list[int]) -> tuple[int, int]:
        freed = rows = 0
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            async with self._db.execute(
                f"DELETE FROM outbox WHERE seq IN ({marks}) "
                "RETURNING length(payload) + length(topic)",
                chunk,
            ) as cur:
                sizes = [r[0] async for r in cur]
            freed += sum(sizes) + ROW_OVERHEAD * len(sizes)
            rows += len(sizes)
        return freed, rows

    async def _drop(self, need: int) -> tuple[int, int]:
        """Drop the oldest droppable rows, telemetry first, until ``need`` bytes are free."""
        freed = rows = 0
        for klass, counter in ((TELEMETRY, "dropped_telemetry"), (EVENT, "dropped_events")):
            if freed >= need:
                break
            victims: list[int] = []
            async with self._db.execute(
                "SELECT seq, length(payload) + length(topic) FROM outbox "
                "WHERE klass = ? AND seq > ? ORDER BY seq",
                (klass, self._claimed_upto),
            ) as cur:
                async for seq, size in cur:
                    victims.append(seq)
                    freed += size + ROW_OVERHEAD
                    if freed >= need:
                        break
            if not victims:
                continue
            await self._delete(victims)
            rows += len(victims)
            self._count(counter, len(victims))
            await self._db.execute(  # persisted in the same transaction as the drop
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (counter, self.counters[counter]),
            )
            log.warning("outbox full: dropped %d %s rows", len(victims), counter.split("_")[1])
            if self._drop_notice is not None:
                topic, payload = self._drop_notice(ranges(victims), len(victims), klass)
                await self._db.execute(
                    "INSERT INTO outbox (created_ms, klass, topic, payload) VALUES (?, ?, ?, ?)",
                    (int(time.time() * 1000), EVENT, topic, payload),
                )
                freed -= len(payload) + len(topic) + ROW_OVERHEAD
                rows -= 1
        return freed, rows

    def _count(self, name: str, n: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    async def _save_counters(self) -> None:
        async with self._tx_lock:
            await self._db.execute("BEGIN")
            await self._db.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                list(self.counters.items()),
            )
            await self._db.execute("COMMIT")

    async def next_bdseq(self) -> int:
        """The next birth/death sequence number, persisted before it is used."""
        value = self.counters.get("bdseq", 0) + 1
        self.counters["bdseq"] = value
        async with self._tx_lock:  # outside any other transaction: committed at once
            await self._db.execute(
                "INSERT INTO counters (name, value) VALUES ('bdseq', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (value,),
            )
        return value

    async def oldest_age_s(self) -> float:
        async with self._db.execute("SELECT min(created_ms) FROM outbox") as cur:
            row = await cur.fetchone()
        return 0.0 if not row or row[0] is None else max(0.0, time.time() - row[0] / 1000)

    def status(self) -> dict[str, object]:
        return {
            "depth": self.depth,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "pending": len(self._pending),
            "last_error": self.last_error,
            **{k: v for k, v in sorted(self.counters.items())},
        }

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close the database (always)."""
        self._closing = True
        if self._writer is not None:
            self._wake.set()
            try:
                await self._writer  # finishes the commit it is in, then stops
            except Exception as err:  # it died earlier: close anyway, say why
                log.error("outbox: the writer had failed: %r", err)
        try:
            await self.commit()
            if self._pending:
                log.error(
                    "outbox: %d messages could not be committed before closing (%s)",
                    len(self._pending),
                    self.last_error,
                )
            await self._save_counters()
        except sqlite3.Error as err:
            log.error("outbox: could not save counters while closing: %s", err)
        finally:
            await self._db.close()
