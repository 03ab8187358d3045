"""`fleet ingest` against a real mosquitto: bad input is counted and quarantined, repeats are stored
once, and what is published while the ingest is away arrives when it is back (persistent session)."""

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

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


def options(port, tmp_path, duration, topics=("acme/#",)):
    return IngestOptions(
        broker=f"mqtt://127.0.0.1:{port}",
        dataset=str(tmp_path / "data"),
        state_dir=tmp_path / "state",
        topics=list(topics),
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


def test_sparkplug_messages_are_stored_as_named_metrics(broker, tmp_path):
    from fleet.sparkplug_b_pb2 import Payload

    Ingest(options(broker, tmp_path, 1.0, topics=["spBv1.0/#"])).run()
    birth = Payload(seq=0, timestamp=1_764_000_000_000)
    birth.metrics.add(name="press.total", alias=3, datatype=8, long_value=100)
    data = Payload(seq=1, timestamp=1_764_000_001_000)
    data.metrics.add(alias=3, datatype=8, long_value=102)
    publish(
        broker,
        [
            ("spBv1.0/plant/DBIRTH/gw-sp/press", birth.SerializeToString()),
            ("spBv1.0/plant/DDATA/gw-sp/press", data.SerializeToString()),
            ("spBv1.0/plant/DDATA/gw-sp/press", data.SerializeToString()),  # a repeat
        ],
    )
    counts = Ingest(options(broker, tmp_path, 3.0, topics=["spBv1.0/#"])).run()
    assert (counts.stored, counts.duplicates) == (2, 1)
    [path] = [p for p in (tmp_path / "data").rglob("*.parquet") if not p.name.startswith(".")]
    assert "kind=metric/site=plant/" in str(path)
    rows = pq.ParquetFile(path).read().to_pylist()
    assert sorted((r["message_type"], r["metric"], r["value"]) for r in rows) == [
        ("DBIRTH", "press.total", 100.0),
        ("DDATA", "press.total", 102.0),
    ]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def pki(directory, name):
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    d = directory / name
    d.mkdir()
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name} CA",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=d,
    )
    return d


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for the test certificates")
def test_tls_with_credentials_connects_and_another_ca_is_refused(tmp_path):
    trusted, foreign = pki(tmp_path, "plant"), pki(tmp_path, "elsewhere")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "fleet", "s3cret-pass"], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # `user root`: started as root, mosquitto would switch to its own user, which cannot read the
    # test's private directory (as any other user the line is ignored).
    (tmp_path / "tls.conf").write_text(
        f"listener {port} 127.0.0.1\nuser root\nallow_anonymous false\npassword_file {tmp_path}/passwd\n"
        f"cafile {trusted}/ca.pem\ncertfile {trusted}/server.pem\nkeyfile {trusted}/server.key\n"
    )
    broker = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "tls.conf")], stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)

        def run(ca, password):
            o = options(port, tmp_path, 2.0)
            o.broker, o.ca_file, o.username, o.password = f"mqtts://127.0.0.1:{port}", ca, "fleet", password
            o.state_dir = tmp_path / f"state-{Path(ca).parent.name}-{password}"
            return Ingest(o).run()

        assert run(f"{trusted}/ca.pem", "s3cret-pass").connects == 1
        assert run(f"{foreign}/ca.pem", "s3cret-pass").connects == 0  # the certificate is checked
        assert run(f"{trusted}/ca.pem", "wrong").connects == 0
    finally:
        broker.terminate()
        broker.wait(timeout=10)
