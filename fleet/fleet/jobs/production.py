"""Production: OEE per line, shift and site, the fleet's loss Pareto, and the opportunities.

Only closing reports count (one per line and shift, sent when the shift ends; running reports are
snapshots of the same shift). OEE over several shifts is computed from summed times and parts, as
the agent does (each shift weighs by its planned busy time), never as a mean of ratios:
A = APT / PBT, P = ideal time / APT (a shift's ideal time is its performance × its APT), Q = good /
total, OEE = A × P × Q.

An opportunity is a loss (category and reason) of a line whose estimated OEE improvement, in points,
is at least `threshold` × the line's gap to 100 % OEE (default 0.3 of the gap); the agents' own
recommendations for it are listed beside it.
"""

from __future__ import annotations

import json

import pandas as pd

SHIFT_KEY = ["site", "agent", "line", "shift", "shift_start", "shift_end"]


def closing(oee) -> pd.DataFrame:
    """The closing report of every line and shift (the last one if an agent sent it twice)."""
    # A pandas filter per block keeps the columns' types in blocks left empty (a row filter would
    # infer them again, and differently).
    frame = oee.map_batches(lambda b: b[b["closing"].astype(bool)], batch_format="pandas").to_pandas()
    if frame.empty:
        return frame
    frame = frame.sort_values("record_id").drop_duplicates(SHIFT_KEY, keep="last")
    return frame[frame["shift"] != "unscheduled"].reset_index(drop=True)


def summed(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """OEE and its factors over groups of shifts, from summed times and parts."""
    f = frame.assign(
        ideal_time=frame["performance"].fillna(0) * frame["actual_production_time"].fillna(0),
    )
    g = f.groupby(by, dropna=False).agg(
        shifts=("shift", "size"),
        planned_busy_time=("planned_busy_time", "sum"),
        actual_production_time=("actual_production_time", "sum"),
        ideal_time=("ideal_time", "sum"),
        parts_total=("parts_total", "sum"),
        parts_good=("parts_good", "sum"),
        parts_reject=("parts_reject", "sum"),
        unplanned_downtime=("unplanned_downtime", "sum"),
    )
    g["availability"] = g["actual_production_time"] / g["planned_busy_time"].where(g["planned_busy_time"] > 0)
    g["performance"] = g["ideal_time"] / g["actual_production_time"].where(g["actual_production_time"] > 0)
    g["quality"] = g["parts_good"] / g["parts_total"].where(g["parts_total"] > 0)
    g["oee"] = g["availability"] * g["performance"] * g["quality"]
    return g.drop(columns="ideal_time").reset_index()


def losses(frame: pd.DataFrame) -> pd.DataFrame:
    """Every loss of every closing report, one row each."""
    rows = []
    for r in frame.itertuples():
        for loss in json.loads(r.losses_json or "[]"):
            rows.append(
                {
                    "site": r.site,
                    "agent": r.agent,
                    "line": r.line,
                    "shift": r.shift,
                    "shift_start": r.shift_start,
                    "category": loss.get("category"),
                    "reason": loss.get("reason"),
                    "seconds": loss.get("seconds") or 0.0,
                    "planned_busy_time": r.planned_busy_time,
                    "recommendation": r.recommendation,
                }
            )
    return pd.DataFrame(rows)


def pareto(loss_rows: pd.DataFrame) -> pd.DataFrame:
    """Loss seconds across the fleet by category and reason, largest first, with cumulative share."""
    if loss_rows.empty:
        return loss_rows
    p = loss_rows.groupby(["category", "reason"], dropna=False)["seconds"].sum().sort_values(ascending=False)
    p = p[p > 0].reset_index()
    p["hours"] = p["seconds"] / 3600
    p["share"] = p["seconds"] / p["seconds"].sum()
    p["cumulative_share"] = p["share"].cumsum()
    return p


def opportunities(lines: pd.DataFrame, loss_rows: pd.DataFrame, threshold: float = 0.3) -> pd.DataFrame:
    """Losses that would close at least `threshold` of their line's OEE gap."""
    if lines.empty or loss_rows.empty:
        return pd.DataFrame()
    per = loss_rows.groupby(["site", "agent", "line", "category", "reason"], dropna=False).agg(
        seconds=("seconds", "sum"), recommendations=("recommendation", lambda s: sorted(set(s.dropna())))
    )
    per = per.reset_index().merge(lines[["site", "agent", "line", "planned_busy_time", "oee"]], how="left")
    per["estimated_improvement"] = 100.0 * per["seconds"] / per["planned_busy_time"]
    per["gap"] = 100.0 * (1.0 - per["oee"])
    chosen = per[(per["gap"] > 0) & (per["estimated_improvement"] >= threshold * per["gap"])]
    return chosen.sort_values("estimated_improvement", ascending=False).reset_index(drop=True)


def run(oee, threshold: float = 0.3) -> dict[str, pd.DataFrame]:
    shifts = closing(oee)
    if shifts.empty:
        return {"oee_shifts": shifts}
    per_shift = summed(shifts, SHIFT_KEY)
    per_line = summed(shifts, ["site", "agent", "line"])
    per_site = summed(shifts, ["site"])
    by_shift_name = summed(shifts, ["site", "line", "shift"])
    loss_rows = losses(shifts)
    return {
        "oee_shifts": per_shift,
        "oee_lines": per_line,
        "oee_sites": per_site,
        "oee_by_shift": by_shift_name,
        "loss_pareto": pareto(loss_rows),
        "opportunities": opportunities(per_line, loss_rows, threshold),
    }
