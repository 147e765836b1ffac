"""Results stores: one record per cell, written atomically, first write wins.

No URL = a folder store (one JSON file per cell, written to a temp name then
``os.replace``d, so a ``kill -9`` leaves either the whole file or none). A
``sqlite:///path`` URL = one SQLite file in WAL mode (optuna's "the URL is the
shared backend" convention); a cell is a primary-key row, inserted or ignored.
Both compact to ``results.parquet`` + ``results.csv`` for people and pandas.

Claims: before a worker computes a cell it ``claim``s the key (a lease with an expiry,
renewed by nobody: a cell takes seconds to minutes, the lease 30 minutes by default), so
N workers or processes on one store compute each cell once. A claim whose owner process
is gone (same host, pid not alive) or whose lease ran out can be taken over, so a killed
worker's cells come back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

import pandas as pd

from imagesets import UserError, atomic_path, file_lock, unique_tmp

__all__ = ["StoreError", "ResultStore", "FolderStore", "SQLiteStore", "open_store", "cell_key", "worker_id",
           "DEFAULT_LEASE_S"]

DEFAULT_LEASE_S = 1800.0
_WORKER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def worker_id() -> str:
    """``host:pid:random`` of this process: the owner written into claims."""
    if int(_WORKER.split(":")[-2]) != os.getpid():  # forked child: a new identity
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return _WORKER


def _claim_is_live(claim: dict | None, now: float) -> bool:
    """A claim holds while its lease runs and (on this host) its owner process lives."""
    if not claim:
        return False
    if float(claim.get("expires", 0)) < now:
        return False
    host, _, rest = str(claim.get("owner", "")).partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


class StoreError(UserError):
    """A store URL that cannot be opened."""


def _safe(name: str) -> str:
    """A file-name-safe form of a dataset name or spec (paths get a short hash suffix)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "x"
    if clean != name:
        import hashlib

        clean = f"{clean[-40:]}-{hashlib.blake2b(name.encode(), digest_size=4).hexdigest()}"
    return clean


def cell_key(kind: str, source: str, target: str, repeat: int, protocol_hash: str) -> str:
    """The store key of one cell: (kind, source, target, fold/seed, protocol hash)."""
    return f"{kind}__{_safe(source)}__{_safe(target or '-')}__{repeat}__{protocol_hash}"


class ResultStore(ABC):
    """Where finished cells live. ``put`` is idempotent: an existing key is never overwritten."""

    url: str

    @abstractmethod
    def put(self, record: dict) -> bool:
        """Store ``record`` (must have ``key``); False if the key was already there."""

    @abstractmethod
    def keys(self) -> set[str]:
        """Keys of readable, complete records (a corrupt cell is not done)."""

    @abstractmethod
    def claim(self, key: str, owner: str | None = None, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Take the lease on ``key``: False if it is stored already or a live claim holds it."""

    @abstractmethod
    def release(self, key: str, owner: str | None = None) -> None:
        """Drop ``owner``'s claim on ``key`` (after storing it, or after a failure)."""

    @abstractmethod
    def records(self) -> list[dict]: ...

    def get(self, key: str) -> dict | None:
        for r in self.records():
            if r["key"] == key:
                return r
        return None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records())

    def compact(self, folder: Path) -> Path | None:
        """Write every record to ``folder/results.parquet`` and ``results.csv`` (atomic renames)."""
        df = self.frame()
        if df.empty:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        df = df.sort_values("key").reset_index(drop=True)
        for col in df.columns:  # nested values (history) as JSON text for flat formats
            if df[col].map(lambda v: isinstance(v, (list, dict))).any():
                df[col] = df[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
        out = folder / "results.parquet"
        with atomic_path(out) as tmp:
            df.to_parquet(tmp, index=False)
        with atomic_path(folder / "results.csv") as tmp:
            df.drop(columns=[c for c in ("history",) if c in df.columns]).to_csv(tmp, index=False)
        return out


class FolderStore(ResultStore):
    """``<root>/cells/<key>.json``; the filesystem is the database (works for any backend)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.cells = self.root / "cells"
        try:
            self.cells.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store folder {self.cells}: {exc}") from exc
        self.url = str(self.root)

    def put(self, record: dict) -> bool:
        path = self.cells / f"{record['key']}.json"
        if path.exists() and self._read(path) is not None:
            return False
        if path.exists():  # a corrupt file (foreign junk, disk fault): replace it
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(record, default=str))
            return True
        tmp = unique_tmp(path)
        with open(tmp, "w") as fh:
            json.dump(record, fh, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        try:  # link fails if another worker won the race: first write wins, nothing duplicated
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # filesystems without hard links
            os.replace(tmp, path)
            return True
        finally:
            if tmp.exists():
                tmp.unlink()
        return True

    @staticmethod
    def _read(p: Path) -> dict | None:
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):  # never produced by put()
            return None
        return rec if isinstance(rec, dict) and rec.get("key") == p.stem else None

    def keys(self) -> set[str]:
        return {r["key"] for r in self.records()}

    def records(self) -> list[dict]:
        return [r for p in sorted(self.cells.glob("*.json")) if (r := self._read(p)) is not None]

    def get(self, key: str) -> dict | None:
        p = self.cells / f"{key}.json"
        return self._read(p) if p.exists() else None

    # -- claims: one small JSON per claimed key, read-modify-write under one lock --------
    def _claim_path(self, key: str) -> Path:
        return self.root / "claims" / f"{key}.json"

    def claim(self, key: str, owner: str | None = None, lease_s: float = DEFAULT_LEASE_S) -> bool:
        owner = owner or worker_id()
        path = self._claim_path(key)
        with file_lock(self.root / "claims" / ".claims"):
            if self.get(key) is not None:
                return False
            held = None
            if path.exists():
                with contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError):
                    held = json.loads(path.read_text())
            now = time.time()
            if _claim_is_live(held, now) and held.get("owner") != owner:
                return False
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps({"key": key, "owner": owner, "claimed": now, "expires": now + lease_s}))
            return True

    def release(self, key: str, owner: str | None = None) -> None:
        owner = owner or worker_id()
        path = self._claim_path(key)
        with file_lock(self.root / "claims" / ".claims"):
            with contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError):
                if json.loads(path.read_text()).get("owner") == owner:
                    path.unlink()


class SQLiteStore(ResultStore):
    """One table ``cells(key PRIMARY KEY, kind, source, target, repeat, record)`` in WAL mode."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()
            with self._conn() as c:
                c.execute("CREATE TABLE IF NOT EXISTS cells (key TEXT PRIMARY KEY, kind TEXT, source TEXT,"
                          " target TEXT, repeat INTEGER, record TEXT NOT NULL)")
                c.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL,"
                          " expires REAL NOT NULL)")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _conn(self):  # noqa: ANN202
        """One connection per operation, committed on success and always closed."""
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def claim(self, key: str, owner: str | None = None, lease_s: float = DEFAULT_LEASE_S) -> bool:
        owner = owner or worker_id()
        now = time.time()
        with self._conn() as c:
            if c.execute("SELECT 1 FROM cells WHERE key = ?", (key,)).fetchone():
                return False
            row = c.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
            if row and row[0] != owner and _claim_is_live({"owner": row[0], "expires": row[1]}, now):
                return False
            c.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, owner, now + lease_s))
            return True

    def release(self, key: str, owner: str | None = None) -> None:
        with self._conn() as c:
            c.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner or worker_id()))

    def put(self, record: dict) -> bool:
        with self._conn() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?, ?)",
                (record["key"], record.get("kind"), record.get("source"), record.get("target"),
                 int(record.get("repeat", -1)), json.dumps(record, default=str)),
            )
            return cur.rowcount == 1

    def keys(self) -> set[str]:
        return {r["key"] for r in self.records() if isinstance(r, dict) and "key" in r}

    def records(self) -> list[dict]:
        with self._conn() as c:
            rows = c.execute("SELECT record FROM cells ORDER BY key").fetchall()
        out = []
        for (text,) in rows:
            with contextlib.suppress(json.JSONDecodeError, TypeError):
                out.append(json.loads(text))
        return out

    def get(self, key: str) -> dict | None:
        with self._conn() as c:
            row = c.execute("SELECT record FROM cells WHERE key = ?", (key,)).fetchone()
        try:
            return json.loads(row[0]) if row else None
        except json.JSONDecodeError:
            return None


def open_store(url: str | None, default_root: str | os.PathLike) -> ResultStore:
    """``None``/a folder path -> FolderStore; ``sqlite:///path`` -> SQLiteStore."""
    if url is None or url == "":
        return FolderStore(default_root)
    if url.startswith("sqlite:///"):
        if not url[len("sqlite:///"):]:
            raise StoreError("sqlite:/// needs a file path, e.g. sqlite:///runs/store.db")
        return SQLiteStore(url[len("sqlite:///"):])
    if "://" in url:
        raise StoreError(f"unsupported store URL '{url}' (use a folder path or sqlite:///path)")
    return FolderStore(url)
