"""Scale figures: ingest and each job, on records a real agent published, replicated across N virtual
gateways (`fleet.generate`).

    python3 -m fleet.bench [--gateways 200] [--sample tests/fixtures/agent-records.jsonl] [--broker-messages 20000]

Prints, one line each:
- ingest through the parser and the ledger into Parquet (messages/s, rows/s), on one core;
- ingest through mosquitto (a local broker started here; messages/s from first publish to all stored);
- each job's input rows/s at 1 and at 2 CPUs (a local Ray started for each);
- how many gateways like the sample's one node ingests per day at the measured rate.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from . import generate as gen
from .ingest import Ingest, IngestOptions

HERE = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def through_broker(sample: list[dict], messages: int, work: Path) -> dict:
    """A backlog of `messages` replicated records queued at a local mosquitto for the ingest's
    persistent session, then drained by the ingest: messages/s from its start to all stored."""
    import paho.mqtt.client as mqtt

    port = _free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 10000000\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        options = IngestOptions(
            broker=f"mqtt://127.0.0.1:{port}",
            dataset=str(work / "broker-data"),
            state_dir=work / "broker-state",
            topics=["bench/#"],
            roll_seconds=5,
            status_every=3600,
            duration=1.0,
        )
        Ingest(options).run()  # opens the persistent session and subscribes
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
        publisher.max_inflight_messages_set(1000)
        publisher.connect("127.0.0.1", port)
        publisher.loop_start()
        rng, sent, gateway, last = random.Random(1), 0, 0, None
        while sent < messages:
            for topic, payload in gen.replicate(sample, gateway, rng):
                last = publisher.publish("bench/" + topic.split("/", 1)[1], payload, qos=1)
                sent += 1
                if sent >= messages:
                    break
            gateway += 1
        last.wait_for_publish(timeout=120)
        publisher.disconnect()
        publisher.loop_stop()

        options.duration = None
        ingest = Ingest(options)
        counts = ingest.counts
        deadline = time.perf_counter() + 600

        def stop_when_drained():
            while counts.stored + counts.duplicates + sum(counts.quarantined.values()) < sent:
                if time.perf_counter() > deadline:
                    break
                time.sleep(0.02)
            ingest.stopping = True

        threading.Thread(target=stop_when_drained, daemon=True).start()
        started = time.perf_counter()
        ingest.run()
        elapsed = time.perf_counter() - started
        return {
            "messages": sent,
            "stored": counts.stored,
            "seconds": round(elapsed, 2),
            "messages_per_second": round(sent / elapsed),
        }
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def jobs(dataset: str, cpus: int) -> dict:
    """Each job's input rows per second with a local Ray of `cpus` CPUs."""
    import ray

    from .dataset import read, read_frame
    from .jobs import maintenance, production, quality

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        out = {}
        health = read(dataset, "health").dataset
        rows = health.count()
        started = time.perf_counter()
        table = maintenance.assets(health, None, None)
        out["maintenance"] = {"rows": rows, "assets": len(table), "rows_per_second": round(rows / _since(started))}
        oee = read(dataset, "oee").dataset
        rows = oee.count()
        started = time.perf_counter()
        production.run(oee)
        out["production"] = {"rows": rows, "rows_per_second": round(rows / _since(started))}
        started = time.perf_counter()
        reports, _ = read_frame(dataset, "quality")
        characteristics, _ = read_frame(dataset, "characteristic")
        quality.run(reports, characteristics)
        rows = len(reports) + len(characteristics)
        out["quality"] = {"rows": rows, "rows_per_second": round(rows / _since(started))}
        tags = read(dataset, "tags").dataset
        started = time.perf_counter()
        rows = tags.count()
        per_tag = tags.groupby("tag").mean("mean").count()
        out["tags_scan"] = {"rows": rows, "tags": per_tag, "rows_per_second": round(rows / _since(started))}
        return out
    finally:
        ray.shutdown()


def _since(started: float) -> float:
    return max(time.perf_counter() - started, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", type=int, default=200)
    ap.add_argument("--sample", default=str(HERE / "tests/fixtures/agent-records.jsonl"))
    ap.add_argument("--broker-messages", type=int, default=20_000)
    args = ap.parse_args()
    sample_path = Path(args.sample)
    sample = [json.loads(line) for line in sample_path.read_text().splitlines() if line.strip()]
    times = sorted(json.loads(m["payload"]).get("time", "") for m in sample if m["payload"].startswith("{"))
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    try:
        generated = gen.generate(sample_path, str(work / "data"), args.gateways, 1, work / "state")
        print(f"ingest (parser + ledger + Parquet, one core): {json.dumps(generated)}")
        if shutil.which("mosquitto"):
            print(f"ingest through mosquitto: {json.dumps(through_broker(sample, args.broker_messages, work))}")
        for cpus in (1, 2):
            print(f"jobs at {cpus} CPU(s): {json.dumps(jobs(str(work / 'data'), cpus))}")
        if len(times) >= 2:
            from datetime import datetime

            span = (datetime.fromisoformat(times[-1][:-1]) - datetime.fromisoformat(times[0][:-1])).total_seconds()
            per_day = len(sample) / max(span, 1) * 86400
            rate = generated["messages_per_second"]
            print(
                f"one gateway like the sample: {per_day:,.0f} records/day; "
                f"one node at {rate:,} records/s ingests {rate * 86400 / per_day:,.0f} such gateways"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
