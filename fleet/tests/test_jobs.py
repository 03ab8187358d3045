"""The jobs on a local Ray against figures worked out here from the records written."""

import sqlite3
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from fleet.analyze import Inputs, run
from fleet.jobs.supply import croston_sba
from tests.plant import T0, assessment, closing, iso


def plant(fleet):
    for i in range(20):
        t = T0 + timedelta(hours=6 * i)
        fleet.record(
            "gw-1",
            "site-a",
            "P-1",
            "health",
            t,
            assessment("P-1", t, 0.1, 0.9, features={"vibration_severity": 0.3 + 0.01 * i}),
        )
        fp = 0.2 + 0.12 * (6 * i / 24)
        fleet.record(
            "gw-1",
            "site-a",
            "P-9",
            "health",
            t,
            assessment(
                "P-9",
                t,
                fp,
                1 - fp,
                "scheduled_maintenance" if fp > 0.5 else "routine_monitoring",
                T0 + timedelta(days=6),
            ),
        )
        fleet.record(
            "gw-2",
            "site-b",
            "M-3",
            "health",
            t,
            assessment("M-3", t, 0.5, 0.5, "immediate_maintenance", T0 + timedelta(days=5), asset_type="motor"),
        )
    shifts = [
        ("day", T0, 25200.0, 0.9, 1000.0, 950.0, 3600.0),
        ("late", T0 + timedelta(hours=8), 27000.0, 0.8, 1200.0, 1180.0, 1800.0),
    ]
    for name, start, apt, perf, total, good, jam in shifts:
        data = closing(
            "press-1",
            name,
            start,
            28800.0,
            apt,
            perf,
            total,
            good,
            [("breakdowns", "jam at infeed", jam), ("reduced_speed", None, 500.0)],
        )
        fleet.record("gw-1", "site-a", "press-1", "oee", start + timedelta(hours=8), data)
        running = dict(data, closing=False)  # a running report: must not count twice
        fleet.record("gw-1", "site-a", "press-1", "oee", start + timedelta(hours=4), running)
    for k in range(10):
        start = T0 + timedelta(hours=k)
        late = k >= 5
        fleet.record(
            "gw-1",
            "site-a",
            "gauge-1",
            "quality",
            start + timedelta(hours=1),
            {
                "station": "gauge-1",
                "line": "press-1",
                "shift": "day",
                "closing": False,
                "from": iso(start),
                "to": iso(start + timedelta(hours=1)),
                "parts": 100,
                "pass": 95 if late else 99,
                "review": 0,
                "reject": 5 if late else 1,
                "reject_rate": 0.05 if late else 0.01,
                "mean_score": 0.3 if late else 0.1,
                "characteristics": {
                    "bore": {
                        "n": 100,
                        "mean": 10.0,
                        "sigma_within": 0.01,
                        "cp": 1.6,
                        "cpk": 1.0 if late else 1.5,
                        "ppk": 1.0,
                        "violations": {"nelson_1": 1 if late else 0},
                    }
                },
            },
        )
    return fleet.commit()


@pytest.fixture()
def inputs(fleet, tmp_path):
    uri = plant(fleet)
    side = tmp_path / "side"
    side.mkdir()
    pd.DataFrame(
        {"asset": ["P-1", "P-9", "M-3"], "asset_type": ["pump", "pump", "motor"], "criticality": [3, 3, 1]}
    ).to_csv(side / "registry.csv", index=False)
    history = pd.DataFrame(
        {
            "asset": ["P-1", "P-9", "P-9"],
            "date": [T0 + timedelta(days=2), T0 - timedelta(days=20), T0 - timedelta(days=6)],
            "kind": ["failure", "preventive", "preventive"],
            "failure_mode": ["bearing_wear", None, None],
        }
    )
    history.to_parquet(side / "history.parquet")
    plan_day = T0.date() + timedelta(days=5)
    pd.DataFrame(
        {
            "site": ["site-a", "site-b", "site-b"],
            "date": [plan_day, plan_day, plan_day + timedelta(days=1)],
            "hours": [4, 0, 8],
        }
    ).to_csv(side / "crews.csv", index=False)
    pd.DataFrame(
        {
            "asset_type": ["pump", "pump", "motor"],
            "action": ["scheduled_maintenance", "*", "*"],
            "part": ["bearing-6205", "seal-kit", "brush-set"],
            "quantity": [2, 1, 1],
        }
    ).to_csv(side / "catalogue.csv", index=False)
    pd.DataFrame(
        {
            "item": ["bearing-6205", "seal-kit", "brush-set", "resin"],
            "on_hand": [1, 10, 0, 100],
            "lead_time_days": [14, 7, 7, 3],
        }
    ).to_csv(side / "inventory.csv", index=False)
    pd.DataFrame({"line": ["press-1"] * 2, "date": ["2026-11-09", "2026-11-10"], "planned_good": [1000, 2000]}).to_csv(
        side / "plan.csv", index=False
    )
    return Inputs(
        dataset=uri,
        out=tmp_path / "out",
        registry=str(side / "registry.csv"),
        history=str(side / "history.parquet"),
        crews=str(side / "crews.csv"),
        catalogue=str(side / "catalogue.csv"),
        inventory=str(side / "inventory.csv"),
        plan=str(side / "plan.csv"),
        start=plan_day,
    )


def test_every_job_gives_the_figures_worked_out_by_hand(ray_local, inputs):
    result = run(inputs)
    out = inputs.out
    assert (out / "report.html").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "http://" not in html and "https://" not in html

    assets = pd.read_parquet(out / "maintenance_assets.parquet")
    assert list(assets["asset"]) == ["P-9", "M-3", "P-1"]  # risks 0.77, 0.5 × 1/3, 0.1
    p9 = assets.set_index("asset").loc["P-9"]
    assert p9["failure_probability_trend_per_day"] == pytest.approx(0.12, rel=1e-6)
    assert p9["assessments"] == 20 and p9["last_maintenance"] == pd.Timestamp(T0 - timedelta(days=6))
    work = pd.read_parquet(out / "work_list.parquet").set_index("asset")
    assert list(work.index) == ["P-9", "M-3"]  # P-1 needs nothing; P-9's risk 0.77 > M-3's 0.5 × 1/3
    assert work.loc["P-9", "scheduled_date"] == inputs.start and not work.loc["P-9", "late"]
    assert work.loc["M-3", "scheduled_date"] == inputs.start + timedelta(days=1)  # no hours at site-b that day
    assert work.loc["M-3", "late"]  # its due date (T0 + 5 d) is before the plan date's next day

    lines = pd.read_parquet(out / "oee_lines.parquet").iloc[0]
    a = (25200 + 27000) / 57600
    p = (0.9 * 25200 + 0.8 * 27000) / (25200 + 27000)
    q = (950 + 1180) / (1000 + 1200)
    assert (lines["shifts"], lines["parts_good"]) == (2, 2130)
    assert lines["oee"] == pytest.approx(a * p * q) and lines["availability"] == pytest.approx(a)
    pareto = pd.read_parquet(out / "loss_pareto.parquet")
    assert pareto.iloc[0]["reason"] == "jam at infeed" and pareto.iloc[0]["seconds"] == 5400
    assert pareto["cumulative_share"].iloc[-1] == pytest.approx(1.0)
    chances = pd.read_parquet(out / "opportunities.parquet")
    gap = 100 * (1 - a * p * q)
    expected = [r for r, s in (("jam at infeed", 5400), (None, 1000)) if 100 * s / 57600 >= 0.3 * gap]
    assert list(chances["reason"]) == expected

    q_lines = pd.read_parquet(out / "quality_lines.parquet").iloc[0]
    assert (q_lines["parts"], q_lines["rejects"]) == (1000, 30)
    assert q_lines["mean_defect_score"] == pytest.approx(0.2)
    worse = pd.read_parquet(out / "quality_worsening.parquet")
    assert {"reject rate 1.0% → 5.0%", "Cpk of bore 1.50 → 1.00"} == set(worse["why"])

    parts = pd.read_parquet(out / "part_demand.parquet").set_index("part")
    assert parts.loc["bearing-6205", "predicted_total"] == 2  # P-9's scheduled maintenance
    assert parts.loc["seal-kit", "predicted_total"] == 1 and parts.loc["brush-set", "predicted_total"] == 1
    assert parts.loc["bearing-6205", "order_quantity"] >= 1  # 1 on hand, 2 needed within the lead time
    materials = pd.read_parquet(out / "material_demand.parquet")
    assert materials["demand"].sum() == pytest.approx(0.5 * 3000)

    train = pd.read_parquet(out / "training.parquet")
    p1 = train[train["run"].str.contains("/P-1/")]
    before = p1[p1["fault"] == "bearing_wear"]
    assert len(before) == 8 and before["label"].sum() == 8  # every row of P-1 before its failure is within 48 h
    assert before["vibration_severity"].notna().all()
    after = p1[p1["fault"] == "healthy"]
    # From the failure to 48 h before the data ends (6 h steps to T0 + 114 h: 48, 54, 60, 66 h).
    assert len(after) == 4 and after["label"].sum() == 0
    assert result["skipped"] == []


def test_a_damaged_file_is_left_out_and_reported_and_the_registry_may_be_sql(ray_local, inputs, tmp_path):
    root = inputs.dataset
    from pathlib import Path

    db = tmp_path / "registry.sqlite"
    with sqlite3.connect(db) as connection:
        pd.read_csv(inputs.registry).assign(criticality=[3, 3, 5]).to_sql("registry", connection, index=False)
    inputs.registry = f"sqlite:///{db}"
    victim = next(Path(root).glob("kind=health/**/*.parquet"))
    victim.write_bytes(victim.read_bytes()[:100])
    result = run(inputs)
    assert len(result["skipped"]) == 1 and str(victim) in result["skipped"][0]
    assert "unreadable file" in (inputs.out / "report.html").read_text()
    # Read through ray.data.read_sql: M-3 at criticality 5 now weighs 0.5 × 5/3 and leads the list.
    assets = pd.read_parquet(inputs.out / "maintenance_assets.parquet")
    assert assets["asset"].iloc[0] == "M-3" and assets["risk"].iloc[0] == pytest.approx(0.5 * 5 / 3)


def test_croston_sba_matches_the_recursion_by_hand():
    demand = np.array([0, 2, 0, 0, 4, 0, 1], dtype=float)
    alpha = 0.1
    size, interval = 2.0, 2.0  # first demand 2 after an interval of 2 periods
    size, interval = size + alpha * (4 - size), interval + alpha * (3 - interval)
    size, interval = size + alpha * (1 - size), interval + alpha * (2 - interval)
    assert croston_sba(demand, alpha) == pytest.approx((1 - alpha / 2) * size / interval)
    assert croston_sba(np.zeros(5)) == 0.0


def test_a_selection_reads_only_its_sites_and_dates(ray_local, fleet):
    from fleet.dataset import Selection, read

    uri = plant(fleet)
    site_b = read(uri, "health", Selection(sites=["site-b"]))
    assert set(site_b.dataset.unique("asset")) == {"M-3"} and set(site_b.dataset.unique("site")) == {"site-b"}
    first_day = read(uri, "health", Selection(start="2026-11-02", end="2026-11-02"))
    assert set(first_day.dataset.unique("date")) == {"2026-11-02"}
    assert first_day.dataset.count() == 3 * 3  # three assets, 06:00, 12:00 and 18:00
    assert read(uri, "health", Selection(sites=["nowhere"])).dataset is None


def test_an_assets_row_names_the_latest_waveform_diagnosis():
    from fleet.jobs.maintenance import per_asset

    def row(hours, diagnoses):
        return {
            "site": "site-a",
            "agent": "gw-1",
            "asset": "M-1",
            "asset_type": "motor",
            "record_id": hours,
            "assessed_at": pd.Timestamp(T0) + pd.Timedelta(hours=hours),
            "overall_health": 0.5,
            "failure_probability": 0.5,
            "action": "scheduled_maintenance",
            "priority": "medium",
            "maintenance_due": None,
            "remaining_life_hours": None,
            "reasons": ["r"],
            "vibration_diagnoses": diagnoses,
        }

    bearing = "outer race defect suspected on bearing DE: BPFO 87.5 Hz"
    group = pd.DataFrame([row(0, []), row(6, [bearing, "unbalance suspected: 1x dominant"])])
    assert per_asset(group)["vibration_diagnosis"].tolist() == [bearing]
    older = pd.DataFrame([row(0, [bearing]), row(6, [])]).drop(columns="vibration_diagnoses")
    assert per_asset(older)["vibration_diagnosis"].tolist() == [None], "files from before the column"
