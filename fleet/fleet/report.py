"""One self-contained HTML report: the result tables' heads and the charts, drawn with matplotlib into
PNGs embedded as data URIs, so the file opens anywhere without a network."""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = """body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px}
th{background:#f3f3f3}img{max-width:100%}.note{color:#666}"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def health_trends(health: pd.DataFrame, riskiest: pd.DataFrame, n: int = 5) -> str:
    if health.empty or riskiest.empty:
        return ""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    for r in riskiest.head(n).itertuples():
        h = health[(health["agent"] == r.agent) & (health["asset"] == r.asset)].sort_values("assessed_at")
        label = f"{r.asset} ({r.site})"
        a.plot(h["assessed_at"], h["overall_health"], label=label)
        b.plot(h["assessed_at"], h["failure_probability"], label=label)
    a.set_title("overall health")
    b.set_title("failure probability")
    b.legend(fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def oee_by_shift(by_shift: pd.DataFrame) -> str:
    if by_shift is None or by_shift.empty:
        return ""
    pivot = by_shift.pivot_table(index=["site", "line"], columns="shift", values="oee")
    fig, ax = plt.subplots(figsize=(11, 3.5))
    (pivot * 100).plot.bar(ax=ax)
    ax.set_ylabel("OEE %")
    ax.set_title("OEE by line and shift")
    return _png(fig)


def loss_pareto(pareto: pd.DataFrame, n: int = 12) -> str:
    if pareto is None or pareto.empty:
        return ""
    p = pareto.head(n)
    labels = [f"{c}: {r}" if isinstance(r, str) else c for c, r in zip(p["category"], p["reason"], strict=False)]
    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.bar(range(len(p)), p["hours"])
    ax.set_xticks(range(len(p)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("hours")
    twin = ax.twinx()
    twin.plot(range(len(p)), p["cumulative_share"] * 100, color="C3", marker="o")
    twin.set_ylim(0, 105)
    twin.set_ylabel("cumulative %")
    ax.set_title("Loss Pareto across the fleet")
    return _png(fig)


def control_charts(characteristics: pd.DataFrame, worst: pd.DataFrame, n: int = 3) -> str:
    if characteristics is None or characteristics.empty or worst is None or worst.empty:
        return ""
    charts = []
    for r in worst.head(n).itertuples():
        c = characteristics[
            (characteristics["station"] == r.station) & (characteristics["characteristic"] == r.characteristic)
        ].sort_values("to_time")
        c = c[~c["closing"].astype(bool)]
        if c.empty:
            continue
        center, sigma = c["mean"].mean(), c["sigma_within"].mean()
        fig, ax = plt.subplots(figsize=(11, 2.8))
        ax.plot(c["to_time"], c["mean"], marker=".", label="interval mean")
        for y, style in ((center, "-"), (center + 3 * sigma, "--"), (center - 3 * sigma, "--")):
            ax.axhline(y, color="grey", linestyle=style, linewidth=1)
        ax.set_title(f"{r.station} {r.characteristic}: mean per report interval (centre ± 3σ within)")
        fig.autofmt_xdate()
        charts.append(_png(fig))
    return "".join(charts)


def forecasts(parts: pd.DataFrame, used: pd.DataFrame, n: int = 4) -> str:
    if parts is None or parts.empty or used is None or used.empty:
        return ""
    top = parts.sort_values("predicted_total", ascending=False).head(n)
    fig, ax = plt.subplots(figsize=(11, 3.5))
    for r in top.itertuples():
        u = used[used["part"] == r.part].sort_values("week")
        line = ax.plot(u["week"], u["quantity"], marker="o", label=f"{r.part} history")[0]
        ax.axhline(r.forecast_per_week, color=line.get_color(), linestyle="--", label=f"{r.part} forecast/week")
    ax.legend(fontsize=8)
    ax.set_title("Spare parts: weekly use and forecast (Croston–SBA)")
    fig.autofmt_xdate()
    return _png(fig)


def _table(frame: pd.DataFrame | None, rows: int = 15) -> str:
    if frame is None or frame.empty:
        return '<p class="note">nothing in the selected data</p>'
    return frame.head(rows).to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="", border=0)


def write(path, title: str, sections: list[tuple[str, str, pd.DataFrame | None]], notes: list[str]) -> None:
    """`sections`: (heading, chart HTML, table)."""
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{STYLE}</style>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">made {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>',
    ]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    for heading, chart, table in sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", chart, _table(table)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
