"""Sparkplug B 3.0 payloads (`spBv1.0/{group}/{NBIRTH|DBIRTH|NDATA|DDATA}/{edge node}[/{device}]`) as rows
of the `metric` table.

DATA messages may name their metrics by alias only; the aliases come from the last birth of the same
edge node (NBIRTH) or device (DBIRTH), which this decoder remembers. A metric whose alias no birth
named is still stored, named `alias:<n>`, rather than dropped. The edge node id is the `agent`; a
Sparkplug message has no record id, so `record_id` is a digest of topic and payload (a QoS 1 repeat has
the same bytes, and so the same id).

`sparkplug_b_pb2.py` is generated from `agent/proto/sparkplug_b.proto` (the Eclipse Tahu definition) by
`protoc -I agent/proto --python_out=fleet/fleet sparkplug_b.proto`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from . import records
from .sparkplug_b_pb2 import Payload

MESSAGE_TYPES = ("NBIRTH", "DBIRTH", "NDATA", "DDATA")

# Sparkplug DataType codes → which field of the metric holds the value.
_INT = {1, 2, 3, 4, 5, 6, 7, 8, 13}
_FLOAT = {9, 10}
_BOOL = {11}
_TEXT = {12, 14, 15}


def _value(metric, datatype: int):
    """(number, text) of one metric value."""
    if metric.is_null:
        return None, None
    which = metric.WhichOneof("value")
    if which is None:
        return None, None
    raw = getattr(metric, which)
    if datatype in _INT or which in ("int_value", "long_value"):
        return float(raw), None
    if datatype in _FLOAT or which in ("float_value", "double_value"):
        return float(raw), None
    if datatype in _BOOL or which == "boolean_value":
        return float(bool(raw)), None
    if datatype in _TEXT or which == "string_value":
        return None, str(raw)
    return None, f"<{which}>"


class Decoder:
    """Decodes one broker's Sparkplug messages, remembering each node's and device's aliases."""

    def __init__(self) -> None:
        # (group, node, device or "") → alias → (name, datatype)
        self.aliases: dict[tuple[str, str, str], dict[int, tuple[str, int]]] = {}

    def parse(self, topic: str, payload: bytes, site: str = "") -> records.Parsed:
        levels = topic.split("/")
        if len(levels) not in (4, 5) or levels[0] != "spBv1.0":
            raise records.Rejected("malformed", f"not a Sparkplug topic: {topic!r}")
        group, message_type, node = levels[1], levels[2], levels[3]
        device = levels[4] if len(levels) == 5 else ""
        if message_type not in MESSAGE_TYPES:
            raise records.Rejected("unknown_kind", f"Sparkplug {message_type}")
        try:
            decoded = Payload.FromString(payload)
        except DecodeError as e:
            raise records.Rejected("malformed", f"not a Sparkplug B payload: {e}") from None
        owner = (group, node, device)
        if message_type.endswith("BIRTH"):
            self.aliases[owner] = {
                m.alias: (m.name, m.datatype) for m in decoded.metrics if m.HasField("alias") and m.name
            }
        known = self.aliases.get(owner, {})
        sent = _ms(decoded.timestamp) if decoded.HasField("timestamp") else None
        time = sent or datetime.now(UTC)
        rows = []
        for m in decoded.metrics:
            name, datatype = m.name, m.datatype
            if not name and m.HasField("alias"):
                name, born_type = known.get(m.alias, (f"alias:{m.alias}", 0))
                datatype = datatype or born_type
            number, text = _value(m, datatype)
            rows.append(
                {
                    "group_id": group,
                    "device": device or None,
                    "message_type": message_type,
                    "seq": decoded.seq if decoded.HasField("seq") else None,
                    "metric": name,
                    "metric_time": _ms(m.timestamp) if m.HasField("timestamp") else sent,
                    "value": number,
                    "value_json": text,
                }
            )
        record_id = records.digest_id(topic, payload)
        key = {
            "agent": node,
            "record_id": record_id,
            "schema": 1,
            "time": time,
            "enterprise": None,
            "site": site or group,
            "area": None,
            "uns_line": None,
        }
        for row in rows:
            row.update(key)
        return records.Parsed(node, record_id, time, key["site"], {"metric": rows})


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
