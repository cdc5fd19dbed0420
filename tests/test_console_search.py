"""The inventory's free-text search and paging, on SQLite and on the real PostgreSQL server.

A store of a few hundred made-up devices whose names, addresses, vendors, models and OS
overlap in known ways; every answer is checked against the same search done in Python.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert, select, text

from inventory_helpers import CAPTURES, analyze
from tapwatch.console import auth, queries
from tapwatch.console.app import create_app
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import SEARCH_COLUMNS, Address, Device

N = 640
VENDORS = ["ABB", "Cisco", "HP", "Rockwell Automation", "Schneider Electric", "Siemens", None]
MODELS = ["S7-1500 CPU 1516-3", "ControlLogix 1756-L83E", "LaserJet M507", "Modicon M580", None]
OSES = ["Windows 10", "Windows 11", "Ubuntu 22.04", None]
NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def device_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    devices, addresses = [], []
    for i in range(N):
        ip = None if i % 50 == 7 else f"10.20.{i // 100}.{i % 100 + 1}"  # 10.20.0.x - 10.20.6.x
        mac = f"00:1b:1b:00:{i >> 8:02x}:{i & 255:02x}"
        name = None if i % 9 == 0 else f"line{i % 7}-{'plc' if i % 3 else 'hmi'}-{i:04d}"
        if i == 5:
            name = "tank_50%-level"  # LIKE's wildcards, to be matched as plain text
        last = NOW - timedelta(minutes=(i * 37) % 5000)
        devices.append({
            "id": i + 1, "key_mac": mac, "key_ip": ip or "", "mac": mac, "ip": ip, "is_gateway": False,
            "sensor": "s", "first_seen": last - timedelta(days=3), "last_seen": last,
            "packets_sent": (i * 7919) % 1000, "packets_received": i % 13, "bytes_sent": 0,
            "bytes_received": 0, "vlans": [], "protocols": ["s7comm"] if i % 2 else [], "name": name,
            "vendor": VENDORS[i % len(VENDORS)], "type": "plc" if i % 3 else "hmi",
            "device_class": "OT", "purdue_level": 1, "serial": None, "module": None, "rack_slot": None,
            "plc_mode": None, "overrides": {}, "authorized": i % 4 != 0, "is_new": False,
            "importance": "normal", "programming_device": False, "description": None, "location": None,
            "tags": [], "site": f"site-{i % 3}", "zone": None, "endpoint_agent": None,
            "model": MODELS[i % len(MODELS)], "os": OSES[i % len(OSES)], "firmware": None,
            "created_at": last, "updated_at": last,
        })
        for a_ip in [ip or ""] + ([f"fe80::{i:x}"] if i % 10 == 3 else []):
            addresses.append({"mac": mac, "ip": a_ip, "device_id": i + 1, "role": "device", "flags": 0,
                              "first_seen": last, "last_seen": last, "packets_sent": 1, "packets_received": 2,
                              "bytes_sent": 0, "bytes_received": 0, "vlans": [], "protocols": []})
    return devices, addresses


DEVICES, ADDRESSES = device_rows()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):  # type: ignore[no-untyped-def]
    """(engine, client, auth headers) on a fresh store of the made-up devices."""
    url = str(tmp_path / "s.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = open_engine(url)
    with engine.begin() as c:
        c.execute(insert(Device.__table__), DEVICES)
        c.execute(insert(Address.__table__), ADDRESSES)
    with sessions(engine).begin() as s:
        user = auth.add_user(s, "reader", "correct horse battery", "security_reader", "test")
        token = auth.issue_token(s, user, "test", "test")
    yield engine, TestClient(create_app(engine)), {"Authorization": f"Bearer {token}"}
    engine.dispose()


def matches(term: str) -> list[dict[str, Any]]:
    """The search done in Python: the text anywhere in one of the searched columns, any case."""
    t = term.strip().lower()
    return [d for d in DEVICES if any(t in (d[c] or "").lower() for c in SEARCH_COLUMNS)]


def in_order(rows: list[dict[str, Any]], sort: str, order: str) -> list[int]:
    """Ids as the console sorts them: the key (missing values last), then id."""
    key = {"id": lambda d: d["id"], "last_seen": lambda d: d["last_seen"],
           "packets": lambda d: d["packets_sent"] + d["packets_received"],
           "vendor": lambda d: d["vendor"]}[sort]
    by_id = sorted(rows, key=lambda d: d["id"])
    present = sorted((d for d in by_id if key(d) is not None), key=key, reverse=order == "desc")
    return [d["id"] for d in present] + [d["id"] for d in by_id if key(d) is None]


TERMS = ["10.20.3.", "0.20.1", "siem", "HP", "s7-1500", "WINDOWS 1", "hmi-01", "_50%", "00:1b:1b:00:01:0",
         "fe80::", "no such thing", "%", "_"]


@pytest.mark.parametrize("sort,order", [("id", "asc"), ("last_seen", "desc"), ("packets", "desc"),
                                        ("vendor", "asc")])
def test_search_finds_exactly_the_devices_holding_the_text(store, sort, order) -> None:  # type: ignore[no-untyped-def]
    engine, c, hdr = store
    for term in TERMS:
        want = in_order(matches(term), sort, order)
        for page in (1, 2, 4):
            r = c.get("/api/v1/devices", headers=hdr,
                      params={"q": term, "sort": sort, "order": order, "page": page, "page_size": 40})
            assert r.status_code == 200, r.text
            body = r.json()
            assert [d["id"] for d in body["devices"]] == want[(page - 1) * 40:page * 40], (term, page)
            assert (body["total"], body["total_exact"]) == (len(want), True), term


def test_a_match_lists_every_address_of_the_device(store) -> None:  # type: ignore[no-untyped-def]
    """Search covers the device's own columns; its other addresses come with it under `ips`."""
    _, c, hdr = store
    body = c.get("/api/v1/devices", headers=hdr, params={"q": "10.20.0.4", "page_size": 500}).json()
    assert [d["ip"] for d in body["devices"]] == ["10.20.0.4", "10.20.0.40", "10.20.0.41", "10.20.0.42",
                                                  "10.20.0.43", "10.20.0.44", "10.20.0.45", "10.20.0.46",
                                                  "10.20.0.47", "10.20.0.48", "10.20.0.49"]
    assert body["devices"][0]["ips"] == ["10.20.0.4", "fe80::3"]


def test_search_with_other_filters_and_group_by(store) -> None:  # type: ignore[no-untyped-def]
    _, c, hdr = store
    want = [d for d in matches("plc") if d["site"] == "site-1" and d["authorized"]]
    body = c.get("/api/v1/devices", headers=hdr, params={
        "q": "plc", "site": "site-1", "authorized": "true", "sort": "last_seen", "order": "desc",
        "page_size": 500}).json()
    assert [d["id"] for d in body["devices"]] == in_order(want, "last_seen", "desc")
    page = c.get("/devices", headers=hdr, params={"q": "siemens", "group": "type", "page_size": 500})
    assert page.status_code == 200
    shown = [int(i) for i in re.findall(r'<a href="/devices/(\d+)">\1</a>', page.text)]
    want = matches("siemens")
    assert shown == [d["id"] for d in sorted(want, key=lambda d: (d["type"], -d["last_seen"].timestamp(),
                                                                    d["id"]))]


def test_a_large_search_stops_counting_and_says_so(store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(queries, "SEARCH_COUNT_CAP", 100)
    _, c, hdr = store
    want = in_order(matches("10.20."), "last_seen", "desc")
    assert len(want) > 300

    def get(page: int) -> dict[str, Any]:
        return c.get("/api/v1/devices", headers=hdr, params={
            "q": "10.20.", "sort": "last_seen", "order": "desc", "page": page, "page_size": 30}).json()

    first = get(1)
    assert (first["total"], first["total_exact"]) == (100, False)  # more than 100 match
    assert [d["id"] for d in first["devices"]] == want[:30]
    deep = get(6)  # past the cap: counted as far as that page reaches
    assert (deep["total"], deep["total_exact"]) == (180, False)
    assert [d["id"] for d in deep["devices"]] == want[150:180]
    last = get(len(want) // 30 + 1)
    assert (last["total"], last["total_exact"]) == (len(want), True)
    assert [d["id"] for d in last["devices"]] == want[len(want) // 30 * 30:]
    n = len(matches("hmi-01"))
    assert 10 < n < 100
    few = c.get("/api/v1/devices", headers=hdr, params={"q": "hmi-01"}).json()
    assert (few["total"], few["total_exact"]) == (n, True)

    html = c.get("/devices", headers=hdr, params={"q": "10.20.", "page": 2, "page_size": 25}).text
    assert "more than 100" in html and 'rel="next"' in html and "last »" not in html
    exact = c.get("/devices", headers=hdr, params={"q": "hmi-01", "page_size": 10}).text
    assert f"{n} total · page 1 of {-(-n // 10)}" in exact and "more than" not in exact


def test_listing_rows_are_the_device_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The list's rows, read without ORM objects, say what the device's own page says."""
    db = tmp_path / "real.db"
    analyze(db, CAPTURES / "icsnpp-s7comm__s7ident.pcap", CAPTURES / "iti-ics-tools__EIP-SoftwareUpload.pcap")
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        user = auth.add_user(s, "reader", "correct horse battery", "security_reader", "test")
        hdr = {"Authorization": f"Bearer {auth.issue_token(s, user, 'test', 'test')}"}
    c = TestClient(create_app(engine))
    listed = c.get("/api/v1/devices", headers=hdr, params={"page_size": 500}).json()["devices"]
    assert len(listed) >= 5 and any(len(d["ips"]) > 1 or d["vendor"] for d in listed)
    for d in listed:
        detail = c.get(f"/api/v1/devices/{d['id']}", headers=hdr).json()
        assert {k: v for k, v in detail.items() if k not in ("overrides", "facts", "protocol_errors")} == d
    engine.dispose()


# -- PostgreSQL: the trigram index ----------------------------------------------------------


def test_postgresql_search_is_answered_by_the_trigram_index(pg_url) -> None:  # type: ignore[no-untyped-def]
    """The search's expressions are the index's: were they to drift apart (say to ILIKE), the
    index would silently stop serving it."""
    engine = open_engine(pg_url)
    try:
        with engine.begin() as c:
            c.execute(insert(Device.__table__), DEVICES)
            c.execute(text("ANALYZE devices"))
            c.execute(text("SET LOCAL enable_seqscan = off"))  # a few hundred rows: make it choose
            c.execute(text("SET LOCAL enable_indexscan = off"))  # nor walk the primary key
            for term in ("10.20.3.", "siemens", "s7-1500", "Windows 11"):
                q = select(Device.id).where(*queries.DeviceFilter(q=term).conditions())
                compiled = q.compile(dialect=engine.dialect)
                plan = "\n".join(r[0] for r in c.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params))
                assert plan.count("Bitmap Index Scan on ix_devices_search") == len(SEARCH_COLUMNS), plan
    finally:
        engine.dispose()


def test_postgresql_without_pg_trgm_still_searches(pg_url) -> None:  # type: ignore[no-untyped-def]
    """A role that may not create the extension, in a database without it: no index, same answers."""
    base = pg_url.split("?")[0]
    tag = uuid.uuid4().hex[:10]
    role, db = f"tw_plain_{tag}", f"tw_noext_{tag}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'plain-pw'"))
        c.execute(text(f"CREATE DATABASE {db}"))
    try:
        owner = create_engine(base.rsplit("/", 1)[0] + f"/{db}", isolation_level="AUTOCOMMIT")
        with owner.connect() as c:
            c.execute(text(f"CREATE SCHEMA inv AUTHORIZATION {role}"))
        owner.dispose()
        server = re.sub(r"//[^@]*@", f"//{role}:plain-pw@", base.rsplit("/", 1)[0])
        url = f"{server}/{db}?options=-csearch_path%3Dinv"
        engine = open_engine(url)
        try:
            with engine.begin() as c:
                def count(sql: str) -> int:
                    return int(c.execute(text(sql)).scalar() or 0)

                assert count("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'") == 0
                assert count("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_devices_search'") == 0
                assert "0012x" in c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
                c.execute(insert(Device.__table__), DEVICES)
            with sessions(engine).begin() as s:
                found = queries.page_devices(s, queries.DeviceFilter(q="WINDOWS 1"), "id", "asc", 1, 500)
                assert [r.id for r in found.rows] == in_order(matches("WINDOWS 1"), "id", "asc")
        finally:
            engine.dispose()
    finally:
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE {db} WITH (FORCE)"))
            c.execute(text(f"DROP ROLE {role}"))
        admin.dispose()
