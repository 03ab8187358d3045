"""Supply chain: spare-part demand from the predicted maintenance and from history, material demand
from the lines' consumption and the production plan, and the orders an on-hand inventory needs.

Spare parts:
- predicted: every job of the work list due within the horizon needs its asset type's parts from the
  catalogue (`asset_type, action, part, quantity`; action `*` for any maintenance);
- history: parts used per week (the maintenance history's `part`/`quantity`, or, where it names
  none, its asset type's catalogue parts), forecast with Croston's method and the Syntetos–Boylan
  correction (SBA), the standard for intermittent demand;
- safety stock = z(service level) × σ(weekly demand) × √(lead time in weeks); reorder point = the
  forecast over the lead time + the predicted demand due within it + safety stock; an order brings the
  position (on hand + on order) up to the reorder point plus `review_weeks` of forecast.

Materials: per line, consumption per good unit (summed amounts over summed good parts of the closing
reports) × the plan's good units per date.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pandas as pd


def croston_sba(demand: np.ndarray, alpha: float = 0.1) -> float:
    """Per-period demand rate of an intermittent series (Croston, SBA-corrected); 0 without demand."""
    nonzero = np.flatnonzero(demand > 0)
    if nonzero.size == 0:
        return 0.0
    size, interval = float(demand[nonzero[0]]), float(nonzero[0] + 1)
    since = 0
    for d in demand[nonzero[0] + 1 :]:
        since += 1
        if d > 0:
            size += alpha * (d - size)
            interval += alpha * (since - interval)
            since = 0
    return (1 - alpha / 2) * size / interval


def weekly_part_use(history: pd.DataFrame, catalogue: pd.DataFrame, registry: pd.DataFrame) -> pd.DataFrame:
    """Parts used per week (`part, week, quantity`) from the maintenance history."""
    columns = ["part", "week", "quantity"]
    if history is None or history.empty:
        return pd.DataFrame(columns=columns)
    h = history.copy()
    h["week"] = pd.to_datetime(h["date"], utc=True).dt.tz_localize(None).dt.to_period("W").dt.start_time
    for column in ("part", "quantity"):
        if column not in h:
            h[column] = None
    named = h[h["part"].notna()]
    rest = h[h["part"].isna()].drop(columns=["part", "quantity"], errors="ignore")
    if not rest.empty and registry is not None and "asset_type" in registry:
        rest = rest.merge(registry[["asset", "asset_type"]], on="asset", how="left")
        rest = rest.merge(catalogue[["asset_type", "part", "quantity"]], on="asset_type", how="inner")
    else:
        rest = pd.DataFrame(columns=columns)
    used = pd.concat([named[columns], rest[columns]], ignore_index=True)
    return used.groupby(["part", "week"], as_index=False)["quantity"].sum()


def predicted_parts(work: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """Parts the work list's jobs need (`part, due_date, quantity, asset`)."""
    if work.empty:
        return pd.DataFrame(columns=["part", "due_date", "quantity", "asset"])
    c = catalogue.copy()
    c["action"] = c["action"].fillna("*") if "action" in c else "*"
    exact = work.merge(c[c["action"] != "*"], on=["asset_type", "action"])
    anyaction = work.merge(c[c["action"] == "*"].drop(columns="action"), on="asset_type")
    parts = pd.concat([exact, anyaction], ignore_index=True)
    return parts[["part", "due_date", "quantity", "asset"]]


def parts(work, catalogue, history, registry, inventory, start, service_level=0.95, review_weeks=1, weeks=26):
    used = weekly_part_use(history, catalogue, registry)
    predicted = predicted_parts(work, catalogue)
    z = NormalDist().inv_cdf(service_level)
    calendar = pd.date_range(end=pd.Timestamp(start).to_period("W").start_time, periods=weeks, freq="W-MON")
    items = sorted(set(used["part"]) | set(predicted["part"]) | set(catalogue["part"]))
    stock = inventory.set_index("item") if inventory is not None and not inventory.empty else pd.DataFrame()
    rows = []
    for part in items:
        series = used[used["part"] == part].set_index("week")["quantity"].reindex(calendar, fill_value=0)
        demand = series.to_numpy(dtype=float)
        rate = croston_sba(demand)
        sigma = float(np.std(demand, ddof=1)) if demand.size > 1 else 0.0
        lead_days = float(stock.at[part, "lead_time_days"]) if part in stock.index else 14.0
        lead_weeks = lead_days / 7
        due_by = pd.Timestamp(start) + pd.Timedelta(days=lead_days)
        mine = predicted[predicted["part"] == part]
        due = pd.to_datetime(mine["due_date"])
        within = float(mine.loc[due.isna() | (due <= due_by), "quantity"].sum())
        safety = z * sigma * math.sqrt(lead_weeks)
        reorder = rate * lead_weeks + within + safety
        on_hand = float(stock.at[part, "on_hand"]) if part in stock.index else 0.0
        on_order = float(stock.at[part, "on_order"]) if part in stock.index and "on_order" in stock else 0.0
        order = (
            max(0.0, math.ceil(reorder + rate * review_weeks - on_hand - on_order))
            if on_hand + on_order < reorder
            else 0.0
        )
        rows.append(
            {
                "part": part,
                "history_weeks": int((demand > 0).sum()),
                "forecast_per_week": rate,
                "sigma_per_week": sigma,
                "predicted_within_lead_time": within,
                "predicted_total": float(mine["quantity"].sum()),
                "lead_time_days": lead_days,
                "safety_stock": safety,
                "reorder_point": reorder,
                "on_hand": on_hand,
                "on_order": on_order,
                "order_quantity": order,
            }
        )
    return pd.DataFrame(rows), used


def materials(closing: pd.DataFrame, plan: pd.DataFrame | None, inventory: pd.DataFrame | None) -> pd.DataFrame:
    """Material demand by line, date and material from the plan, and the totals against stock."""
    if closing.empty or plan is None or plan.empty:
        return pd.DataFrame()
    use = []
    for r in closing.itertuples():
        for name, m in json.loads(r.materials_json or "{}").items():
            use.append(
                {"line": r.line, "material": name, "amount": (m or {}).get("amount") or 0.0, "good": r.parts_good}
            )
    if not use:
        return pd.DataFrame()
    u = pd.DataFrame(use).groupby(["line", "material"], as_index=False)[["amount", "good"]].sum()
    u["per_good_unit"] = u["amount"] / u["good"].where(u["good"] > 0)
    demand = plan.merge(u[["line", "material", "per_good_unit"]], on="line")
    demand["demand"] = demand["planned_good"] * demand["per_good_unit"]
    if inventory is not None and not inventory.empty:
        totals = demand.groupby("material", as_index=False)["demand"].sum()
        totals = totals.merge(inventory.rename(columns={"item": "material"}), on="material", how="left")
        totals["shortfall"] = (totals["demand"] - totals["on_hand"].fillna(0)).clip(lower=0)
        demand = demand.merge(totals[["material", "shortfall"]], on="material", how="left")
    return demand
