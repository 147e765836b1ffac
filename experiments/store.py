"""Results stores: one record per cell, written atomically, first write wins.

No URL = a folder store (one JSON file per cell, written to a temp name then
``os.replace``d, so a ``kill -9`` leaves either the whole file or none). A
``sqlite:///path`` URL = one SQLite file in WAL mode (optuna's "the URL is the
shared backend" convention); a cell is a primary-key row, inserted or ignored.
Both compact to ``results.parquet`` + ``results.csv`` for people and pandas.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from abc import ABC, abstractmethod
from pathlib import Path

import pandas as pd

from imagesets import UserError

__all__ = ["StoreError", "ResultStore", "FolderStore", "SQLiteStore", "open_store", "cell_key"]


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
    def keys(self) -> set[str]: ...

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
        tmp = folder / f".results.{os.getpid()}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out)
        tmp_csv = folder / f".results.{os.getpid()}.csv.tmp"
        df.drop(columns=[c for c in ("history",) if c in df.columns]).to_csv(tmp_csv, index=False)
        os.replace(tmp_csv, folder / "results.csv")
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
        if path.exists():
            return False
        tmp = self.cells / f".{record['key']}.{os.getpid()}.tmp"
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

    def keys(self) -> set[str]:
        return {p.stem for p in self.cells.glob("*.json")}

    def records(self) -> list[dict]:
        out = []
        for p in sorted(self.cells.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):  # never produced by put(); skip foreign junk
                continue
        return out

    def get(self, key: str) -> dict | None:
        p = self.cells / f"{key}.json"
        return json.loads(p.read_text()) if p.exists() else None


class SQLiteStore(ResultStore):
    """One table ``cells(key PRIMARY KEY, kind, source, target, repeat, record)`` in WAL mode."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._conn() as c:
                c.execute("PRAGMA journal_mode=WAL")
                c.execute("CREATE TABLE IF NOT EXISTS cells (key TEXT PRIMARY KEY, kind TEXT, source TEXT,"
                          " target TEXT, repeat INTEGER, record TEXT NOT NULL)")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def put(self, record: dict) -> bool:
        with self._conn() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?, ?)",
                (record["key"], record.get("kind"), record.get("source"), record.get("target"),
                 int(record.get("repeat", -1)), json.dumps(record, default=str)),
            )
            return cur.rowcount == 1

    def keys(self) -> set[str]:
        with self._conn() as c:
            return {r[0] for r in c.execute("SELECT key FROM cells")}

    def records(self) -> list[dict]:
        with self._conn() as c:
            return [json.loads(r[0]) for r in c.execute("SELECT record FROM cells ORDER BY key")]

    def get(self, key: str) -> dict | None:
        with self._conn() as c:
            row = c.execute("SELECT record FROM cells WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None


def open_store(url: str | None, default_root: str | os.PathLike) -> ResultStore:
    """``None``/a folder path -> FolderStore; ``sqlite:///path`` -> SQLiteStore."""
    if url is None or url == "":
        return FolderStore(default_root)
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///"):])
    if "://" in url:
        raise StoreError(f"unsupported store URL '{url}' (use a folder path or sqlite:///path)")
    return FolderStore(url)
