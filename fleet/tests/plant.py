"""Records of a small plant, written through the ingest's parser and ledger."""

import json
import os
from datetime import UTC, datetime, timedelta

from fleet import records
from fleet.store import Store


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Fleet:
    """Writes agent records into a dataset through the ingest's own parser and ledger."""

    def __init__(self, root):
        self.uri = str(root / "data")
        self.store = Store(self.uri, root / "state")
        self.ids = {}
        self.batch = []

    def record(self, agent, site, source, kind, time, data):
        self.ids[agent] = self.ids.get(agent, 0) + 1
        topic_kind = "events" if kind == "event" else kind
        body = {"schema": 1, "id": self.ids[agent], "kind": kind, "agent": agent, "time": iso(time), "data": data}
        self.batch.append(records.parse_uns(f"acme/{site}/area/line/{source}/{topic_kind}", json.dumps(body).encode()))

    def commit(self):
        self.store.add(self.batch)
        self.batch = []
        while self.store.roll(max_records=int(os.environ.get("FLEET_TEST_ROLL", "1000"))):
            pass
        return self.uri


T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # a Monday


def assessment(asset, t, fp, health, action="routine_monitoring", due=None, asset_type="pump", features=None):
    return {
        "schema": 1,
        "asset": asset,
        "asset_type": asset_type,
        "timestamp": iso(t),
        "health": {"vibration": health, "thermal": 1.0, "electrical": None, "pressure": None},
        "overall_health": health,
        "failure_probability": fp,
        "rule_probability": fp,
        "model_probability": None,
        "action": action,
        "priority": "low",
        "maintenance_due": iso(due) if due else None,
        "remaining_life_hours": None,
        "remaining_life_note": None,
        "reasons": ["r"],
        "features": features or {},
    }


def closing(line, shift, start, pbt, apt, perf, total, good, losses):
    return {
        "line": line,
        "shift": shift,
        "shift_start": iso(start),
        "shift_end": iso(start + timedelta(hours=8)),
        "closing": True,
        "state": "running",
        "product": 1,
        "times": {
            "planned_busy_time": pbt,
            "actual_production_time": apt,
            "running": apt,
            "micro_stops": 0.0,
            "unplanned_downtime": pbt - apt,
            "breakdowns": pbt - apt,
            "setup": 0.0,
            "planned_downtime": 0.0,
            "unaccounted": 0.0,
        },
        "parts": {"total": total, "good": good, "reject": total - good, "startup_rejects": 0.0},
        "availability": apt / pbt,
        "performance": perf,
        "quality": good / total,
        "oee": apt / pbt * perf * good / total,
        "energy_kwh": None,
        "materials": {"resin": {"amount": good * 0.5}},
        "losses": [
            {"category": c, "reason": r, "seconds": s, "estimated_improvement": 100 * s / pbt} for c, r, s in losses
        ],
        "recommendation": f"{line}: fix the biggest loss",
        "counter_anomalies": 0,
    }
