"""Scale data: real agent messages (captured as JSON lines `{"topic", "payload"}`) replicated across N
virtual gateways, each with its own agent name, site (one site per ten gateways), record ids and
values varied by the seed (numbers × (1 + 2 % noise); counts, ids and times kept consistent). Every
message goes through the same parser and ledger as `fleet ingest`, so what is written is what the
ingest would write."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from . import records
from .store import Store

GATEWAYS_PER_SITE = 10
# Fields that are counts, identifiers or fractions bound to others: never varied.
KEEP = {"schema", "id", "count", "bad", "parts", "pass", "review", "reject", "n", "product", "counter_anomalies"}


def _vary(value, rng: random.Random, key: str = ""):
    if isinstance(value, dict):
        return {k: _vary(v, rng, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_vary(v, rng, key) for v in value]
    if isinstance(value, float) and key not in KEEP:
        return value * (1 + rng.gauss(0, 0.02))
    return value


def replicate(sample: list[dict], gateway: int, rng: random.Random):
    """The sample as gateway `gateway` would have sent it: (topic, payload bytes)."""
    agent, site = f"gw-{gateway:04d}", f"site-{gateway // GATEWAYS_PER_SITE:02d}"
    for message in sample:
        envelope = json.loads(message["payload"])
        levels = message["topic"].split("/")
        old_agent = envelope.get("agent")
        levels[1] = site
        levels = [agent if level == old_agent else level for level in levels]
        envelope["agent"] = agent
        envelope["data"] = _vary(envelope.get("data"), rng)
        yield "/".join(levels), json.dumps(envelope).encode()


def generate(sample_path: Path, dataset: str, gateways: int, seed: int, state: Path) -> dict:
    sample = [json.loads(line) for line in sample_path.read_text().splitlines() if line.strip()]
    sample = [m for m in sample if m["topic"].rsplit("/", 1)[-1] != "status"]
    store = Store(dataset, state)
    rng = random.Random(seed)
    started, messages, rejected = time.perf_counter(), 0, 0
    for gateway in range(gateways):
        batch = []
        for topic, payload in replicate(sample, gateway, rng):
            messages += 1
            try:
                batch.append(records.parse_uns(topic, payload))
            except records.Rejected:
                rejected += 1
        store.add(batch)
    parsed = time.perf_counter()
    while store.roll():
        pass
    done = time.perf_counter()
    store.close()
    return {
        "gateways": gateways,
        "messages": messages,
        "rejected": rejected,
        "rows": store.rows_written,
        "files": store.files_written,
        "parse_and_ledger_per_second": round(messages / max(parsed - started, 1e-9)),
        "roll_rows_per_second": round(store.rows_written / max(done - parsed, 1e-9)),
        "messages_per_second": round(messages / max(done - started, 1e-9)),
    }
