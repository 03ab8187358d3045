"""Checks for the end-to-end test (`tests/tests/fleet.rs`): the dataset against what an independent
subscriber captured, and one shift's OEE against the raw counters.

    python3 -m tests.e2e_check CAPTURE.jsonl DATASET_DIR RESULTS_DIR

Prints one JSON object:
- `captured`: records the subscriber saw (distinct (agent, id)), `missing` / `duplicated` / `extra`:
  rows expected from them that the dataset lacks, holds more than once, or holds without a record;
- `ranking`: the assets of the maintenance table, riskiest first;
- `shifts`: per closing shift of each line, the parts the agent reported and the parts the counter
  tags moved by between the tag summaries nearest the shift's start and end.
"""

import json
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from fleet import records


def row_identity(table: str, row: dict) -> tuple:
    """What makes a row unique within its record."""
    extra = {"tags": "tag", "characteristic": "characteristic", "metric": "metric"}.get(table)
    return (table, row["agent"], row["record_id"], row.get(extra) if extra else None)


def expected(capture: Path) -> tuple[Counter, int]:
    rows, seen = Counter(), set()
    for line in capture.read_text().splitlines():
        message = json.loads(line)
        topic = message["topic"]
        if topic.rsplit("/", 1)[-1] in ("status",) or "/reply/" in topic or "/cmd/" in topic:
            continue
        parsed = records.parse_uns(topic, message["payload"].encode())
        if (parsed.agent, parsed.record_id) in seen:
            continue  # a QoS 1 repeat
        seen.add((parsed.agent, parsed.record_id))
        for table, table_rows in parsed.tables.items():
            for row in table_rows:
                rows[row_identity(table, row)] += 1
    return rows, len(seen)


def stored(dataset: Path) -> Counter:
    rows = Counter()
    for path in dataset.rglob("*.parquet"):
        if path.name.startswith("."):
            continue
        table = path.relative_to(dataset).parts[0].removeprefix("kind=")
        frame = pd.read_parquet(path)
        for row in frame.to_dict("records"):
            rows[row_identity(table, row)] += 1
    return rows


def shifts(dataset: Path, results: Path) -> list[dict]:
    per_shift = results / "oee_shifts.parquet"
    if not per_shift.exists():
        return []
    oee = pd.read_parquet(per_shift)
    tags = pd.concat(pd.read_parquet(p) for p in dataset.glob("kind=tags/**/*.parquet"))
    out = []
    for r in oee.itertuples():
        counter = tags[tags["tag"] == f"{r.line}.total"].sort_values("to_time")

        def last_before(t, counter=counter):
            before = counter[counter["to_time"] <= t]
            return float(before["last_value"].iloc[-1]) if len(before) else None

        start, end = last_before(r.shift_start), last_before(r.shift_end)
        out.append(
            {
                "line": r.line,
                "shift": r.shift,
                "parts_total": r.parts_total,
                "oee": r.oee,
                "counter_delta": None if start is None or end is None else end - start,
            }
        )
    return out


def events(dataset: Path) -> list:
    """The agent events in the dataset, in record order."""
    frames = [pd.read_parquet(p) for p in dataset.glob("kind=event/**/*.parquet")]
    if not frames:
        return []
    rows = pd.concat(frames).sort_values("record_id")
    return [[int(r.record_id), r.event] for r in rows.itertuples()]


def ranking(results: Path) -> list:
    path = results / "maintenance_assets.parquet"
    if not path.exists():
        return []
    table = pd.read_parquet(path)
    return [[r.asset, round(r.failure_probability, 3), round(r.risk, 3)] for r in table.itertuples()]


def main() -> int:
    capture, dataset, results = (Path(a) for a in sys.argv[1:4])
    want, captured = expected(capture)
    have = stored(dataset)
    report = {
        "captured": captured,
        "missing": sorted(map(str, (want - have).keys()))[:20],
        "duplicated": sorted(str(k) for k, n in have.items() if n > 1)[:20],
        "extra": sorted(map(str, (have - want).keys()))[:20],
        "rows": sum(have.values()),
        "shifts": shifts(dataset, results),
        "ranking": ranking(results),
        "events": events(dataset),
    }
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
