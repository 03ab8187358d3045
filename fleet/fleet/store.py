"""The ingest's durable side: a ledger (SQLite) of records received but not yet in the dataset, and of
records already in it, and the hive-partitioned Parquet dataset (`kind=…/site=…/date=…`) it rolls into.

Invariants (exactly once in the dataset):
- A message is acknowledged to the broker only after its rows are committed to `pending`, so a crash
  loses nothing: the broker redelivers what was not acknowledged (persistent session).
- A record whose (agent, record_id) is in `pending` or `seen` is a duplicate and is not stored again.
- A roll writes each file under a name starting with `.` (readers skip it), renames it into place,
  and only then moves its records from `pending` to `seen` in one transaction. A crash between the two
  leaves files the ledger does not know: `recover` reads their keys at the next start and finishes the
  move, so the records are neither lost nor written twice. Files still named `.…` are removed.
- `seen` keys older than `dedup_days` are forgotten (QoS 1 repeats arrive within minutes).
"""

from __future__ import annotations

import pickle
import sqlite3
import time as clock
import uuid
from collections import defaultdict
from datetime import UTC, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import records

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS pending (
    agent TEXT NOT NULL, record_id INTEGER NOT NULL, at REAL NOT NULL, size INTEGER NOT NULL,
    rows BLOB NOT NULL, PRIMARY KEY (agent, record_id));
CREATE TABLE IF NOT EXISTS seen (
    agent TEXT NOT NULL, record_id INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (agent, record_id));
CREATE INDEX IF NOT EXISTS seen_at ON seen (at);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, rows INTEGER NOT NULL, written REAL NOT NULL);
"""


def dataset_fs(uri: str, create: bool = False) -> tuple[pafs.FileSystem, str]:
    """A dataset URI (`file:///…`, `s3://…`, or a plain path) as a filesystem and its root path;
    the writer (`create`) makes the root, readers need nothing but read access."""
    if "://" not in uri:
        uri = Path(uri).resolve().as_uri()
    fs, root = pafs.FileSystem.from_uri(uri)
    if create:
        fs.create_dir(root, recursive=True)
    return fs, root.rstrip("/")


class Store:
    def __init__(self, uri: str, state_dir: Path, dedup_days: float = 7.0):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.fs, self.root = dataset_fs(uri, create=True)
        self.db = sqlite3.connect(state_dir / "ledger.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA_SQL)
        self.dedup = timedelta(days=dedup_days)
        self.files_written = 0
        self.rows_written = 0

    # -- receiving -------------------------------------------------------------------------------

    def add(self, batch: list[records.Parsed]) -> int:
        """Commits a batch to `pending`; returns how many were duplicates."""
        fresh = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for parsed in batch:
                known = self.db.execute(
                    "SELECT 1 FROM seen WHERE agent=? AND record_id=?", (parsed.agent, parsed.record_id)
                ).fetchone()
                if known:
                    continue
                blob = pickle.dumps((parsed.site, parsed.time, parsed.tables), protocol=5)
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?)",
                    (parsed.agent, parsed.record_id, clock.time(), len(blob), blob),
                )
                fresh += cursor.rowcount
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return len(batch) - fresh

    def pending(self) -> tuple[int, int, float | None]:
        """(records, bytes, arrival time of the oldest) waiting to be rolled."""
        n, size, oldest = self.db.execute("SELECT count(*), coalesce(sum(size), 0), min(at) FROM pending").fetchone()
        return n, size, oldest

    # -- rolling ---------------------------------------------------------------------------------

    def roll(self, max_records: int = 50_000) -> int:
        """Writes up to `max_records` pending records into the dataset; returns how many."""
        chunk = self.db.execute(
            "SELECT agent, record_id, rows FROM pending ORDER BY at LIMIT ?", (max_records,)
        ).fetchall()
        if not chunk:
            return 0
        buckets: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        for _, _, blob in chunk:
            site, made, tables = pickle.loads(blob)
            date = made.astimezone(UTC).date().isoformat()
            for kind, rows in tables.items():
                buckets[(kind, site, date)].extend(rows)
        written = [self._write(kind, site, date, rows) for (kind, site, date), rows in buckets.items() if rows]
        self._settle([(a, r) for a, r, _ in chunk], written)
        return len(chunk)

    def _write(self, kind: str, site: str, date: str, rows: list[dict]) -> tuple[str, int]:
        directory = f"{self.root}/kind={kind}/site={_level(site)}/date={date}"
        self.fs.create_dir(directory, recursive=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        tmp, final = f"{directory}/.{name}", f"{directory}/{name}"
        # The site and the date are the partition's: readers with hive partitioning (Ray, pyarrow,
        # DuckDB, Spark) add them from the path, and a column of the same name would clash.
        table = records.table(kind, rows).drop_columns(["site"])
        with self.fs.open_output_stream(tmp) as out:
            pq.write_table(table, out, compression="zstd")
        self.fs.move(tmp, final)
        return final, table.num_rows

    def _settle(self, keys: list[tuple[str, int]], files: list[tuple[str, int]]) -> None:
        now = clock.time()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR IGNORE INTO files VALUES (?, ?, ?)", [(p, n, now) for p, n in files])
        self.db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", [(a, r, now) for a, r in keys])
        self.db.executemany("DELETE FROM pending WHERE agent=? AND record_id=?", keys)
        self.db.execute("DELETE FROM seen WHERE at < ?", (now - self.dedup.total_seconds(),))
        self.db.execute("COMMIT")
        self.files_written += len(files)
        self.rows_written += sum(n for _, n in files)

    # -- after a crash ---------------------------------------------------------------------------

    def recover(self) -> dict:
        """Finishes a roll a crash interrupted (see the module docs); returns what it did."""
        known = {p for (p,) in self.db.execute("SELECT path FROM files")}
        adopted, removed, unreadable = 0, 0, []
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True)):
            if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
                continue
            if info.base_name.startswith("."):
                self.fs.delete_file(info.path)
                removed += 1
                continue
            if info.path in known:
                continue
            try:
                with self.fs.open_input_file(info.path) as f:
                    keys = pq.ParquetFile(f).read(columns=["agent", "record_id"])
            except (pa.ArrowInvalid, OSError) as e:
                unreadable.append(f"{info.path}: {e}")
                continue
            pairs = sorted(
                set(zip(keys.column("agent").to_pylist(), keys.column("record_id").to_pylist(), strict=False))
            )
            self._settle(pairs, [(info.path, keys.num_rows)])
            adopted += 1
        return {"adopted_files": adopted, "removed_partial_files": removed, "unreadable_files": unreadable}

    def close(self) -> None:
        self.db.close()


def _level(value: str) -> str:
    """A partition value that cannot leave its directory."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in value or "_")
    return cleaned.strip(".") or "_"
