"""The durable outbox on real SQLite files: sequence numbers, acknowledgement, size policy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edgetwin.agent.northbound.outbox import EVENT, TELEMETRY, Outbox, ranges


async def open_box(path: Path, **kw: object) -> Outbox:
    return await Outbox.open(path, commit_interval=3600, **kw)  # type: ignore[arg-type]


async def test_seq_is_persisted_and_never_reused(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    box = await open_box(db)
    for i in range(5):
        box.submit("t", bytes([i]))
    await box.commit()
    rows = await box.fetch(0, 100)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        box.ack(r.seq)
    await box.commit()
    await box.close()
    assert sqlite3.connect(db).execute("select count(*) from outbox").fetchone() == (0,)

    box = await open_box(db)  # everything was acknowledged and deleted: numbering goes on
    box.submit("t", b"x")
    await box.commit()
    assert [r.seq for r in await box.fetch(0, 10)] == [6]
    await box.close()


async def test_rows_left_from_a_previous_run_come_first(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    box = await open_box(db)
    for i in range(3):
        box.submit("old", bytes([i]))
    await box.commit()
    await box.close()
    box = await open_box(db)
    assert box.recovered_upto == 3 and box.depth == 3
    box.submit("new", b"n")
    await box.commit()
    rows = await box.fetch(0, 10)
    assert [(r.seq, r.topic) for r in rows] == [(1, "old"), (2, "old"), (3, "old"), (4, "new")]
    await box.close()


async def test_acknowledged_rows_are_not_fetched_again(tmp_path: Path) -> None:
    box = await open_box(tmp_path / "o.db")
    for i in range(4):
        box.submit("t", bytes([i]))
    await box.commit()
    box.ack(2)  # not yet committed: still must not be sent again
    assert [r.seq for r in await box.fetch(0, 10)] == [1, 3, 4]
    await box.close()


async def test_wait_resolves_after_commit(tmp_path: Path) -> None:
    box = await open_box(tmp_path / "o.db")
    fut = box.submit("t", b"x", EVENT, wait=True)
    assert fut is not None and not fut.done()
    await box.commit()
    assert fut.done() and fut.exception() is None
    await box.close()


async def test_full_outbox_drops_oldest_telemetry_first_then_events(tmp_path: Path) -> None:
    notices: list[tuple[list[tuple[int, int]], int, int]] = []

    def notice(
        r: list[tuple[int, int]], n: int, klass: int, _u: object = None
    ) -> tuple[str, bytes]:
        notices.append((r, n, klass))
        return "notice", b"n"

    box = await open_box(tmp_path / "o.db", max_bytes=2 * 1024 * 1024, drop_notice=notice)
    payload = b"x" * 10_000
    box.submit("event", payload, EVENT)  # seq 1: an event, older than all telemetry
    for _ in range(40):
        box.submit("tele", payload, TELEMETRY)  # seq 2..41
    await box.commit()
    assert box.bytes <= box.max_bytes
    for _ in range(200):
        box.submit("tele", payload, TELEMETRY)
    await box.commit()
    assert box.bytes <= box.max_bytes
    rows = await box.fetch(0, 1000)
    assert rows[0].urgent and rows[0].topic == "notice"  # the drop notice goes out first
    backlog = [r for r in rows if not r.urgent]
    assert backlog[0].seq == 1 and backlog[0].topic == "event"  # the old event survived
    dropped = box.counters["dropped_telemetry"]
    assert dropped > 0 and box.counters.get("dropped_events", 0) == 0
    # the oldest telemetry went first: everything dropped is older than everything kept
    kept = [r.seq for r in rows if r.topic == "tele"]
    dropped_seqs = [s for rng, _, _ in notices for s in range(rng[0][0], rng[-1][1] + 1)]
    assert max(dropped_seqs) < min(kept)
    assert sum(n for _, n, _ in notices) == dropped
    assert any(r.topic == "notice" for r in rows)  # the signed drop notice is queued
    await box.close()

    box = await open_box(tmp_path / "o.db")  # the drop counters are persisted
    assert box.counters["dropped_telemetry"] == dropped
    await box.close()


async def test_events_dropped_only_when_no_telemetry_is_left(tmp_path: Path) -> None:
    box = await open_box(tmp_path / "o.db", max_bytes=1024 * 1024)
    for _ in range(200):
        box.submit("event", b"e" * 10_000, EVENT)
    await box.commit()
    assert box.counters["dropped_events"] > 0 and box.bytes <= box.max_bytes
    await box.close()


async def test_in_flight_rows_are_not_dropped(tmp_path: Path) -> None:
    box = await open_box(tmp_path / "o.db", max_bytes=1024 * 1024)
    for _ in range(30):
        box.submit("tele", b"x" * 10_000)
    await box.commit()
    in_flight = await box.fetch(0, 10)  # seq 1..10 handed to the publisher
    for _ in range(150):
        box.submit("tele", b"x" * 10_000)
    await box.commit()
    remaining = {r.seq for r in await box.fetch(0, 1000)}
    assert {r.seq for r in in_flight} <= remaining
    await box.close()


def test_ranges() -> None:
    assert ranges([5, 1, 2, 3, 7, 8]) == [(1, 3), (5, 5), (7, 8)]
    assert ranges([]) == []


async def test_full_disk_keeps_messages_and_retries_without_gaps(tmp_path: Path) -> None:
    # SQLite's page limit makes the database answer SQLITE_FULL, as a full disk does
    box = await open_box(tmp_path / "o.db")
    async with box._db.execute("PRAGMA page_count") as cur:
        (pages,) = await cur.fetchone()  # type: ignore[misc]
    await box._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    for _ in range(200):
        box.submit("t", bytes(4000))
    await box.commit()
    status = box.status()
    assert status["pending"] == 200 and status["write_errors"] == 1
    assert "full" in str(status["last_error"])
    await box._db.execute("PRAGMA max_page_count = 1000000")  # space is freed
    await box.commit()
    assert box.status()["pending"] == 0 and box.status()["last_error"] is None
    assert [r.seq for r in await box.fetch(0, 1000)] == list(range(1, 201))  # no gap
    await box.close()


async def test_overlapping_commits_neither_fail_nor_duplicate(tmp_path: Path) -> None:
    """The writer's periodic commit and the explicit one at stop can overlap; before they were
    serialised the second rolled back the first's transaction and rows were written twice."""
    import asyncio

    db = tmp_path / "o.db"
    box = await open_box(db)
    for i in range(200):
        box.submit("a", bytes([i % 256]))
    first = asyncio.create_task(box.commit())
    await asyncio.sleep(0)  # the first commit is inside its transaction now
    for i in range(200):
        box.submit("b", bytes([i % 256]))
    await asyncio.gather(first, box.commit())
    assert box.counters.get("write_errors", 0) == 0 and box.last_error is None
    await box.close()
    rows = sqlite3.connect(db).execute("select topic, count(*) from outbox group by topic")
    assert dict(rows.fetchall()) == {"a": 200, "b": 200}


async def test_closing_while_the_writer_commits_loses_nothing(tmp_path: Path) -> None:
    """Closing used to cancel the writer in the middle of a transaction: the batch it held was
    neither committed nor queued again (lost), the transaction was left open so the final
    commit failed, and on Python 3.11 the cancelled ``wait_for`` could hang the close."""
    import asyncio

    from tests.helpers import until

    db = tmp_path / "o.db"
    box = await Outbox.open(db, commit_interval=0.001)
    for i in range(20_000):
        box.submit("a", bytes([i % 256]) * 50)
    await until(box._tx_lock.locked, what="the writer inside a commit")
    for i in range(100):
        box.submit("b", bytes([i]))
    await asyncio.wait_for(box.close(), 10)
    assert box.counters.get("write_errors", 0) == 0 and box.last_error is None
    rows = sqlite3.connect(db).execute("select topic, count(*) from outbox group by topic")
    assert dict(rows.fetchall()) == {"a": 20_000, "b": 100}


# -- drops are exact and announced first; the cap holds on disk (issue 11) ----------------------
def agent_like_notice(
    r: list[tuple[int, int]], n: int, klass: int, unnumbered: tuple[int, int] | None = None
) -> tuple[str, bytes]:
    """A notice the size of the agent's (agent id, ranges, counts, reason, time)."""
    import msgpack

    body = {"agentId": "substation-demo-01", "droppedSeqRanges": [list(x) for x in r],
            "count": n, "class": "event" if klass else "telemetry",
            "reason": "outbox size limit", "ts": 1_796_000_000_000}  # fmt: skip
    if unnumbered is not None:  # only a disk-full memory drop names its time span
        body["unnumbered"] = list(unnumbered)
    return "openfmb/edgetwin/OutboxDropNotice/substation-demo-01", msgpack.packb(body)


async def test_no_event_is_dropped_while_telemetry_is_queued_and_notices_go_first(
    tmp_path: Path,
) -> None:
    box = await open_box(
        tmp_path / "o.db", max_bytes=2 * 1024 * 1024, drop_notice=agent_like_notice
    )
    for _ in range(30):  # 30 episodes over the cap, events among the telemetry
        box.submit("event", bytes(300), EVENT)
        for _ in range(200):
            box.submit("tele", bytes(2200), TELEMETRY)
        await box.commit()
    assert box.counters["dropped_telemetry"] > 0
    assert box.counters.get("dropped_events", 0) == 0  # one was lost per episode before
    rows = await box.fetch(0, 100)
    notices = [r for r in rows if r.urgent]
    assert notices and rows[: len(notices)] == notices  # ahead of the backlog
    backlog = [r for r in rows if not r.urgent]
    assert all(n.seq > backlog[0].seq for n in notices)  # each keeps its own, later seq
    await box.close()


def file_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


async def test_the_cap_holds_for_the_file_on_disk_and_the_file_shrinks_after_a_drain(
    tmp_path: Path,
) -> None:
    db = tmp_path / "o.db"
    cap = 16 * 1024 * 1024
    box = await open_box(db, max_bytes=cap, drop_notice=agent_like_notice)
    for _ in range(40):  # ~35 MB of 2.2 KB profiles: over twice the cap
        for _ in range(400):
            box.submit("tele", bytes(2200))
        await box.commit()
    on_disk = file_bytes(db)
    assert on_disk <= cap * 1.05, (on_disk, cap)  # was 1.8x what the cap counted
    assert box.disk_bytes <= cap
    rows = await box.fetch(0, 100_000)
    for r in rows:
        box.ack(r.seq)
    for _ in range(20):  # the writer's idle commits give the pages back, 2 MiB at a time
        await box.commit()
    assert box.depth == 0
    assert file_bytes(db) < 6 * 1024 * 1024, file_bytes(db)  # gave its pages back (was: never)
    await box.close()


async def test_a_lowered_cap_drops_in_bounded_steps(tmp_path: Path) -> None:
    from edgetwin.agent.northbound.outbox import DROP_CHUNK

    db = tmp_path / "o.db"
    box = await open_box(db, max_bytes=1024**3)
    for _ in range(20):
        for _ in range(1000):
            box.submit("tele", bytes(1000))
        await box.commit()
    await box.close()
    box = await open_box(db, max_bytes=8 * 1024 * 1024)  # the operator lowers the cap
    box.submit("tele", b"x")
    await box.commit()
    assert 0 < box.counters["dropped_telemetry"] <= DROP_CHUNK  # one bounded transaction
    for _ in range(30):
        box.submit("tele", b"x")
        await box.commit()
    assert box.disk_bytes <= 8 * 1024 * 1024, box.disk_bytes  # a few commits later
    assert box.counters["dropped_telemetry"] > DROP_CHUNK
    await box.close()


async def test_a_mark_is_committed_with_its_message_and_only_with_it(tmp_path: Path) -> None:
    """A producer's high-water mark is in the same transaction as the message carrying it: a
    failed commit keeps both for the retry, a committed one both, and a new run sees it."""
    db = tmp_path / "outbox.db"
    box = await Outbox.open(db, commit_interval=3600)
    box.submit("t", b"day 1", EVENT, mark=("ami/m1/lp", "100"))
    assert box.mark("ami/m1/lp") == "100"  # what this run submitted, before the commit
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM marks").fetchone() == (0,)  # not yet committed
    con.execute("BEGIN EXCLUSIVE")  # another writer holds the database: the commit fails
    await box.commit()
    con.rollback()
    assert con.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM marks").fetchone() == (0,)
    box.submit("t", b"day 2", EVENT, mark=("ami/m1/lp", "200"))
    await box.commit()  # the retry: both messages and the latest mark, together
    rows = con.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
    assert rows == [(b"day 1",), (b"day 2",)]
    assert con.execute("SELECT value FROM marks WHERE name = 'ami/m1/lp'").fetchone() == ("200",)
    con.close()
    await box.close()
    again = await Outbox.open(db)
    assert again.mark("ami/m1/lp") == "200" and again.mark("other") is None
    await again.close()
