"""`fleet ingest`: the broker → the Parquet dataset, exactly once.

The client keeps a persistent MQTT 5 session (a fixed client id, clean start off, a week's session
expiry, QoS 1), so what the agents publish while the ingest is stopped waits at the broker. Every
message is acknowledged only once its rows are committed to the ledger (see `store`), in batches of
at most `BATCH` messages or `BATCH_SECONDS`. The ledger is rolled into Parquet files by size
(`roll_bytes`) or age (`roll_seconds`), and once more on a clean stop (SIGINT/SIGTERM).

Memory is bounded: received messages wait in the ledger on disk, a roll reads at most `ROLL_RECORDS`
records at once, and the broker sends at most its in-flight window of unacknowledged messages.
"""

from __future__ import annotations

import json
import signal
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import records
from .sparkplug import Decoder
from .store import Store

BATCH = 500
BATCH_SECONDS = 0.05
# Unacknowledged messages the broker may send at once (MQTT 5 Receive Maximum): a batch's worth
# twice over, so the broker keeps sending while a batch commits.
RECEIVE_MAXIMUM = 2 * BATCH
# How long the broker keeps the session (and queues for it) while the ingest is away.
SESSION_EXPIRY = 7 * 24 * 3600
ROLL_RECORDS = 50_000
# The UNS topic levels that carry records; the rest (status, cmd, reply) are not records.
UNS_RECORDS = {"tags", "health", "alert", "events", "oee", "downtime", "part", "quality", "changes"}
SPARKPLUG_RECORDS = {"NBIRTH", "DBIRTH", "NDATA", "DDATA"}


@dataclass
class IngestOptions:
    broker: str
    dataset: str
    state_dir: Path
    topics: list[str] = field(default_factory=lambda: ["#"])
    client_id: str = "millwright-fleet-ingest"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    roll_bytes: int = 64 * 1024 * 1024
    roll_seconds: float = 60.0
    status_every: float = 10.0
    dedup_days: float = 7.0
    # Stop after this long (tests and batch runs); None runs until a signal.
    duration: float | None = None


@dataclass
class Counts:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    quarantined: Counter = field(default_factory=Counter)
    connects: int = 0

    def line(self, store: Store) -> str:
        pending, size, _ = store.pending()
        bad = ", ".join(f"{k} {v}" for k, v in sorted(self.quarantined.items())) or "none"
        return (
            f"ingest: received {self.received}, stored {self.stored}, duplicates {self.duplicates}, "
            f"not records {self.ignored}, quarantined {sum(self.quarantined.values())} ({bad}); "
            f"pending {pending} ({size / 1e6:.1f} MB); written {store.rows_written} rows in "
            f"{store.files_written} files; connects {self.connects}"
        )


class Quarantine:
    """Messages that could not become rows, kept as JSON lines (bounded) beside the ledger."""

    LIMIT = 64 * 1024 * 1024

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size if path.exists() else 0

    def keep(self, topic: str, payload: bytes, why: records.Rejected) -> None:
        line = json.dumps(
            {"topic": topic, "reason": why.reason, "detail": why.detail, "payload": payload.decode("utf-8", "replace")}
        )
        if self.size + len(line) > self.LIMIT:
            return  # counted, not kept: the file is full
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        self.size += len(line) + 1


class Ingest:
    def __init__(self, options: IngestOptions):
        self.options = options
        self.store = Store(options.dataset, options.state_dir, options.dedup_days)
        self.quarantine = Quarantine(options.state_dir / "quarantine.jsonl")
        self.sparkplug = Decoder()
        self.counts = Counts()
        # Filled by paho's network thread, committed by the main loop.
        self.lock = threading.Lock()
        self.full = threading.Event()
        self.batch: list[records.Parsed] = []
        self.unacked: list[int] = []
        self.stopping = False
        self.complained = float("-inf")
        self.client = self._client()

    def _client(self) -> mqtt.Client:
        o = self.options
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=o.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if o.username:
            client.username_pw_set(o.username, o.password)
        url = urlparse(o.broker)
        if url.scheme in ("mqtts", "ssl"):
            context = ssl.create_default_context(cafile=o.ca_file)
            if o.cert_file:
                context.load_cert_chain(o.cert_file, o.key_file)
            if o.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            client.tls_set_context(context)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _complain(self, text: str) -> None:
        """Connection trouble, at most every 10 s (paho retries every 1–10 s)."""
        now = time.monotonic()
        if now - self.complained >= 10:
            self.complained = now
            print(f"ingest: {text}", file=sys.stderr, flush=True)

    def _on_connect_fail(self, _client, _userdata):
        why = sys.exc_info()[1]
        self._complain(f"cannot connect to {self.options.broker}: {why or 'refused'}; retrying")

    def _on_disconnect(self, _client, _userdata, _flags, reason, _properties):
        if not self.stopping:
            self._complain(f"connection to {self.options.broker} lost ({reason}); reconnecting")

    def _on_connect(self, client, _userdata, _flags, reason, _properties):
        if reason.is_failure:
            print(f"ingest: broker refused the connection: {reason}", file=sys.stderr)
            return
        self.counts.connects += 1
        client.subscribe([(t, 1) for t in self.options.topics])

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage):
        topic, payload = message.topic, message.payload
        with self.lock:
            self.counts.received += 1
            try:
                parsed = self._parse(topic, payload)
            except records.Rejected as why:
                self.counts.quarantined[why.reason] += 1
                self.quarantine.keep(topic, payload, why)
                parsed = None
            if parsed is not None:
                self.batch.append(parsed)
            self.unacked.append(message.mid)
            if len(self.unacked) >= BATCH:
                self.full.set()

    def _parse(self, topic: str, payload: bytes) -> records.Parsed | None:
        levels = topic.split("/")
        if levels[0] == "spBv1.0":
            if len(levels) > 2 and levels[2] in SPARKPLUG_RECORDS:
                return self.sparkplug.parse(topic, payload)
        elif levels[-1] in UNS_RECORDS and len(levels) >= 5:
            return records.parse_uns(topic, payload)
        self.counts.ignored += 1
        return None

    def _commit(self) -> None:
        """Commits the batch to the ledger, then acknowledges its messages."""
        with self.lock:
            batch, unacked = self.batch, self.unacked
            self.batch, self.unacked = [], []
            self.full.clear()
        if batch:
            duplicates = self.store.add(batch)
            with self.lock:
                self.counts.duplicates += duplicates
                self.counts.stored += len(batch) - duplicates
        for mid in unacked:
            self.client.ack(mid, 1)

    def _roll_due(self) -> bool:
        pending, size, oldest = self.store.pending()
        if not pending:
            return False
        return size >= self.options.roll_bytes or time.time() - oldest >= self.options.roll_seconds

    def roll_all(self) -> None:
        while self.store.roll(ROLL_RECORDS):
            pass

    def run(self) -> Counts:
        o = self.options
        recovered = self.store.recover()
        if recovered["adopted_files"] or recovered["removed_partial_files"] or recovered["unreadable_files"]:
            print(f"ingest: recovered after an interrupted roll: {recovered}", file=sys.stderr)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: setattr(self, "stopping", True))
        url = urlparse(o.broker)
        port = url.port or (8883 if url.scheme in ("mqtts", "ssl") else 1883)
        connect = Properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = SESSION_EXPIRY
        connect.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(
            url.hostname or "localhost", port, keepalive=30, clean_start=False, properties=connect
        )
        self.client.loop_start()
        started = last_status = time.monotonic()
        try:
            while not self.stopping:
                self.full.wait(BATCH_SECONDS)
                self._tick()
                now = time.monotonic()
                if now - last_status >= o.status_every:
                    print(self.counts.line(self.store), file=sys.stderr, flush=True)
                    last_status = now
                if o.duration is not None and now - started >= o.duration:
                    break
        finally:
            self.stopping = True
            self._commit()
            self.client.disconnect()
            self.client.loop_stop()
            self._commit()  # what came meanwhile is stored; unacknowledged, it comes again (a duplicate)
            self.roll_all()
            print(self.counts.line(self.store), file=sys.stderr, flush=True)
            self.store.close()
        return self.counts

    def _tick(self) -> None:
        self._commit()
        if self._roll_due():
            self.roll_all()
