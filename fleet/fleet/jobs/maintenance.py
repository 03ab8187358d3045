"""Maintenance: per asset, where it stands and where it is heading; the fleet's work list.

Per asset (site, agent, asset), from its assessments (Ray Data: one group per asset):
latest health, failure probability and its trend (least-squares slope per day over `trend_days`),
action, priority, recommended maintenance date and remaining life, joined with the equipment
registry (criticality 1–5, default 3) and the last maintenance from the history.

Risk = failure probability × criticality / 3. The work list holds every asset whose latest action is
not routine monitoring, ranked by risk (highest first) and then by due date (earliest first). With
crew capacity (hours per site and date) it is levelled: in rank order each job takes the earliest
day from the planning date with enough hours left at its site, by its due date when possible
(`late` says when not).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

ACTION_HOURS = {"immediate_maintenance": 8.0, "scheduled_maintenance": 4.0}
RISK_CRITICALITY = 3.0


def _slope_per_day(times: pd.Series, values: pd.Series) -> float:
    ok = values.notna()
    if ok.sum() < 2:
        return float("nan")
    x = (times[ok] - times[ok].iloc[0]).dt.total_seconds().to_numpy() / 86400.0
    y = values[ok].to_numpy(dtype=float)
    if np.ptp(x) == 0:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def _listed(row: pd.Series, column: str):
    """A list column's value; empty where older files lack the column or hold null."""
    value = row.get(column)
    return [] if value is None or (isinstance(value, float) and np.isnan(value)) else value


def per_asset(group: pd.DataFrame, trend_days: float = 7.0) -> pd.DataFrame:
    """One asset's assessments → its one row (a Ray Data `map_groups` function)."""
    group = group.sort_values(["assessed_at", "record_id"])
    last = group.iloc[-1]
    recent = group[group["assessed_at"] >= last["assessed_at"] - pd.Timedelta(days=trend_days)]
    return pd.DataFrame(
        [
            {
                "site": last["site"],
                "agent": last["agent"],
                "asset": last["asset"],
                "asset_type": last["asset_type"],
                "assessed_at": last["assessed_at"],
                "assessments": len(group),
                "overall_health": last["overall_health"],
                "failure_probability": last["failure_probability"],
                "failure_probability_trend_per_day": _slope_per_day(
                    recent["assessed_at"], recent["failure_probability"]
                ),
                "health_trend_per_day": _slope_per_day(recent["assessed_at"], recent["overall_health"]),
                "action": last["action"],
                "priority": last["priority"],
                "maintenance_due": last["maintenance_due"],
                "remaining_life_hours": last["remaining_life_hours"],
                "reason": (list(last["reasons"]) or [None])[0],
                # What the waveform analysis suspects (the bearing and its defect), if anything.
                "vibration_diagnosis": (list(_listed(last, "vibration_diagnoses")) or [None])[0],
            }
        ]
    )


def assets(health, registry: pd.DataFrame | None, history: pd.DataFrame | None, trend_days=7.0):
    """The per-asset table from the `health` Ray dataset."""
    table = health.groupby(["site", "agent", "asset"]).map_groups(
        lambda g: per_asset(g, trend_days), batch_format="pandas"
    )
    frame = table.to_pandas()
    if frame.empty:
        return frame
    if registry is not None and not registry.empty:
        frame = frame.merge(registry, on="asset", how="left", suffixes=("", "_registry"))
    if "criticality" not in frame:
        frame["criticality"] = np.nan
    frame["criticality"] = frame["criticality"].fillna(RISK_CRITICALITY)
    if history is not None and not history.empty:
        last = history.groupby("asset")["date"].max().rename("last_maintenance")
        frame = frame.merge(last, left_on="asset", right_index=True, how="left")
    frame["risk"] = frame["failure_probability"] * frame["criticality"] / RISK_CRITICALITY
    return frame.sort_values(["risk", "maintenance_due"], ascending=[False, True]).reset_index(drop=True)


def history_of_riskiest(health, assets_table: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The assessments of the `n` riskiest assets only (for the report's trend charts): filtered
    block by block, so the driver never holds the fleet's whole history."""
    if assets_table.empty:
        return pd.DataFrame()
    keys = set(zip(assets_table["agent"].head(n), assets_table["asset"].head(n), strict=True))

    def keep(batch: pd.DataFrame) -> pd.DataFrame:
        return batch[[k in keys for k in zip(batch["agent"], batch["asset"], strict=True)]]

    return health.map_batches(keep, batch_format="pandas").to_pandas()


def work_list(assets_table: pd.DataFrame, crews: pd.DataFrame | None, start: date, horizon_days: int = 28):
    """The ranked work list, levelled against crew hours when `crews` (site, date, hours) is given."""
    if assets_table.empty:
        return assets_table
    work = assets_table[assets_table["action"].isin(ACTION_HOURS)].copy()
    work["hours"] = work["action"].map(ACTION_HOURS)
    if "service_hours" in work:
        work["hours"] = work["service_hours"].fillna(work["hours"])
    work["due_date"] = pd.to_datetime(work["maintenance_due"], utc=True).dt.date
    work = work.sort_values(["risk", "due_date"], ascending=[False, True], na_position="last")
    work["rank"] = range(1, len(work) + 1)
    if crews is None or crews.empty:
        work["scheduled_date"] = work["due_date"]
        work["late"] = False
        return work.reset_index(drop=True)
    left = {(r.site, pd.Timestamp(r.date).date()): float(r.hours) for r in crews.itertuples()}
    scheduled, late = [], []
    for job in work.itertuples():
        day, chosen = start, None
        for _ in range(horizon_days):
            if left.get((job.site, day), 0.0) >= job.hours:
                chosen = day
                break
            day += timedelta(days=1)
        if chosen is not None:
            left[(job.site, chosen)] -= job.hours
        scheduled.append(chosen)
        due = job.due_date if isinstance(job.due_date, date) else None
        late.append(chosen is None or (due is not None and chosen > due))
    work["scheduled_date"] = scheduled
    work["late"] = late
    return work.reset_index(drop=True)
