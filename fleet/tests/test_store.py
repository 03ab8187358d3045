import pyarrow.parquet as pq

from fleet import records
from fleet.store import Store
from tests.test_records import TOPIC, envelope


def parsed(record_id, tags=2):
    return records.parse_uns(TOPIC, envelope(id=record_id))


def rows_in(root):
    files = [p for p in root.rglob("*.parquet") if not p.name.startswith(".")]
    return sum(pq.read_metadata(p).num_rows for p in files), files


def test_repeats_are_stored_once_whether_pending_or_already_written(tmp_path):
    store = Store(str(tmp_path / "data"), tmp_path / "state")
    assert store.add([parsed(1), parsed(2), parsed(1)]) == 1
    assert store.roll() == 2
    assert store.add([parsed(2), parsed(3)]) == 1  # 2 is in the dataset already
    assert store.roll() == 1
    total, files = rows_in(tmp_path / "data")
    assert total == 3 * 2  # three records of two tags
    assert all("kind=tags/site=plant-7/date=2026-11-25" in str(f) for f in files)


def test_a_crash_between_writing_and_settling_neither_loses_nor_doubles(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "data"), tmp_path / "state")
    store.add([parsed(1), parsed(2)])

    def crash(*_):
        raise SystemExit("killed after the rename")

    monkeypatch.setattr(store, "_settle", crash)
    try:
        store.roll()
    except SystemExit:
        pass
    store.db.close()
    # A partial file from another roll that died before its rename:
    partial = tmp_path / "data/kind=tags/site=plant-7/date=2026-11-25/.part-dead.parquet"
    partial.write_bytes(b"PAR1 truncated")

    again = Store(str(tmp_path / "data"), tmp_path / "state")
    recovered = again.recover()
    assert recovered["adopted_files"] == 1 and recovered["removed_partial_files"] == 1
    assert again.pending()[0] == 0
    assert again.add([parsed(1), parsed(2), parsed(3)]) == 2  # redelivered by the broker
    again.roll()
    total, _ = rows_in(tmp_path / "data")
    assert total == 3 * 2
    assert not partial.exists()
