"""Retraining data: the agents' assessments (their model features) joined with the maintenance history's
failures into the table `models/train.py --data` takes.

Each asset's history is cut at its failures into run-to-failure runs (`run` = site/agent/asset/#n).
A row before a failure gets `hours_to_failure` and `label` = 1 when the failure is within the horizon
(48 h, the model's), `fault` = the failure's mode. Rows after an asset's last failure are `healthy`
runs, except the last horizon before the data ends: whether a failure follows them is not known yet,
so they are left out rather than labelled healthy.
"""

from __future__ import annotations

import pandas as pd

from ..records import FEATURES

HORIZON_HOURS = 48.0
COLUMNS = ["run", "fault", "label", "hours_to_failure", "rule_probability", *FEATURES]


def per_asset(group: pd.DataFrame, failures: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """One asset's assessments as training rows (a Ray Data `map_groups` function)."""
    group = group.sort_values("assessed_at")
    first = group.iloc[0]
    mine = failures[failures["asset"] == first["asset"]].sort_values("date")
    times = list(mine["date"]) + [None]
    modes = list(mine["failure_mode"]) + ["healthy"]
    rows = []
    run_start = pd.Timestamp.min.tz_localize("UTC")
    for n, (failed_at, mode) in enumerate(zip(times, modes, strict=False)):
        upto = group["assessed_at"] < failed_at if failed_at is not None else group["assessed_at"] <= end
        part = group[(group["assessed_at"] >= run_start) & upto]
        if failed_at is None:
            part = part[part["assessed_at"] <= end - pd.Timedelta(hours=HORIZON_HOURS)]
        hours = (failed_at - part["assessed_at"]).dt.total_seconds() / 3600 if failed_at is not None else None
        frame = pd.DataFrame(
            {
                "run": f"{first['site']}/{first['agent']}/{first['asset']}/{n}",
                "fault": mode,
                "label": (hours <= HORIZON_HOURS).astype(int) if hours is not None else 0,
                "hours_to_failure": hours if hours is not None else float("nan"),
                "rule_probability": part["rule_probability"],
                **{f: part[f"feature_{f}"] for f in FEATURES},
            }
        )
        rows.append(frame)
        if failed_at is not None:
            run_start = failed_at
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
    return out[COLUMNS]


def table(health, history: pd.DataFrame) -> pd.DataFrame:
    """The training table from the `health` Ray dataset and the history (failures: `kind == failure`)."""
    failures = history[history["kind"] == "failure"].copy() if history is not None and not history.empty else None
    if failures is None or failures.empty:
        failures = pd.DataFrame({"asset": [], "date": pd.to_datetime([], utc=True), "failure_mode": []})
    failures["date"] = pd.to_datetime(failures["date"], utc=True)
    if "failure_mode" not in failures:
        failures["failure_mode"] = "failure"
    # Ray's `max` has no answer for timestamps: each block gives its latest, the driver the latest of those.
    latest = health.map_batches(
        lambda b: pd.DataFrame({"latest": [b["assessed_at"].max()]}), batch_format="pandas"
    ).to_pandas()["latest"]
    end = pd.Timestamp(latest.max())
    result = health.groupby(["site", "agent", "asset"]).map_groups(
        lambda g: per_asset(g, failures, end), batch_format="pandas"
    )
    return result.to_pandas()
