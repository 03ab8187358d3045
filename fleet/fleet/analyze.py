"""`fleet analyze`: the five jobs over the dataset, their result tables (Parquet) and one HTML report.

Inputs beside the dataset (all optional; a job without what it needs says so in the report):
- registry: the equipment registry, a CSV or an SQL database (a SQLAlchemy-free `sqlite:///path`
  URI, read with `ray.data.read_sql`): `asset, asset_type, site, criticality[, service_hours]`;
- history: maintenance history (Parquet or CSV): `asset, date, kind (failure|preventive)[,
  failure_mode, part, quantity]`;
- crews: crew hours per site and date (CSV: `site, date, hours`);
- catalogue: parts per asset type (CSV: `asset_type, action, part, quantity`);
- inventory: on hand (CSV: `item, on_hand, lead_time_days[, on_order]`);
- plan: the production plan (CSV: `line, date, planned_good`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import ray

from . import report
from .dataset import Read, Selection, read, read_frame
from .jobs import maintenance, production, quality, supply, training
from .store import dataset_fs


@dataclass
class Inputs:
    dataset: str
    out: Path
    selection: Selection = field(default_factory=Selection)
    registry: str | None = None
    history: str | None = None
    crews: str | None = None
    catalogue: str | None = None
    inventory: str | None = None
    plan: str | None = None
    start: date | None = None  # planning date (default: today, UTC)
    threshold: float = 0.3
    service_level: float = 0.95


def _sql(uri: str) -> pd.DataFrame:
    path = uri.removeprefix("sqlite:///")

    def connect():
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    return ray.data.read_sql("SELECT * FROM registry", connect).to_pandas()


def load(path: str | None) -> pd.DataFrame | None:
    """A side table from CSV, Parquet or `sqlite:///…` (the table `registry`)."""
    if not path:
        return None
    if path.startswith("sqlite:///"):
        return _sql(path)
    if path.endswith(".parquet") or Path(path).is_dir():
        return pd.read_parquet(path)
    return pd.read_csv(path)


def require_dataset(uri: str) -> None:
    """A clear error for a dataset that is not there (a typo would otherwise give empty results)."""
    fs, root = dataset_fs(uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise ValueError(f"no dataset at {uri} (fleet ingest --dataset writes one)")


def run(inputs: Inputs) -> dict:
    """Runs every job; returns {table name: rows} and writes `out/<table>.parquet` and `out/report.html`."""
    require_dataset(inputs.dataset)
    inputs.out.mkdir(parents=True, exist_ok=True)
    start = inputs.start or datetime.now(UTC).date()
    registry, history = load(inputs.registry), load(inputs.history)
    if history is not None and "date" in history:
        history["date"] = pd.to_datetime(history["date"], utc=True)
    notes, tables, skipped = [], {}, []

    def source(kind: str) -> Read:
        result = read(inputs.dataset, kind, inputs.selection)
        skipped.extend(result.skipped)
        return result

    health = source("health")
    riskiest = pd.DataFrame()
    if health.dataset is not None:
        assets = maintenance.assets(health.dataset, registry, history)
        tables["maintenance_assets"] = assets
        riskiest = maintenance.history_of_riskiest(health.dataset, assets)
        tables["work_list"] = maintenance.work_list(assets, load(inputs.crews), start)
        if history is not None and "kind" in history:
            tables["training"] = training.table(health.dataset, history)
        else:
            notes.append("training: no maintenance history with failures given")
    else:
        notes.append("maintenance: no assessments in the selection")

    oee = source("oee")
    closing = pd.DataFrame()
    if oee.dataset is not None:
        tables.update(production.run(oee.dataset, inputs.threshold))
        closing = production.closing(oee.dataset)

    reports, _ = read_frame(inputs.dataset, "quality", inputs.selection)
    characteristics, _ = read_frame(inputs.dataset, "characteristic", inputs.selection)
    if not reports.empty:
        tables.update(quality.run(reports, characteristics))

    catalogue = load(inputs.catalogue)
    used = None
    if catalogue is not None:
        parts, used = supply.parts(
            tables.get("work_list", pd.DataFrame()),
            catalogue,
            history,
            registry,
            load(inputs.inventory),
            start,
            inputs.service_level,
        )
        tables["part_demand"] = parts
        tables["material_demand"] = supply.materials(closing, load(inputs.plan), load(inputs.inventory))
    else:
        notes.append("supply: no parts catalogue given")

    for name, frame in tables.items():
        if frame is not None and not frame.empty:
            frame.to_parquet(inputs.out / f"{name}.parquet", index=False)
    if skipped:
        notes.append(f"{len(skipped)} unreadable file(s) left out: " + "; ".join(skipped[:5]))
    _report(inputs, tables, riskiest, characteristics, used, notes)
    return {"tables": {k: len(v) for k, v in tables.items() if v is not None}, "skipped": skipped, "notes": notes}


def _report(inputs: Inputs, tables: dict, riskiest, characteristics, used, notes: list[str]) -> None:
    cpk = tables.get("quality_cpk")
    worst = None
    if cpk is not None and not cpk.empty:
        worst = cpk.groupby(["station", "characteristic"], as_index=False)["cpk_mean"].mean().nsmallest(3, "cpk_mean")
    sections = [
        (
            "Maintenance: the work list",
            report.health_trends(riskiest, tables.get("maintenance_assets", pd.DataFrame())),
            tables.get("work_list"),
        ),
        ("Production: OEE by line and shift", report.oee_by_shift(tables.get("oee_by_shift")), tables.get("oee_lines")),
        ("Production: loss Pareto", report.loss_pareto(tables.get("loss_pareto")), tables.get("loss_pareto")),
        ("Production: opportunities", "", tables.get("opportunities")),
        ("Quality by line", "", tables.get("quality_lines")),
        ("Quality: worst characteristics", report.control_charts(characteristics, worst), worst),
        ("Quality: worsening", "", tables.get("quality_worsening")),
        ("Supply: spare parts", report.forecasts(tables.get("part_demand"), used), tables.get("part_demand")),
        ("Supply: material demand", "", tables.get("material_demand")),
    ]
    report.write(inputs.out / "report.html", "millwright fleet report", sections, notes)
