"""Content-addressed cache of successful generations and judgments.

SQLite in WAL mode, so two processes (say two `bench` runs sharing a cache) can read and write at once.
Keys are explicit: callers build them with :func:`sftmix.io.hash_obj` from everything that determines the value
(model fingerprint + backend + prompt + settings + repeat index; judge model + prompt + settings).
Only successful results go in: a failure is never cached, so a re-run retries it.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any


class Cache:
    """``wal=False`` keeps SQLite's rollback journal: a worker's own cache on a shared filesystem, where WAL's
    shared memory does not work across hosts."""

    def __init__(self, path: str | os.PathLike, wal: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
            c.execute("CREATE TABLE IF NOT EXISTS kv (kind TEXT, key TEXT, value TEXT, PRIMARY KEY (kind, key))")

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared across threads.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def get(self, kind: str, key: str) -> Any | None:
        row = self._conn().execute("SELECT value FROM kv WHERE kind=? AND key=?", (kind, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, kind: str, key: str, value: Any) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO kv (kind, key, value) VALUES (?, ?, ?)", (kind, key, json.dumps(value))
        )

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._conn().execute("SELECT COUNT(*) FROM kv").fetchone()[0]
        return self._conn().execute("SELECT COUNT(*) FROM kv WHERE kind=?", (kind,)).fetchone()[0]

    def merge(self, other: str | os.PathLike) -> int:
        """Copy every entry of the cache file ``other`` into this one; returns how many it held."""
        conn = self._conn()
        conn.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            n = conn.execute("SELECT COUNT(*) FROM other.kv").fetchone()[0]
            conn.execute("INSERT OR REPLACE INTO kv (kind, key, value) SELECT kind, key, value FROM other.kv")
        finally:
            conn.execute("DETACH DATABASE other")
        return n

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
