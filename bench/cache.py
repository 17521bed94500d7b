"""Content-addressed cache of successful generations and judgments.

SQLite in WAL mode (or, for a worker's own cache on a shared filesystem, the rollback journal), so two processes
(say two `bench` runs sharing a cache) can read and write at once.
Keys are explicit: callers build them with :func:`core.io.hash_obj` from everything that determines the value
(model fingerprint + backend + prompt + settings + repeat index; judge model + prompt + settings).
Only successful results go in: a failure is never cached, so a re-run retries it.

The file is checked when opened (``PRAGMA quick_check``). A damaged one (truncated, overwritten, not a database)
is moved aside as ``<name>.damaged-<time>`` (with its ``-wal``/``-shm`` files), every entry that can still be read
is copied into a fresh cache, and one warning line says so: what was lost is computed again (generated, or asked
of the judge) on the next call, and the damaged copy is kept. Any other SQLite or OS error (a folder in the way,
a read-only or full disk) is a one-line :class:`~core.errors.UserError` naming the file.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core.errors import UserError, first_line, os_error

# Messages SQLite gives for a file that is not (or no longer) a sound database.
_DAMAGED = ("malformed", "not a database", "corrupt", "file is encrypted")


def _damaged(e: Exception) -> bool:
    return any(m in str(e).lower() for m in _DAMAGED)


class Cache:
    """``wal=False`` keeps SQLite's rollback journal: a worker's own cache on a shared filesystem, where WAL's
    shared memory does not work across hosts."""

    def __init__(self, path: str | os.PathLike, wal: bool = True):
        self.path = Path(path)
        self._journal = "WAL" if wal else "DELETE"
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self.recovered: dict | None = None  # set when a damaged file was replaced: {"aside", "entries", "why"}
        if self.path.is_dir():
            raise UserError(f"cache {self.path} is a directory, not a cache file: move it away")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(e, "create the cache folder", self.path.parent) from None
        why = self._check()
        if why is not None:
            self._recover(why)

    # -- opening ----------------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared across threads.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
            self._conns.append(conn)
        return conn

    def _check(self) -> str | None:
        """None when the cache opens and is sound; else why it is damaged (other errors raise)."""
        try:
            c = self._conn()
            c.execute(f"PRAGMA journal_mode={self._journal}")
            c.execute("CREATE TABLE IF NOT EXISTS kv (kind TEXT, key TEXT, value TEXT, PRIMARY KEY (kind, key))")
            result = [r[0] for r in c.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as e:
            if _damaged(e):
                return str(e)
            raise self._error(e, "open") from None
        problems = [r for r in result if not r.startswith("***")]
        return None if result == ["ok"] else f"quick_check: {first_line((problems or result)[0], 120)}"

    def _close_all(self) -> None:
        for c in self._conns:
            try:
                c.close()
            except sqlite3.Error:
                pass
        self._conns.clear()
        self._local = threading.local()

    def _recover(self, why: str) -> None:
        """Move the damaged file aside, copy what can be read into a fresh cache, and say so on stderr."""
        self._close_all()
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
        except OSError as e:
            raise os_error(e, "move the damaged cache aside:", self.path) from None
        rows = _salvage(aside)
        c = self._conn()
        try:
            c.execute(f"PRAGMA journal_mode={self._journal}")
            c.execute("CREATE TABLE IF NOT EXISTS kv (kind TEXT, key TEXT, value TEXT, PRIMARY KEY (kind, key))")
            c.executemany("INSERT OR REPLACE INTO kv (kind, key, value) VALUES (?, ?, ?)", rows)
        except sqlite3.DatabaseError as e:
            raise self._error(e, "rebuild") from None
        self.recovered = {"aside": str(aside), "entries": len(rows), "why": why}
        print(f"bench: warning: cache {self.path} was damaged ({why}): moved to {aside.name}; {len(rows)} entries "
              "recovered into a fresh cache; anything lost is generated or judged again", file=sys.stderr, flush=True)

    def _error(self, e: Exception, action: str) -> UserError:
        msg = str(e)
        if "full" in msg.lower():
            hint = "the disk is full: free space and re-run the same command (finished work is kept)"
        elif "readonly" in msg.lower() or "read-only" in msg.lower() or "unable to open" in msg.lower():
            hint = "check that its folder exists and is writable"
        elif _damaged(e):
            hint = "the file is damaged: re-run the same command to rebuild it (the damaged copy is kept)"
        else:
            hint = ""
        return UserError(f"cannot {action} cache {self.path}: {msg}{f'; {hint}' if hint else ''}")

    # -- use --------------------------------------------------------------------------------------------------
    def get(self, kind: str, key: str) -> Any | None:
        try:
            row = self._conn().execute("SELECT value FROM kv WHERE kind=? AND key=?", (kind, key)).fetchone()
        except sqlite3.DatabaseError as e:
            raise self._error(e, "read") from None
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            return None  # an unreadable entry is a miss: it is computed again and overwritten

    def put(self, kind: str, key: str, value: Any) -> None:
        try:
            self._conn().execute(
                "INSERT OR REPLACE INTO kv (kind, key, value) VALUES (?, ?, ?)", (kind, key, json.dumps(value)))
        except sqlite3.DatabaseError as e:
            raise self._error(e, "write") from None

    def count(self, kind: str | None = None) -> int:
        try:
            if kind is None:
                return self._conn().execute("SELECT COUNT(*) FROM kv").fetchone()[0]
            return self._conn().execute("SELECT COUNT(*) FROM kv WHERE kind=?", (kind,)).fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise self._error(e, "read") from None

    def merge(self, other: str | os.PathLike) -> int:
        """Copy every entry of the cache file ``other`` into this one; returns how many it held. A damaged
        ``other`` gives what can still be read of it (and one warning line), never an error."""
        conn = self._conn()
        try:
            conn.execute("ATTACH DATABASE ? AS other", (str(other),))
            try:
                n = conn.execute("SELECT COUNT(*) FROM other.kv").fetchone()[0]
                conn.execute("INSERT OR REPLACE INTO kv (kind, key, value) SELECT kind, key, value FROM other.kv")
            finally:
                conn.execute("DETACH DATABASE other")
            return n
        except sqlite3.DatabaseError as e:
            if not _damaged(e):
                raise self._error(e, f"merge {other} into") from None
        rows = _salvage(Path(other))
        try:
            conn.executemany("INSERT OR REPLACE INTO kv (kind, key, value) VALUES (?, ?, ?)", rows)
        except sqlite3.DatabaseError as e:
            raise self._error(e, "write") from None
        print(f"bench: warning: cache {other} is damaged: {len(rows)} entries that could be read were merged into "
              f"{self.path}", file=sys.stderr, flush=True)
        return len(rows)

    def close(self) -> None:
        self._close_all()


def _salvage(path: Path) -> list[tuple[str, str, str]]:
    """Every (kind, key, value) row of a damaged cache file that can still be read, in rowid order.

    Read from a copy: a truncated file is padded with zero pages up to the size its header declares, so SQLite
    opens it and the rows on the pages that survived can be read."""
    rows: list[tuple[str, str, str]] = []
    copy = Path(f"{path}.salvage")
    try:
        shutil.copyfile(path, copy)
        for suffix in ("-wal",):
            if Path(f"{path}{suffix}").exists():
                shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
        with open(copy, "r+b") as f:
            head = f.read(100)
            if len(head) == 100 and head.startswith(b"SQLite format 3\0"):
                page = struct.unpack(">H", head[16:18])[0]
                pages = struct.unpack(">I", head[28:32])[0]
                want = (65536 if page == 1 else page) * pages
                if os.path.getsize(copy) < want:
                    f.truncate(want)
        conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        _remove(copy)
        return rows
    try:
        last, skip = -1, 0
        while skip < 48:  # in chunks, so the rows before a damaged page survive the error it raises
            try:
                chunk = conn.execute("SELECT rowid, kind, key, value FROM kv WHERE rowid > ? ORDER BY rowid "
                                     "LIMIT 64", (last + (1 << skip) - 1 if skip else last,)).fetchall()
            except sqlite3.Error:
                skip += 1  # a damaged page: jump ahead (1, 2, 4, ... rowids) to the pages after it
                continue
            if not chunk:
                break
            rows += [(k, key, v) for _, k, key, v in chunk if isinstance(v, str)]
            last, skip = chunk[-1][0], 0
    finally:
        conn.close()
        _remove(copy)
    return rows


def _remove(copy: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
        except OSError:
            pass
