"""The durable outbox: messages wait here, in SQLite, until the broker acknowledges them.

Promise: once ``submit``'s commit has happened, a message survives a crash, ``kill -9``, a reboot
(with ``synchronous="full"``) or a dead broker, and leaves only after its PUBACK (``ack``) or an
explicit, counted and announced drop by the size policy.

* One SQLite database in WAL mode, one writer task. ``submit`` queues in memory; the writer
  commits everything queued every ``commit_interval`` (group commit) -- inserts, acknowledged
  deletes and size-policy drops in one transaction.
* ``seq`` is an ``INTEGER PRIMARY KEY AUTOINCREMENT``: assigned by SQLite in the transaction that
  commits the row, strictly increasing, and never reused even after rows are deleted or the
  process is killed (SQLite keeps the high-water mark in ``sqlite_sequence``).
* Bounded by ``max_bytes`` *on disk*: the database's pages in use (``page_count -
  freelist_count``) plus the WAL, which is checkpointed early and truncated to
  ``WAL_LIMIT``. When a commit would exceed it, the oldest **telemetry** rows not in flight are
  dropped first (at most ``DROP_CHUNK`` rows a transaction, the rest at the next commits, so a
  lowered cap never freezes the writer); events only when no telemetry is left. Freed pages go
  back to the file system (``auto_vacuum = INCREMENTAL``), so the file shrinks after a drain.
* Every drop is counted (persisted) and reported to ``drop_notice``, whose message is committed
  in the same transaction and published **ahead of the backlog** (``urgent``; it keeps its own
  seq), so the centre learns why a range is missing before it waits for it.
* A full disk (SQLITE_FULL, or the database cannot even be opened at start) never stops the
  agent: messages stay in memory, bounded by ``memory_bytes`` (beyond it the oldest telemetry
  waiting in memory is dropped: counted and announced as unnumbered, with its time span); acked
  deletes are committed on their own; a reserve file (``outbox.reserve``, ``reserve_bytes``) is
  released so SQLite can checkpoint and the oldest committed telemetry can be dropped to make
  room. Commits are retried every interval and succeed again as soon as space frees; the
  reserve is put back once there is room for it.
* fsync policy: ``synchronous="full"`` (default) fsyncs the WAL at every group commit: durable
  across power loss. ``"normal"`` survives process crashes but may lose the last commits on
  power loss.

What it leaves to others: the payload format (codec), topics and the MQTT session (publisher).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosqlite

from edgetwin.core.errors import OutboxError
from edgetwin.core.files import state_db

log = logging.getLogger(__name__)

TELEMETRY, EVENT = 0, 1
ROW_OVERHEAD = 48  # bytes per row beyond topic and payload, for the size cap
MAX_PENDING = 200_000  # messages held in memory while the disk refuses writes (also by bytes)
DROP_CHUNK = 5_000  # rows dropped by the size policy in one transaction at most
VACUUM_STEP = 256  # free pages given back to the file system after one commit at most
PAGE_SIZE = 8192  # new databases: a 2 KB profile packs 3 to a page, not 1 as with 4 KiB
WAL_LIMIT = 4 * 1024 * 1024  # the WAL is checkpointed and truncated around this size (at
# most an eighth of max_bytes); a transaction writes at most half of it (drops included)
NOTICE_ROOM = 512  # bytes the size policy keeps free for its own drop notice
SQLITE_FULL_CODES = {13}  # SQLITE_FULL; and errno ENOSPC from the OS while opening

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms INTEGER NOT NULL,
    klass      INTEGER NOT NULL,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    size       INTEGER,
    urgent     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_by_class ON outbox (klass, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
UNNUMBERED = {TELEMETRY: "dropped_unnumbered_telemetry", EVENT: "dropped_unnumbered_events"}
_SIZE = f"coalesce(size, length(payload) + length(topic) + {ROW_OVERHEAD})"

#: (seq ranges dropped, count, class, the created_ms span of messages dropped before they had
#: a seq -- disk full -- or None) -> (topic, payload) of the signed notice to queue
DropNotice = Callable[[list[tuple[int, int]], int, int, tuple[int, int] | None], tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    created_ms: int
    klass: int
    topic: str
    payload: bytes
    urgent: bool = False  # a drop notice: published ahead of the backlog


@dataclass(slots=True)
class _Pending:
    created_ms: int
    klass: int
    topic: str
    payload: bytes
    done: asyncio.Future[None] | None
    urgent: bool = False
    mark: tuple[str, str] | None = None  # (name, value) committed with this message

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


async def _one(db: aiosqlite.Connection, sql: str) -> int:
    """One integer, its statement finished (an unfinished one keeps tables locked)."""
    async with db.execute(sql) as cur:
        rows = list(await cur.fetchall())
    return int(rows[0][0])


def is_full(err: BaseException) -> bool:
    """SQLITE_FULL from SQLite, or ENOSPC / EDQUOT from the operating system."""
    if isinstance(err, sqlite3.Error):
        return getattr(err, "sqlite_errorcode", None) in SQLITE_FULL_CODES or "full" in str(err)
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


class Outbox:
    """See the module docstring. Create with ``await Outbox.open(...)``; close with ``close()``."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        commit_interval: float,
        synchronous: Literal["full", "normal"] = "full",
        drop_notice: DropNotice | None = None,
        memory_bytes: int = 32 * 1024 * 1024,
        reserve_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self.max_bytes = max_bytes
        self._interval = commit_interval
        self._synchronous = synchronous
        self._drop_notice = drop_notice
        self.memory_bytes = memory_bytes
        self._reserve = path.with_name(path.name.removesuffix(".db") + ".reserve")
        self._reserve_bytes = reserve_bytes
        self.wal_limit = min(WAL_LIMIT, max(256 * 1024, max_bytes // 8))
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._acked: set[int] = set()  # acknowledged, delete at next commit
        self._claimed_upto = 0  # rows up to here may be in flight: never dropped
        self._urgent: set[int] = set()  # committed drop notices not yet acknowledged
        self._marks: dict[str, str] = {}  # producers' high-water marks (see ``submit``)
        self._urgent_out: set[int] = set()  # ... of which fetched in this session
        self._wake = asyncio.Event()
        self.new_rows = asyncio.Event()  # set after a commit that added rows
        self._tx_lock = asyncio.Lock()  # one transaction at a time on the connection
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.bytes = 0  # logical: payloads + topics + ROW_OVERHEAD
        self.disk_bytes = 0  # pages in use + the WAL, after the last commit
        self.depth = 0
        self.counters: dict[str, int] = {}
        self._counters_dirty = False
        self._vacuum_due = False
        #: telemetry dropped from memory before it was numbered (disk full): count, first, last
        self._unnumbered: list[int] | None = None
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
        memory_bytes: int = 32 * 1024 * 1024,
        reserve_bytes: int = 4 * 1024 * 1024,
    ) -> Outbox:
        """Open (or create) the outbox. A database that cannot be opened (a full disk, a
        read-only file system) does not stop the agent: the outbox runs degraded, in memory,
        and the writer retries opening it at every commit."""
        box = cls(path, max_bytes=max_bytes, commit_interval=commit_interval,
                  synchronous=synchronous, drop_notice=drop_notice, memory_bytes=memory_bytes,
                  reserve_bytes=reserve_bytes)  # fmt: skip
        await box._connect()
        box._writer = asyncio.create_task(box._write_loop(), name="outbox-writer")
        return box

    @property
    def available(self) -> bool:
        """The database is open (else messages wait in memory)."""
        return self._db is not None

    async def _connect(self) -> bool:
        db: aiosqlite.Connection | None = None
        try:
            db = await aiosqlite.connect(state_db(self.path), isolation_level=None)
            mode = await _one(db, "PRAGMA auto_vacuum")
            tables = await _one(db, "SELECT count(*) FROM sqlite_master WHERE name = 'outbox'")
            if not tables:  # a new database: these take effect before the first table
                await db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                await db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            await db.execute(f"PRAGMA journal_size_limit = {self.wal_limit}")
            page = await _one(db, "PRAGMA page_size")
            await db.execute(f"PRAGMA wal_autocheckpoint = {max(8, self.wal_limit // page // 2)}")
            await db.executescript(SCHEMA)
            await self._migrate(db)
            async with db.execute(
                f"SELECT count(*), coalesce(sum({_SIZE}), 0), coalesce(max(seq), 0) FROM outbox"
            ) as cur:
                depth, size, high = await cur.fetchone()  # type: ignore[misc]
            if tables and mode != 2 and depth == 0:  # an older, empty database: convert it
                await db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                await db.execute("VACUUM")
            async with db.execute("SELECT name, value FROM counters") as cur:
                stored = {name: value async for name, value in cur}
            async with db.execute("SELECT seq FROM outbox WHERE urgent = 1") as cur:
                self._urgent = {seq async for (seq,) in cur}
            async with db.execute("SELECT name, value FROM marks") as cur:
                committed = {name: value async for name, value in cur}
        except (sqlite3.Error, OSError) as err:
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            self._failed("cannot open the database", err)
            return False
        self._db = db
        self._marks = {**committed, **self._marks}  # what this run submitted is newer
        self.depth, self.bytes = depth, size
        self.recovered_upto = max(self.recovered_upto, high)
        for name, value in stored.items():  # what this run counted while degraded adds up
            self.counters[name] = max(value, 0) + self.counters.get(name, 0)
        self._counters_dirty = bool(self.counters) and self.counters != stored
        await self._measure()
        self._ensure_reserve()
        if self.last_error is not None:
            log.info("outbox: the database is open again (%s)", self.path)
            self.last_error = None
        return True

    @staticmethod
    async def _migrate(db: aiosqlite.Connection) -> None:
        async with db.execute("PRAGMA table_info(outbox)") as cur:
            columns = {row[1] async for row in cur}
        if "size" not in columns:  # databases of earlier versions
            await db.execute("ALTER TABLE outbox ADD COLUMN size INTEGER")
        if "urgent" not in columns:
            await db.execute("ALTER TABLE outbox ADD COLUMN urgent INTEGER NOT NULL DEFAULT 0")

    # -- producers ---------------------------------------------------------------------------
    def submit(
        self,
        topic: str,
        payload: bytes,
        klass: int = TELEMETRY,
        *,
        wait: bool = False,
        mark: tuple[str, str] | None = None,
    ) -> asyncio.Future[None] | None:
        """Queue a message for the next group commit. With ``wait``, return a future that
        resolves once the message is durable (or fails with ``OutboxError``). A ``mark``
        ``(name, value)`` is committed in the same transaction as the message -- a producer's
        high-water mark (the last interval a meter's message carries) can then never say more
        or less than the outbox holds, whatever crash comes between."""
        if self._closing:
            raise OutboxError("outbox is closed")
        done = asyncio.get_running_loop().create_future() if wait else None
        item = _Pending(int(time.time() * 1000), klass, topic, payload, done, mark=mark)
        if mark is not None:
            self._marks[mark[0]] = mark[1]
        self._pending.append(item)
        self._pending_bytes += item.size
        if self._pending_bytes > self.memory_bytes or len(self._pending) > MAX_PENDING:
            self._trim_memory()
        if len(self._pending) >= 1000:
            self._wake.set()
        return done

    def _trim_memory(self) -> None:
        """Over the memory budget (the disk refuses writes): drop the oldest telemetry waiting
        in memory -- it has no seq yet, so it is announced by count and time span -- and
        events only when nothing else is left."""
        keep: list[_Pending] = []
        excess = self._pending_bytes - self.memory_bytes
        excess_n = len(self._pending) - MAX_PENDING
        dropped_events = 0
        for klass in (TELEMETRY, EVENT):
            if excess <= 0 and excess_n <= 0:
                break
            keep = []
            for item in self._pending:
                if (excess > 0 or excess_n > 0) and item.klass == klass and not item.urgent:
                    excess -= item.size
                    excess_n -= 1
                    self._pending_bytes -= item.size
                    if item.done and not item.done.done():
                        item.done.set_exception(OutboxError("dropped: memory budget, disk full"))
                    if klass == TELEMETRY:
                        u = self._unnumbered or [0, item.created_ms, item.created_ms]
                        self._unnumbered = [u[0] + 1, u[1], item.created_ms]
                    else:
                        dropped_events += 1
                    self._count(UNNUMBERED[klass], 1)
                else:
                    keep.append(item)
            self._pending = keep
        if dropped_events:
            log.error("outbox: memory budget reached with the disk full: dropped %d events",
                      dropped_events)  # fmt: skip

    # -- the publisher -----------------------------------------------------------------------
    async def fetch(self, after: int, limit: int) -> list[Row]:
        """Drop notices not yet fetched in this session first (``urgent``), then the oldest
        committed rows with ``seq > after`` that are not acknowledged yet. They are considered
        in flight (exempt from drops) until acknowledged or ``release()``."""
        db = self._db
        if db is None:
            return []
        rows: list[Row] = []
        if todo := sorted(self._urgent - self._urgent_out - self._acked):
            marks = ",".join("?" * len(todo))
            async with db.execute(
                f"SELECT seq, created_ms, klass, topic, payload FROM outbox WHERE seq IN ({marks})"
                " ORDER BY seq",
                todo,
            ) as cur:
                rows = [Row(r[0], r[1], r[2], r[3], r[4], True) async for r in cur]
            self._urgent_out.update(r.seq for r in rows)
        skip = self._acked | self._urgent
        async with db.execute(
            "SELECT seq, created_ms, klass, topic, payload FROM outbox "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit + len(skip)),
        ) as cur:
            normal = [Row(*r) async for r in cur if r[0] not in skip][:limit]
        if normal:
            self._claimed_upto = max(self._claimed_upto, normal[-1].seq)
        return rows + normal

    def ack(self, seq: int) -> None:
        """The broker acknowledged ``seq``: delete it at the next commit."""
        self._acked.add(seq)
        self._urgent.discard(seq)
        self._urgent_out.discard(seq)
        if len(self._acked) >= 1000:
            self._wake.set()

    def release(self) -> None:
        """Nothing is in flight any more (the session was lost); rows become droppable."""
        self._claimed_upto = 0
        self._urgent_out.clear()

    # -- the writer --------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        """Group commits until ``close`` asks it to stop -- asks, never cancels: a cancel in the
        middle of a transaction would abandon its batch and leave the transaction open."""
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval if self._db else max(self._interval, 1)):
                    await self._wake.wait()
            self._wake.clear()
            await self.commit()

    async def commit(self) -> None:
        """Commit everything queued now (inserts, acknowledged deletes, drops). Commits are
        serialised: the writer's and an explicit one (at stop) must never interleave on the
        one connection, or one would roll back the other's transaction."""
        async with self._tx_lock:
            await self._commit()

    async def _commit(self) -> None:
        if self._db is None and not await self._connect():
            self._count("write_errors", 1)  # retried at every commit (at least every second)
            if self._pending_bytes > self.memory_bytes:
                self._trim_memory()
            return
        if not self._pending and not self._acked and not self._counters_dirty:
            if self._vacuum_due:  # an idle outbox goes on shrinking after a drain
                await self._after_commit()
            return
        batch, self._pending = self._pending, []
        batch_bytes, self._pending_bytes = self._pending_bytes, 0
        acked = self._acked
        self._acked = set()
        try:
            added, deleted_bytes, deleted_rows = await self._transaction(batch, acked)
        except (sqlite3.Error, OSError, OutboxError) as err:
            self._pending = batch + self._pending
            self._pending_bytes += batch_bytes
            self._acked |= acked
            self._failed("commit failed, will retry", err)
            self._count("write_errors", 1)
            if is_full(err):
                await self._make_room()
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
        await self._after_commit()

    def _failed(self, what: str, err: BaseException) -> None:
        if self.last_error is None:
            log.error("outbox: %s (%s)%s", what, err,
                      "; readings wait in memory" if is_full(err) else "")  # fmt: skip
        self.last_error = f"{what}: {err}"

    async def _transaction(self, batch: list[_Pending], acked: set[int]) -> tuple[int, int, int]:
        db = self._db
        assert db is not None
        deleted_bytes = deleted_rows = 0
        urgent: set[int] = set()  # drop notices committed by this transaction
        added = sum(p.size for p in batch)
        async with self._write_tx():
            if acked:
                gone = await self._delete(sorted(acked))
                deleted_bytes += gone[0]
                deleted_rows += gone[1]
                self._count("acked", gone[1])
            if self._unnumbered is not None:  # telemetry dropped in memory while disk was full
                added += await self._insert_notice(self._unnumbered_notice(), urgent)
            await db.executemany(
                "INSERT INTO outbox (created_ms, klass, topic, payload, size) "
                "VALUES (?, ?, ?, ?, ?)",
                [(p.created_ms, p.klass, p.topic, p.payload, p.size) for p in batch],
            )
            marks = {p.mark[0]: p.mark[1] for p in batch if p.mark is not None}
            if marks:
                await db.executemany(
                    "INSERT OR REPLACE INTO marks (name, value) VALUES (?, ?)", marks.items()
                )
            overflow = await self._overflow(self.bytes - deleted_bytes + added, added)
            if overflow > 0:  # the new rows have their seq now and may be dropped too
                # a drop writes what it deletes to the WAL: bounded per transaction, yet always
                # more than this batch added, so a lowered cap is reached in a few commits
                step = min(overflow, max(self.wal_limit, 2 * added))
                freed, rows, notice = await self._drop(step, urgent)
                deleted_bytes += freed
                deleted_rows += rows
                added += notice
            if self._counters_dirty:
                await self._write_counters()
        self._counters_dirty = False
        self._unnumbered = None
        self._urgent |= urgent
        self.depth += len(urgent)
        return added, deleted_bytes, deleted_rows

    @contextlib.asynccontextmanager
    async def _write_tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction (the caller holds ``_tx_lock`` or is the writer). On any error
        the counters it changed are restored -- a rolled-back drop must not stay counted --
        and it is rolled back, unless SQLite already did (e.g. after SQLITE_FULL)."""
        db = self._db
        assert db is not None
        saved = dict(self.counters)
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            await db.execute("COMMIT")
        except BaseException:
            self.counters = saved
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
            raise

    def _unnumbered_notice(self) -> tuple[str, bytes] | None:
        if self._drop_notice is None or self._unnumbered is None:
            return None
        count, first_ms, last_ms = self._unnumbered
        return self._drop_notice([], count, TELEMETRY, (first_ms, last_ms))

    async def _insert_notice(self, notice: tuple[str, bytes] | None, urgent: set[int]) -> int:
        """Insert a drop notice (an urgent event); return its size."""
        if notice is None:
            return 0
        topic, payload = notice
        size = len(payload) + len(topic) + ROW_OVERHEAD
        assert self._db is not None
        async with self._db.execute(
            "INSERT INTO outbox (created_ms, klass, topic, payload, size, urgent) "
            "VALUES (?, ?, ?, ?, ?, 1) RETURNING seq",
            (int(time.time() * 1000), EVENT, topic, payload, size),
        ) as cur:
            (seq,) = await cur.fetchone()  # type: ignore[misc]
        urgent.add(seq)
        return size

    async def _pages(self) -> tuple[int, int]:
        """(bytes of pages in use, bytes of the WAL file) as this connection sees them."""
        assert self._db is not None
        async with self._db.execute(
            "SELECT page_count * page_size, freelist_count * page_size "
            "FROM pragma_page_count, pragma_freelist_count, pragma_page_size"
        ) as cur:
            total, free = await cur.fetchone()  # type: ignore[misc]
        try:
            wal = os.stat(f"{self.path}-wal").st_size
        except OSError:
            wal = 0
        return total - free, min(wal, self.wal_limit)

    async def _measure(self) -> None:
        used, wal = await self._pages()
        self.disk_bytes = used + wal

    async def _overflow(self, logical: int, added: int) -> int:
        """How many logical bytes to drop so that the files stay under ``max_bytes``
        (logical bytes: what rows count; pages: what the disk holds). The database file is the
        pages in use plus the pages this transaction frees (the next one reuses them); the WAL
        is at most ``wal_limit`` plus one transaction (its inserts and its drops): so the pages
        in use may reach ``max_bytes`` less the WAL and three transactions' worth."""
        used, _ = await self._pages()
        headroom = self.wal_limit + 3 * min(added, self.wal_limit // 2) + NOTICE_ROOM
        over_disk = used - (self.max_bytes - headroom)
        over_logical = logical - (self.max_bytes - NOTICE_ROOM)
        if over_disk <= 0 and over_logical <= 0:
            return 0
        ratio = logical / used if used else 1.0  # logical bytes per byte of pages in use
        return max(over_logical, int(over_disk * ratio) + 1)

    async def _delete(self, seqs: list[int]) -> tuple[int, int]:
        assert self._db is not None
        freed = rows = 0
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            async with self._db.execute(
                f"DELETE FROM outbox WHERE seq IN ({marks}) RETURNING {_SIZE}", chunk
            ) as cur:
                sizes = [r[0] async for r in cur]
            freed += sum(sizes)
            rows += len(sizes)
        return freed, rows

    async def _drop(
        self, need: int, urgent: set[int], classes: tuple[int, ...] = (TELEMETRY, EVENT)
    ) -> tuple[int, int, int]:
        """Drop the oldest droppable rows until ``need`` logical bytes are free, at most
        ``DROP_CHUNK`` rows (the rest at the next commits): telemetry, and events only when no
        telemetry is left to drop. Returns (bytes freed, rows dropped, notice bytes added)."""
        assert self._db is not None
        freed = rows = notice_bytes = 0
        names = {TELEMETRY: "dropped_telemetry", EVENT: "dropped_events"}
        for klass, counter in ((k, names[k]) for k in classes):
            victims: list[int] = []
            async with self._db.execute(
                f"SELECT seq, {_SIZE} FROM outbox WHERE klass = ? AND seq > ? AND urgent = 0 "
                "ORDER BY seq LIMIT ?",
                (klass, self._claimed_upto, DROP_CHUNK),
            ) as cur:
                async for seq, size in cur:
                    victims.append(seq)
                    freed += size
                    if freed >= need:
                        break
            if not victims:
                continue  # nothing of this class to drop: the next class, if any
            await self._delete(victims)
            rows += len(victims)
            self._count(counter, len(victims))
            self._counters_dirty = True  # persisted in the same transaction as the drop
            log.warning("outbox full: dropped %d %s rows", len(victims), counter.split("_")[1])
            if self._drop_notice is not None:
                notice = self._drop_notice(ranges(victims), len(victims), klass, None)
                notice_bytes += await self._insert_notice(notice, urgent)
            break  # events are dropped only when no telemetry was there to drop
        return freed, rows, notice_bytes

    async def _write_counters(self) -> None:
        assert self._db is not None
        await self._db.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            list(self.counters.items()),
        )

    async def _after_commit(self) -> None:
        """Give free pages back to the file system after a drain, keep the reserve, measure."""
        assert self._db is not None
        try:
            used, _ = await self._pages()
            free_pages = await _one(self._db, "PRAGMA freelist_count")
            page = await _one(self._db, "PRAGMA page_size")
            self._vacuum_due = free_pages * page > max(self.wal_limit, used // 4)
            if self._vacuum_due:
                await self._vacuum(min(free_pages, VACUUM_STEP))
            await self._measure()
        except sqlite3.Error as err:  # not needed for correctness: next time
            log.debug("outbox: vacuum skipped (%s)", err)
        self._ensure_reserve()

    async def _vacuum(self, pages: int) -> None:
        """Give ``pages`` free pages back to the file system: one page per statement (Python's
        sqlite3 runs one step of this pragma), in one transaction; in WAL mode the file
        shrinks when the truncation is checkpointed."""
        async with self._write_tx() as db:
            for _ in range(pages):
                async with db.execute("PRAGMA incremental_vacuum(1)"):
                    pass  # closed at once: an open statement would block the commit
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _ensure_reserve(self) -> None:
        """Keep ``reserve_bytes`` of disk set aside, to be released when the disk fills."""
        if self._reserve_bytes <= 0 or self._reserve.exists():
            return
        try:
            st = os.statvfs(self.path.parent)
            if st.f_bavail * st.f_frsize < 2 * self._reserve_bytes:
                return  # not while space is short: that would fill the disk again
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600)  # fmt: skip
            try:
                os.posix_fallocate(fd, 0, self._reserve_bytes)
            finally:
                os.close(fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                self._reserve.unlink()
            log.debug("outbox: no reserve file (%s)", err)

    async def _make_room(self) -> None:
        """The disk is full: commit acknowledged deletes on their own, release the reserve so
        SQLite can checkpoint, and drop the oldest committed telemetry to make room (counted,
        announced). Each step may fail in turn; the next commit tries again."""
        db = self._db
        assert db is not None
        if self._reserve.exists():
            with contextlib.suppress(OSError):
                self._reserve.unlink()
                log.warning("outbox: disk full; released the %d-byte reserve", self._reserve_bytes)
        try:
            await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            log.debug("outbox: checkpoint on a full disk failed (%s)", err)
        acked, self._acked = self._acked, set()
        room = max(1024 * 1024, sum(p.size for p in self._pending[:1000]))
        urgent: set[int] = set()
        try:
            async with self._write_tx():
                freed = rows = 0
                if acked:
                    freed, rows = await self._delete(sorted(acked))
                    self._count("acked", rows)
                # committed telemetry only: telemetry waiting in memory goes before any event
                dropped, n, notice = await self._drop(room, urgent, (TELEMETRY,))
                await self._write_counters()
        except sqlite3.Error as err:
            self._acked |= acked
            log.debug("outbox: making room failed (%s)", err)
            return
        self._counters_dirty = False
        self._urgent |= urgent
        self.depth += len(urgent) - rows - n
        self.bytes += notice - freed - dropped
        if urgent:
            self.new_rows.set()

    def _count(self, name: str, n: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    async def next_bdseq(self) -> int:
        """The next birth/death sequence number, persisted before it is used when the disk
        allows (else kept in memory and persisted with the next commit)."""
        value = self.counters.get("bdseq", 0) + 1
        self.counters["bdseq"] = value
        if self._db is None:
            self._counters_dirty = True
            return value
        async with self._tx_lock:  # outside any other transaction: committed at once
            try:
                await self._db.execute(
                    "INSERT INTO counters (name, value) VALUES ('bdseq', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    (value,),
                )
            except sqlite3.Error as err:
                self._counters_dirty = True
                self._failed("could not persist the birth/death sequence", err)
        return value

    def mark(self, name: str) -> str | None:
        """The last value submitted with ``mark=(name, ...)`` -- by this run, or committed by
        an earlier one (a run killed before its commit left the committed one)."""
        return self._marks.get(name)

    async def oldest_age_s(self) -> float:
        if self._db is None:
            oldest = self._pending[0].created_ms if self._pending else None
        else:
            try:
                async with self._db.execute("SELECT min(created_ms) FROM outbox") as cur:
                    row = await cur.fetchone()
            except sqlite3.Error:
                row = None
            oldest = row[0] if row else None
        return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)

    def status(self) -> dict[str, object]:
        return {
            "depth": self.depth,
            "bytes": self.bytes,
            "disk_bytes": self.disk_bytes,
            "max_bytes": self.max_bytes,
            "pending": len(self._pending),
            "pending_bytes": self._pending_bytes,
            "available": self.available,
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
            if self._db is not None:
                async with self._tx_lock, self._write_tx():
                    await self._write_counters()
        except sqlite3.Error as err:
            log.error("outbox: could not save counters while closing: %s", err)
        finally:
            if self._db is not None:
                await self._db.close()
