"""Reading the dataset with Ray Data: one table (`kind=…`), filtered by site and date on the partition
directories, so a job over one site and a week opens only those files.

A file that is not readable Parquet (truncated by a killed writer that was not this ingest, or
damaged on the way) is left out and reported in `Read.skipped`, so one bad file never fails a job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from .store import dataset_fs


@dataclass
class Selection:
    sites: list[str] | None = None
    start: str | None = None  # YYYY-MM-DD, inclusive
    end: str | None = None

    def keeps(self, site: str, date: str) -> bool:
        return (
            (not self.sites or site in self.sites)
            and (self.start is None or date >= self.start)
            and (self.end is None or date <= self.end)
        )


@dataclass
class Read:
    dataset: ray.data.Dataset | None
    files: int = 0
    skipped: list[str] = field(default_factory=list)


def _partition(path: str, key: str) -> str:
    for level in path.split("/"):
        if level.startswith(key + "="):
            return level[len(key) + 1 :]
    return ""


def read(uri: str, kind: str, selection: Selection | None = None) -> Read:
    """The table `kind` as a Ray dataset (None when no file matches), with `site` and `date` (text)
    from the partition directories."""
    selection = selection or Selection()
    fs, root = dataset_fs(uri)
    base = f"{root}/kind={kind}"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return Read(None)
    files, skipped = [], []
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if info.type != pafs.FileType.File or info.base_name.startswith((".", "_")):
            continue
        if not selection.keeps(_partition(info.path, "site"), _partition(info.path, "date")):
            continue
        try:
            pq.read_metadata(info.path, filesystem=fs)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped and reported
            skipped.append(f"{info.path}: {e}")
            continue
        files.append(info.path)
    if not files:
        return Read(None, 0, skipped)
    dataset = ray.data.read_parquet(
        files,
        filesystem=fs,
        partitioning=ray.data.datasource.Partitioning("hive", base_dir=base, filesystem=fs),
    )
    return Read(dataset, len(files), skipped)


def read_frame(uri: str, kind: str, selection: Selection | None = None):
    """The table as one pandas frame (small tables: closing reports, quality reports), and the Read."""
    import pandas as pd

    result = read(uri, kind, selection)
    if result.dataset is None:
        return pd.DataFrame(), result
    return result.dataset.to_pandas(), result
