"""The inventory store: idempotent ingestion, incremental merges, SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
import shutil

from inventory_helpers import CAPTURES, analyze, connections, devices

PLANT = CAPTURES / "iti-ics-tools__mb2.pcap"
DNP3_A = CAPTURES / "iti-ics-tools__dnp3_test_data_part1.pcap"
DNP3_B = CAPTURES / "zeek__dnp3.pcap"


def _counts(devs: list[dict]) -> dict:
    return {(d["mac"], d["ip"]): (d["packets_sent"], d["bytes_sent"]) for d in devs}


def test_same_file_twice_adds_nothing(tmp_path) -> None:
    db = tmp_path / "inv.db"
    [first] = analyze(db, PLANT)
    before, conns = devices(db), connections(db)
    [again] = analyze(db, PLANT)
    assert first.status == "analyzed" and again.status == "duplicate"
    assert devices(db) == before
    assert connections(db) == conns


def test_gzip_copy_of_an_ingested_file_is_recognised(tmp_path) -> None:
    db = tmp_path / "inv.db"
    analyze(db, PLANT)
    before = devices(db)
    gz = tmp_path / "plant.pcap.gz"
    with open(PLANT, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    [result] = analyze(db, gz)
    assert result.status == "duplicate"
    assert devices(db) == before


def test_two_captures_merge_counts_of_shared_devices(tmp_path) -> None:
    """Both DNP3 captures contain the outstation 10.0.0.8: its counts add up."""
    alone_a, alone_b, both = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "ab.db"
    analyze(alone_a, DNP3_A)
    analyze(alone_b, DNP3_B)
    analyze(both, DNP3_A, DNP3_B)
    a, b, ab = _counts(devices(alone_a)), _counts(devices(alone_b)), _counts(devices(both))
    assert set(ab) == set(a) | set(b)
    shared = set(a) & set(b)
    assert shared, "the two captures share devices"
    for key in ab:
        sa, ba = a.get(key, (0, 0))
        sb, bb = b.get(key, (0, 0))
        assert ab[key] == (sa + sb, ba + bb), key


def test_first_and_last_seen_span_both_captures(tmp_path) -> None:
    db = tmp_path / "inv.db"
    analyze(db, DNP3_A, DNP3_B)
    one = tmp_path / "one.db"
    analyze(one, DNP3_B)
    early = {(d["mac"], d["ip"]): d for d in devices(db)}
    for d in devices(one):
        merged = early[(d["mac"], d["ip"])]
        assert merged["first_seen"] <= d["first_seen"]
        assert merged["last_seen"] >= d["last_seen"]


def test_damaged_file_keeps_what_was_stored(tmp_path) -> None:
    db = tmp_path / "inv.db"
    analyze(db, PLANT)
    before = devices(db)
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture\n" * 10)
    [bad] = analyze(db, junk)
    assert bad.status == "error" and "junk.pcap" in (bad.error or "")
    assert devices(db) == before


def _comparable(rows: list[dict]) -> list[str]:
    """Rows without database ids (they differ between servers), in a stable order."""
    return sorted(
        json.dumps({k: v for k, v in r.items() if k != "id" and not k.endswith("device_id")},
                   sort_keys=True)
        for r in rows
    )


def test_postgresql_holds_the_same_inventory_as_sqlite(tmp_path, pg_url) -> None:
    sqlite_db = tmp_path / "inv.db"
    analyze(sqlite_db, PLANT, DNP3_A)
    analyze(pg_url, PLANT, DNP3_A)
    assert _comparable(devices(pg_url)) == _comparable(devices(sqlite_db))
    assert _comparable(connections(pg_url)) == _comparable(connections(sqlite_db))
    [again] = analyze(pg_url, PLANT)
    assert again.status == "duplicate"
