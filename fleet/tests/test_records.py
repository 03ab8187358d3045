import json

import pytest

from fleet import records
from fleet.sparkplug import Decoder
from fleet.sparkplug_b_pb2 import Payload

TOPIC = "acme/plant-7/press-shop/line-2/pump-1/tags"


def envelope(kind="tags", **over):
    body = {
        "schema": 1,
        "id": 2000008,
        "kind": kind,
        "agent": "gw-7",
        "time": "2026-11-25T17:27:42.946Z",
        "data": {
            "device": "pump-1",
            "online": True,
            "from": "2026-11-25T17:27:40.945Z",
            "to": "2026-11-25T17:27:42.946Z",
            "tags": {
                "pump-1.temp": {
                    "count": 4,
                    "bad": 0,
                    "min": 45.4,
                    "max": 45.6,
                    "mean": 45.5,
                    "last": 45.5,
                    "quality": "good",
                    "unit": "°C",
                },
                "pump-1.wave": {"count": 0, "bad": 0, "last": {"array_length": 4096}, "quality": "none"},
            },
        },
    }
    body.update(over)
    return json.dumps(body).encode()


def test_a_tag_summary_becomes_one_row_per_tag_with_its_place_in_the_uns():
    parsed = records.parse_uns(TOPIC, envelope())
    rows = parsed.tables["tags"]
    assert (parsed.agent, parsed.record_id, parsed.site) == ("gw-7", 2000008, "plant-7")
    assert [r["tag"] for r in rows] == ["pump-1.temp", "pump-1.wave"]
    assert rows[0]["mean"] == 45.5 and rows[0]["last_value"] == 45.5 and rows[0]["last_json"] is None
    assert rows[1]["last_value"] is None and json.loads(rows[1]["last_json"]) == {"array_length": 4096}
    assert rows[0]["area"] == "press-shop" and rows[0]["uns_line"] == "line-2"
    table = records.table("tags", rows)
    assert table.schema == records.SCHEMAS["tags"]
    assert table.column("time").to_pylist()[0].microsecond == 946000


def test_an_assessment_carries_its_waveform_diagnoses_into_the_health_table():
    from tests.plant import T0, assessment

    data = assessment("M-1", T0, 0.45, 0.55, "scheduled_maintenance", features={"bearing_defect_db": 23.0})
    data["vibration"] = {
        "velocity_rms": 2.4,
        "kurtosis": 5.1,
        "diagnoses": [
            {
                "fault": "outer_race",
                "bearing": "DE",
                "health": 0.45,
                "reason": "outer race defect suspected on bearing DE: BPFO 87.5 Hz and 3 harmonics",
            }
        ],
        "peaks": [],
    }
    parsed = records.parse_uns(TOPIC, envelope(kind="health", data=data))
    row = parsed.tables["health"][0]
    assert row["vibration_velocity_rms"] == 2.4 and row["feature_bearing_defect_db"] == 23.0
    assert row["vibration_faults"] == ["outer_race"]
    assert row["vibration_diagnoses"][0].startswith("outer race defect suspected on bearing DE")
    assert records.table("health", parsed.tables["health"]).schema == records.SCHEMAS["health"]
    plain = records.parse_uns(TOPIC, envelope(kind="health", data=assessment("P-1", T0, 0.1, 0.9)))
    assert plain.tables["health"][0]["vibration_faults"] == []
    data["vibration"] = {"diagnoses": ["outer race"]}
    with pytest.raises(records.Rejected, match="vibration.diagnoses"):
        records.parse_uns(TOPIC, envelope(kind="health", data=data))


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"{not json", "malformed"),
        (b"[1,2]", "malformed"),
        (envelope(schema=2), "schema_version"),
        (envelope(schema="1"), "schema_version"),
        (envelope(kind="telemetry"), "unknown_kind"),
        (envelope(id=-1), "malformed"),
        (envelope(id="7"), "malformed"),
        (envelope(time="yesterday"), "malformed"),
        (envelope(data={"device": "x", "tags": {"t": {"count": "four"}}}), "malformed"),
        (envelope(agent=""), "malformed"),
    ],
)
def test_what_cannot_be_read_is_rejected_with_its_reason(payload, reason):
    with pytest.raises(records.Rejected) as caught:
        records.parse_uns(TOPIC, payload)
    assert caught.value.reason == reason


def test_a_quality_report_gives_its_report_and_a_row_per_characteristic():
    data = {
        "station": "gauge-1",
        "line": "press-1",
        "shift": "day",
        "closing": False,
        "from": "2026-11-25T06:00:00.000Z",
        "to": "2026-11-25T06:10:00.000Z",
        "parts": 100,
        "pass": 95,
        "review": 2,
        "reject": 3,
        "reject_rate": 0.03,
        "mean_score": 0.2,
        "characteristics": {
            "bore": {
                "n": 100,
                "mean": 10.01,
                "sigma_within": 0.01,
                "cp": 1.6,
                "cpk": 1.3,
                "ppk": 1.2,
                "violations": {"nelson_1": 2, "nelson_2": 1},
            },
        },
    }
    parsed = records.parse_uns("a/b/c/d/gauge-1/quality", envelope(kind="quality", data=data))
    assert parsed.tables["quality"][0]["reject"] == 3
    [c] = parsed.tables["characteristic"]
    assert (c["characteristic"], c["cpk"], c["violations"]) == ("bore", 1.3, 3)


def test_sparkplug_data_is_named_through_the_aliases_of_the_birth():
    birth = Payload(seq=0, timestamp=1_700_000_000_000)
    birth.metrics.add(name="pump-1.temp", alias=7, datatype=10, double_value=20.0)
    ddata = Payload(seq=1, timestamp=1_700_000_001_000)
    ddata.metrics.add(alias=7, datatype=10, double_value=21.5)
    ddata.metrics.add(alias=99, datatype=10, double_value=1.0)
    decoder = Decoder()
    decoder.parse("spBv1.0/plant/DBIRTH/gw-7/pump-1", birth.SerializeToString())
    parsed = decoder.parse("spBv1.0/plant/DDATA/gw-7/pump-1", ddata.SerializeToString())
    rows = parsed.tables["metric"]
    assert [(r["metric"], r["value"]) for r in rows] == [("pump-1.temp", 21.5), ("alias:99", 1.0)]
    again = decoder.parse("spBv1.0/plant/DDATA/gw-7/pump-1", ddata.SerializeToString())
    assert again.record_id == parsed.record_id and parsed.agent == "gw-7"
    with pytest.raises(records.Rejected):
        decoder.parse("spBv1.0/plant/DDATA/gw-7/pump-1", b"\xff\xff\xff")
