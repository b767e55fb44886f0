"""Rule state that survives a restart: one SQLite file (``rules.db`` in the data folder).

Rows are (twin mRID, rule key, JSON state); the engine says which states changed
(``RuleEngine.snapshot``) and only those are written, in one transaction. The agent saves every
few seconds and at shutdown, so after a crash a rule resumes from at most that long ago: a
settlement read or demand interval may then be reported twice (each carries its event id or
interval, so central systems deduplicate), never lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path


class RuleStore:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rule_state ("
            " mrid TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,"
            " PRIMARY KEY (mrid, key))"
        )
        self._db.commit()

    def load(self, mrid: str) -> dict[str, str]:
        rows = self._db.execute("SELECT key, state FROM rule_state WHERE mrid = ?", (mrid,))
        return dict(rows.fetchall())

    def save(self, states: Mapping[str, Mapping[str, str]]) -> int:
        """Write ``{mrid: {key: state}}``; return the number of rows written."""
        rows = [(m, k, s) for m, by_key in states.items() for k, s in by_key.items()]
        if rows:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO rule_state (mrid, key, state) VALUES (?, ?, ?)", rows
                )
        return len(rows)

    def close(self) -> None:
        self._db.close()
