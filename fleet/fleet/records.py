"""What the agents publish, as rows of the fleet dataset.

One MQTT message is one record of one agent (the UNS envelope `{"schema","id","kind","agent","time",
"data"}`, documented in the top-level README under "Payloads (schema 1)"), or one Sparkplug B payload.
`parse` turns it into rows of one or more *tables* (a table is a `kind=` partition of the dataset);
every row carries the record's key (`agent`, `record_id`), its `time`, and where it comes from in the
UNS (`enterprise`, `site`, `area`, `uns_line`).

Invariants:
- A record is never guessed at: a schema version this module does not know, a kind it does not know,
  or a body that does not fit its kind raises `Rejected` with a reason, and the ingest quarantines
  the message with a count.
- Column types are fixed per table (`SCHEMAS`), so files written at different times, by different
  agents and with missing optional fields always read back as one dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

SUPPORTED_SCHEMAS = frozenset({1})

# The model features an assessment carries (`features`), in the order models/train.py uses.
FEATURES = (
    "vibration_severity",
    "vibration_trend",
    "bearing_temperature_ratio",
    "bearing_temperature_trend",
    "winding_temperature_ratio",
    "current_unbalance",
    "current_load",
    "pressure_deviation",
    "pressure_fluctuation",
    "acceleration_kurtosis",
    "acceleration_crest_factor",
    "bearing_defect_db",
)

TS = pa.timestamp("ms", tz="UTC")
KEY = [
    ("agent", pa.string()),
    ("record_id", pa.int64()),
    ("schema", pa.int32()),
    ("time", TS),
    ("enterprise", pa.string()),
    ("site", pa.string()),
    ("area", pa.string()),
    ("uns_line", pa.string()),
]


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(KEY + list(fields))


F64, STR, I64, BOOL = pa.float64(), pa.string(), pa.int64(), pa.bool_()
SCHEMAS: dict[str, pa.Schema] = {
    "tags": _schema(
        ("device", STR),
        ("online", BOOL),
        ("from_time", TS),
        ("to_time", TS),
        ("tag", STR),
        ("count", I64),
        ("bad", I64),
        ("min", F64),
        ("max", F64),
        ("mean", F64),
        ("last_value", F64),
        ("last_json", STR),
        ("quality", STR),
        ("unit", STR),
    ),
    "health": _schema(
        ("asset", STR),
        ("asset_type", STR),
        ("assessed_at", TS),
        ("health_vibration", F64),
        ("health_thermal", F64),
        ("health_electrical", F64),
        ("health_pressure", F64),
        ("overall_health", F64),
        ("failure_probability", F64),
        ("rule_probability", F64),
        ("model_probability", F64),
        ("action", STR),
        ("priority", STR),
        ("maintenance_due", TS),
        ("remaining_life_hours", F64),
        ("remaining_life_note", STR),
        ("reasons", pa.list_(STR)),
        *[(f"feature_{name}", F64) for name in FEATURES],
        # From the waveform analysis (`vibration`), for assets with an accelerometer.
        ("vibration_velocity_rms", F64),
        ("vibration_faults", pa.list_(STR)),
        ("vibration_diagnoses", pa.list_(STR)),
    ),
    "alert": _schema(
        ("alert_id", STR),
        ("source", STR),
        ("origin", STR),
        ("severity", STR),
        ("state", STR),
        ("transition", STR),
        ("by", STR),
        ("value", F64),
        ("reason", STR),
        ("raised", TS),
        ("at", TS),
    ),
    "event": _schema(("event", STR), ("details_json", STR)),
    "oee": _schema(
        ("line", STR),
        ("shift", STR),
        ("shift_start", TS),
        ("shift_end", TS),
        ("closing", BOOL),
        ("state", STR),
        ("product", I64),
        ("planned_busy_time", F64),
        ("actual_production_time", F64),
        ("running", F64),
        ("micro_stops", F64),
        ("unplanned_downtime", F64),
        ("breakdowns", F64),
        ("setup", F64),
        ("planned_downtime", F64),
        ("unaccounted", F64),
        ("parts_total", F64),
        ("parts_good", F64),
        ("parts_reject", F64),
        ("parts_startup_rejects", F64),
        ("availability", F64),
        ("performance", F64),
        ("quality", F64),
        ("oee", F64),
        ("energy_kwh", F64),
        ("materials_json", STR),
        ("losses_json", STR),
        ("recommendation", STR),
        ("counter_anomalies", I64),
    ),
    "downtime": _schema(
        ("line", STR),
        ("state", STR),
        ("reason", STR),
        ("start", TS),
        ("end", TS),
        ("seconds", F64),
        ("category", STR),
    ),
    "part": _schema(
        ("station", STR),
        ("part_id", STR),
        ("part_time", TS),
        ("score", F64),
        ("decision", STR),
        ("violations", pa.list_(STR)),
        ("values_json", STR),
    ),
    "quality": _schema(
        ("station", STR),
        ("line", STR),
        ("shift", STR),
        ("closing", BOOL),
        ("from_time", TS),
        ("to_time", TS),
        ("parts", I64),
        ("pass", I64),
        ("review", I64),
        ("reject", I64),
        ("reject_rate", F64),
        ("mean_score", F64),
    ),
    # One row per characteristic of a quality report (same key as its report).
    "characteristic": _schema(
        ("station", STR),
        ("line", STR),
        ("shift", STR),
        ("closing", BOOL),
        ("to_time", TS),
        ("characteristic", STR),
        ("n", I64),
        ("mean", F64),
        ("sigma_within", F64),
        ("cp", F64),
        ("cpk", F64),
        ("ppk", F64),
        ("violations", I64),
        ("violations_json", STR),
    ),
    # Sparkplug B metrics (NBIRTH/DBIRTH/NDATA/DDATA), one row per metric value.
    "metric": _schema(
        ("group_id", STR),
        ("device", STR),
        ("message_type", STR),
        ("seq", I64),
        ("metric", STR),
        ("metric_time", TS),
        ("value", F64),
        ("value_json", STR),
    ),
}


class Rejected(Exception):
    """A message that cannot become rows; `reason` is one of REASONS."""

    REASONS = ("malformed", "schema_version", "unknown_kind")

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Parsed:
    """The rows one message gave, by table; `agent`/`record_id` are the de-duplication key."""

    agent: str
    record_id: int
    time: datetime
    site: str
    tables: dict[str, list[dict]]


def timestamp(text) -> datetime | None:
    """RFC 3339 text (the agent writes UTC with milliseconds) as an aware datetime; None stays None."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise Rejected("malformed", f"timestamp {text!r} is not text")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise Rejected("malformed", f"timestamp {text!r}: {e}") from None
    if parsed.tzinfo is None:
        raise Rejected("malformed", f"timestamp {text!r} has no time zone")
    return parsed.astimezone(UTC)


def _num(v) -> float | None:
    """A JSON number (a bool counts as 0/1) as float; None stays None."""
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    raise Rejected("malformed", f"{v!r} is not a number")


def _int(v) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise Rejected("malformed", f"{v!r} is not an integer")
    return int(v)


def _text(v) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"))


def uns_place(topic: str) -> dict:
    """`enterprise/site/area/line/...`: the first four topic levels."""
    levels = topic.split("/")
    if len(levels) < 5:
        raise Rejected("malformed", f"topic {topic!r} has fewer than five levels")
    return dict(zip(("enterprise", "site", "area", "uns_line"), levels[:4], strict=False))


def _object(v, what: str) -> dict:
    if not isinstance(v, dict):
        raise Rejected("malformed", f"{what} is not an object")
    return v


def _tags(data: dict) -> list[dict]:
    rows = []
    tags = _object(data.get("tags"), "tags")
    for tag, t in tags.items():
        t = _object(t, f"tag {tag}")
        last = t.get("last")
        numeric = isinstance(last, (int, float)) and last is not None
        rows.append(
            {
                "device": data.get("device"),
                "online": data.get("online"),
                "from_time": timestamp(data.get("from")),
                "to_time": timestamp(data.get("to")),
                "tag": tag,
                "count": _int(t.get("count")),
                "bad": _int(t.get("bad")),
                "min": _num(t.get("min")),
                "max": _num(t.get("max")),
                "mean": _num(t.get("mean")),
                "last_value": float(last) if numeric else None,
                "last_json": None if last is None or numeric else _text(last),
                "quality": t.get("quality"),
                "unit": t.get("unit"),
            }
        )
    return rows


def _health(data: dict) -> list[dict]:
    health = _object(data.get("health") or {}, "health")
    features = _object(data.get("features") or {}, "features")
    if not isinstance(data.get("asset"), str):
        raise Rejected("malformed", "health without an asset")
    reasons = data.get("reasons") or []
    if not isinstance(reasons, list):
        raise Rejected("malformed", "reasons is not a list")
    row = {
        "asset": data["asset"],
        "asset_type": data.get("asset_type"),
        "assessed_at": timestamp(data.get("timestamp")),
        **{f"health_{d}": _num(health.get(d)) for d in ("vibration", "thermal", "electrical", "pressure")},
        "overall_health": _num(data.get("overall_health")),
        "failure_probability": _num(data.get("failure_probability")),
        "rule_probability": _num(data.get("rule_probability")),
        "model_probability": _num(data.get("model_probability")),
        "action": data.get("action"),
        "priority": data.get("priority"),
        "maintenance_due": timestamp(data.get("maintenance_due")),
        "remaining_life_hours": _num(data.get("remaining_life_hours")),
        "remaining_life_note": data.get("remaining_life_note"),
        "reasons": [str(r) for r in reasons],
        **{f"feature_{f}": _num(features.get(f)) for f in FEATURES},
        **_vibration(data.get("vibration")),
    }
    return [row]


def _vibration(report) -> dict:
    """The waveform analysis's velocity and diagnoses (empty for assets without a waveform)."""
    if report is None:
        return {"vibration_velocity_rms": None, "vibration_faults": [], "vibration_diagnoses": []}
    report = _object(report, "vibration")
    diagnoses = report.get("diagnoses") or []
    if not isinstance(diagnoses, list) or not all(isinstance(d, dict) for d in diagnoses):
        raise Rejected("malformed", "vibration.diagnoses is not a list of objects")
    return {
        "vibration_velocity_rms": _num(report.get("velocity_rms")),
        "vibration_faults": [str(d.get("fault")) for d in diagnoses],
        "vibration_diagnoses": [str(d.get("reason")) for d in diagnoses],
    }


def _alert(data: dict) -> list[dict]:
    if not isinstance(data.get("alert_id"), str):
        raise Rejected("malformed", "alert without an alert_id")
    return [
        {
            "alert_id": data["alert_id"],
            **{k: data.get(k) for k in ("source", "origin", "severity", "state", "transition", "by")},
            "value": _num(data.get("value")),
            "reason": data.get("reason"),
            "raised": timestamp(data.get("raised")),
            "at": timestamp(data.get("at")),
        }
    ]


def _event(data: dict) -> list[dict]:
    details = {k: v for k, v in data.items() if k != "event"}
    return [{"event": data.get("event"), "details_json": json.dumps(details, sort_keys=True)}]


def _oee(data: dict) -> list[dict]:
    times = _object(data.get("times") or {}, "times")
    parts = _object(data.get("parts") or {}, "parts")
    row = {
        "line": data.get("line"),
        "shift": data.get("shift"),
        "shift_start": timestamp(data.get("shift_start")),
        "shift_end": timestamp(data.get("shift_end")),
        "closing": bool(data.get("closing")),
        "state": data.get("state"),
        "product": _int(data.get("product")),
        **{
            k: _num(times.get(k))
            for k in (
                "planned_busy_time",
                "actual_production_time",
                "running",
                "micro_stops",
                "unplanned_downtime",
                "breakdowns",
                "setup",
                "planned_downtime",
                "unaccounted",
            )
        },
        **{f"parts_{k}": _num(parts.get(k)) for k in ("total", "good", "reject", "startup_rejects")},
        **{k: _num(data.get(k)) for k in ("availability", "performance", "quality", "oee", "energy_kwh")},
        "materials_json": json.dumps(data.get("materials") or {}, sort_keys=True),
        "losses_json": json.dumps(data.get("losses") or []),
        "recommendation": data.get("recommendation"),
        "counter_anomalies": _int(data.get("counter_anomalies")),
    }
    return [row]


def _downtime(data: dict) -> list[dict]:
    return [
        {
            "line": data.get("line"),
            "state": data.get("state"),
            "reason": data.get("reason"),
            "start": timestamp(data.get("start")),
            "end": timestamp(data.get("end")),
            "seconds": _num(data.get("seconds")),
            "category": data.get("category"),
        }
    ]


def _part(data: dict) -> list[dict]:
    return [
        {
            "station": data.get("station"),
            "part_id": _text(data.get("part_id")),
            "part_time": timestamp(data.get("time")),
            "score": _num(data.get("score")),
            "decision": data.get("decision"),
            "violations": [_text(v) for v in data.get("violations") or []],
            "values_json": json.dumps(data.get("values") or {}, sort_keys=True),
        }
    ]


def _quality(data: dict) -> dict[str, list[dict]]:
    report = {
        "station": data.get("station"),
        "line": data.get("line"),
        "shift": data.get("shift"),
        "closing": bool(data.get("closing")),
        "from_time": timestamp(data.get("from")),
        "to_time": timestamp(data.get("to")),
        **{k: _int(data.get(k)) for k in ("parts", "pass", "review", "reject")},
        "reject_rate": _num(data.get("reject_rate")),
        "mean_score": _num(data.get("mean_score")),
    }
    characteristics = []
    for name, c in _object(data.get("characteristics") or {}, "characteristics").items():
        c = _object(c, f"characteristic {name}")
        violations = _object(c.get("violations") or {}, "violations")
        characteristics.append(
            {
                **{k: report[k] for k in ("station", "line", "shift", "closing", "to_time")},
                "characteristic": name,
                "n": _int(c.get("n")),
                **{k: _num(c.get(k)) for k in ("mean", "sigma_within", "cp", "cpk", "ppk")},
                "violations": sum(_int(n) or 0 for n in violations.values()),
                "violations_json": json.dumps(violations, sort_keys=True),
            }
        )
    return {"quality": [report], "characteristic": characteristics}


def _changes(data: dict) -> dict[str, list[dict]]:
    rows = []
    for c in data.get("changes") or []:
        c = _object(c, "change")
        value = c.get("value")
        rows.append(
            {
                "group_id": None,
                "device": data.get("device"),
                "message_type": "changes",
                "seq": None,
                "metric": _text(c.get("tag")),
                "metric_time": None,
                "value": _num(value) if isinstance(value, (int, float)) else None,
                "value_json": None if isinstance(value, (int, float)) else _text(value),
            }
        )
    return {"metric": rows}


KINDS = {
    "tags": _tags,
    "health": _health,
    "alert": _alert,
    "event": _event,
    "oee": _oee,
    "downtime": _downtime,
    "part": _part,
    "quality": _quality,
    "changes": _changes,
}


def parse_uns(topic: str, payload: bytes) -> Parsed:
    """One UNS JSON message as rows; raises `Rejected`."""
    try:
        envelope = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise Rejected("malformed", f"not JSON: {e}") from None
    envelope = _object(envelope, "the payload")
    schema = envelope.get("schema")
    if schema not in SUPPORTED_SCHEMAS or isinstance(schema, bool):
        raise Rejected("schema_version", f"schema {schema!r} (this fleet reads {sorted(SUPPORTED_SCHEMAS)})")
    kind = envelope.get("kind")
    if kind not in KINDS:
        raise Rejected("unknown_kind", f"kind {kind!r}")
    agent, record_id = envelope.get("agent"), envelope.get("id")
    if not isinstance(agent, str) or not agent:
        raise Rejected("malformed", "no agent")
    if isinstance(record_id, bool) or not isinstance(record_id, int) or not 0 <= record_id < 2**63:
        raise Rejected("malformed", f"record id {record_id!r}")
    time = timestamp(envelope.get("time"))
    if time is None:
        raise Rejected("malformed", "no time")
    place = uns_place(topic)
    made = KINDS[kind](_object(envelope.get("data"), "data"))
    tables = made if isinstance(made, dict) else {kind: made}
    key = {"agent": agent, "record_id": record_id, "schema": schema, "time": time, **place}
    for rows in tables.values():
        for row in rows:
            row.update(key)
    return Parsed(agent, record_id, time, place["site"], tables)


def digest_id(topic: str, payload: bytes) -> int:
    """A record id for a message that has none (Sparkplug): the same bytes give the same id."""
    h = hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=8).digest()
    return int.from_bytes(h, "big") & (2**63 - 1)


def table(kind: str, rows: list[dict]) -> pa.Table:
    """Rows of one table as Arrow, in its fixed schema (missing columns are null)."""
    schema = SCHEMAS[kind]
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)
