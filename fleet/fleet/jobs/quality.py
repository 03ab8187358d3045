"""Quality: per line and site, parts inspected, mean defect score, rejects and reject rate; Cpk per
characteristic and day; run-rule violations; and the lines whose quality is worsening.

Sources: the stations' quality reports (one per report interval and a closing one per shift; only the
interval reports are summed, so parts are not counted twice) and their characteristics. A line is
worsening when its reject rate in the later half of the period is above the earlier half's by more
than `margin` (absolute), or when a characteristic's Cpk falls by more than `cpk_drop` between the
halves.
"""

from __future__ import annotations

import pandas as pd

LINE = ["site", "line", "station"]


def _interval(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[~frame["closing"].astype(bool)]
    return frame.sort_values("record_id").drop_duplicates(["agent", "station", "from_time", "to_time"], keep="last")


def lines(reports: pd.DataFrame) -> pd.DataFrame:
    r = _interval(reports).assign(score_sum=lambda f: f["mean_score"].fillna(0) * f["parts"].fillna(0))
    g = r.groupby(LINE, dropna=False).agg(
        parts=("parts", "sum"),
        passed=("pass", "sum"),
        review=("review", "sum"),
        rejects=("reject", "sum"),
        score_sum=("score_sum", "sum"),
        first=("from_time", "min"),
        last=("to_time", "max"),
    )
    g["reject_rate"] = g["rejects"] / g["parts"].where(g["parts"] > 0)
    g["mean_defect_score"] = g["score_sum"] / g["parts"].where(g["parts"] > 0)
    return g.drop(columns="score_sum").reset_index()


def cpk_daily(characteristics: pd.DataFrame) -> pd.DataFrame:
    c = characteristics[~characteristics["closing"].astype(bool)]
    c = c.drop_duplicates(["agent", "station", "characteristic", "to_time"])
    c = c.assign(day=c["to_time"].dt.date)
    g = c.groupby(LINE + ["characteristic", "day"], dropna=False).agg(
        cpk_mean=("cpk", "mean"),
        cpk_min=("cpk", "min"),
        mean=("mean", "mean"),
        sigma_within=("sigma_within", "mean"),
        n=("n", "sum"),
        violations=("violations", "sum"),
    )
    return g.reset_index()


def _halves(frame: pd.DataFrame, time_column: str):
    middle = frame[time_column].min() + (frame[time_column].max() - frame[time_column].min()) / 2
    return frame[frame[time_column] < middle], frame[frame[time_column] >= middle]


def worsening(reports: pd.DataFrame, characteristics: pd.DataFrame, margin=0.01, cpk_drop=0.2) -> pd.DataFrame:
    found = []
    r = _interval(reports)
    for key, group in r.groupby(LINE, dropna=False):
        early, late = _halves(group, "to_time")
        rate = lambda f: f["reject"].sum() / f["parts"].sum() if f["parts"].sum() else float("nan")  # noqa: E731
        before, after = rate(early), rate(late)
        if after - before > margin:
            found.append(
                dict(zip(LINE, key, strict=False), why=f"reject rate {before:.1%} → {after:.1%}", change=after - before)
            )
    if not characteristics.empty:
        c = characteristics[~characteristics["closing"].astype(bool)]
        c = c.drop_duplicates(["agent", "station", "characteristic", "to_time"])
        for key, group in c.groupby(LINE + ["characteristic"], dropna=False):
            early, late = _halves(group, "to_time")
            before, after = early["cpk"].mean(), late["cpk"].mean()
            if before - after > cpk_drop:
                found.append(
                    dict(
                        zip(LINE, key[:3], strict=False),
                        why=f"Cpk of {key[3]} {before:.2f} → {after:.2f}",
                        change=after - before,
                    )
                )
    return pd.DataFrame(found)


def run(reports: pd.DataFrame, characteristics: pd.DataFrame) -> dict[str, pd.DataFrame]:
    if reports.empty:
        return {"quality_lines": reports}
    out = {"quality_lines": lines(reports), "quality_worsening": worsening(reports, characteristics)}
    if not characteristics.empty:
        out["quality_cpk"] = cpk_daily(characteristics)
    return out
