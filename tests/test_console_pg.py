"""The console API on the real PostgreSQL server: the same calls as on SQLite must hold."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from inventory_helpers import CAPTURES, analyze
from tapwatch.console import auth
from tapwatch.console.app import create_app
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import Device


def test_console_api_on_postgresql(pg_url) -> None:  # type: ignore[no-untyped-def]
    analyze(pg_url, CAPTURES / "icsnpp-modbus__modbus_example.pcap",
            CAPTURES / "iti-ics-tools__EIP-SoftwareUpload.pcap")
    engine = open_engine(pg_url)
    try:
        with sessions(engine).begin() as s:
            owner = auth.add_user(s, "owner", "a long password", "owner", "test")
            token = auth.issue_token(s, owner, "pg", "test")
            created = auth.ensure_owner(s)
        assert created is None  # an owner exists: the first-start owner is not made twice
        c = TestClient(create_app(engine))
        hdr = {"Authorization": f"Bearer {token}"}
        listing = c.get("/api/v1/devices?sort=packets&order=desc&page_size=2", headers=hdr).json()
        assert listing["total"] >= 5 and len(listing["devices"]) == 2
        totals = [d["packets_sent"] + d["packets_received"] for d in listing["devices"]]
        assert totals == sorted(totals, reverse=True)
        plcs = c.get("/api/v1/devices", params={"type": "plc", "authorized": "true", "q": "192.168"},
                     headers=hdr).json()
        assert [d["ip"] for d in plcs["devices"]] == ["192.168.10.120"]
        assert c.get("/api/v1/devices", params={"q": "'; drop table devices; --"},
                     headers=hdr).json()["total"] == 0
        plc = plcs["devices"][0]["id"]
        r = c.patch(f"/api/v1/devices/{plc}", headers=hdr,
                    json={"name": "Line 1 PLC", "purdue_level": 2, "tags": ["line1"], "authorized": False})
        assert r.status_code == 200, r.text
        assert (r.json()["device"]["name"], r.json()["device"]["purdue_level"]) == ("Line 1 PLC", 2)
        with sessions(engine)() as s:
            ews = s.scalar(select(Device.id).where(Device.ip == "192.168.10.105"))
            arp_only = s.scalar(select(Device.id).where(Device.ip == "192.168.10.22"))
        merged = c.post("/api/v1/devices/merge", headers=hdr, json={"ids": [ews, arp_only]})
        assert merged.status_code == 200 and "192.168.10.22" in merged.json()["device"]["ips"]
        gone = c.delete(f"/api/v1/devices/{ews}", params={"reason": "lab bench"}, headers=hdr)
        assert gone.status_code == 200
        csv_text = c.get("/api/v1/devices/export.csv?authorized=false", headers=hdr).text
        assert "Line 1 PLC" in csv_text
        actions = [e["action"] for e in c.get("/api/v1/audit", headers=hdr).json()["entries"]]
        assert actions[:3] == ["device.delete", "device.merge", "device.edit"]
    finally:
        engine.dispose()
