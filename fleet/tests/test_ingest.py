"""`fleet ingest` against a real mosquitto: bad input is counted and quarantined, repeats are stored
once, and what is published while the ingest is away arrives when it is back (persistent session)."""

import json
import shutil
import socket
import subprocess
import time

import paho.mqtt.client as mqtt
import pyarrow.parquet as pq
import pytest

from fleet.ingest import Ingest, IngestOptions
from tests.test_records import TOPIC, envelope

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (apt-get install mosquitto)")


@pytest.fixture()
def broker(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    process = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(timeout=10)


def publish(port, messages):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def options(port, tmp_path, duration):
    return IngestOptions(
        broker=f"mqtt://127.0.0.1:{port}",
        dataset=str(tmp_path / "data"),
        state_dir=tmp_path / "state",
        topics=["acme/#"],
        roll_seconds=0.2,
        status_every=60,
        duration=duration,
    )


def stored_ids(tmp_path):
    ids = []
    for path in (tmp_path / "data").rglob("*.parquet"):
        if not path.name.startswith("."):
            ids += pq.ParquetFile(path).read(columns=["record_id"]).column("record_id").to_pylist()
    return ids


def test_bad_input_is_counted_and_repeats_are_stored_once(broker, tmp_path):
    Ingest(options(broker, tmp_path, 1.0)).run()  # the session and its subscription
    status = json.dumps({"schema": 1, "status": "online", "agent": "gw-7"}).encode()
    publish(
        broker,
        [
            (TOPIC, envelope(id=1)),
            (TOPIC, envelope(id=1)),  # a QoS 1 repeat
            (TOPIC, b"\x00garbage"),
            (TOPIC, envelope(id=2, schema=9)),
            (TOPIC, envelope(id=3, kind="telemetry")),
            ("acme/plant-7/press-shop/line-2/gw-7/status", status),
            (TOPIC, envelope(id=4)),
        ],
    )
    counts = Ingest(options(broker, tmp_path, 3.0)).run()
    assert counts.received == 7
    assert (counts.stored, counts.duplicates, counts.ignored) == (2, 1, 1)
    assert dict(counts.quarantined) == {"malformed": 1, "schema_version": 1, "unknown_kind": 1}
    quarantined = [json.loads(line) for line in (tmp_path / "state/quarantine.jsonl").read_text().splitlines()]
    assert [q["reason"] for q in quarantined] == ["malformed", "schema_version", "unknown_kind"]
    assert sorted(stored_ids(tmp_path)) == [1, 1, 4, 4]  # two tags each


def test_what_is_published_while_the_ingest_is_away_arrives_later(broker, tmp_path):
    Ingest(options(broker, tmp_path, 1.0)).run()
    publish(broker, [(TOPIC, envelope(id=n)) for n in range(10, 60)])
    counts = Ingest(options(broker, tmp_path, 3.0)).run()
    assert counts.stored == 50 and sorted(set(stored_ids(tmp_path))) == list(range(10, 60))
