"""Storing dissector evidence (facts, protocol errors) and reading it back per device."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from tapwatch.dissect.stage import DissectResults
from tapwatch.store.inventory import IN_CHUNK, iso, ns_to_dt, upsert_for
from tapwatch.store.models import Address, Fact, ProtocolError


def merge_facts(session: Session, results: DissectResults) -> set[tuple[str, str]]:
    """Add one run's facts and protocol errors; returns the addresses they concern."""
    rows = [
        {"mac": mac, "ip": ip, "attribute": attr, "value": value, "source": source,
         "confidence": st.confidence, "count": st.count,
         "first_seen": ns_to_dt(st.first_ns), "last_seen": ns_to_dt(st.last_ns)}
        for (mac, ip, attr, value, source), st in results.facts.items()
    ]
    insert = upsert_for(session)
    t = Fact.__table__
    for i in range(0, len(rows), IN_CHUNK):
        stmt = insert(t).values(rows[i : i + IN_CHUNK])
        ex = stmt.excluded
        session.execute(stmt.on_conflict_do_update(
            index_elements=["mac", "ip", "attribute", "value", "source"],
            set_={
                "count": t.c.count + ex.count,
                "confidence": case((ex.confidence > t.c.confidence, ex.confidence),
                                   else_=t.c.confidence),
                "first_seen": case((ex.first_seen < t.c.first_seen, ex.first_seen),
                                   else_=t.c.first_seen),
                "last_seen": case((ex.last_seen > t.c.last_seen, ex.last_seen), else_=t.c.last_seen),
            },
        ))
    errors = [{"mac": mac, "ip": ip, "protocol": proto, "count": n, "last_reason": reason[:255]}
              for (mac, ip, proto), (n, reason) in results.errors.items()]
    e = ProtocolError.__table__
    for i in range(0, len(errors), IN_CHUNK):
        stmt = insert(e).values(errors[i : i + IN_CHUNK])
        session.execute(stmt.on_conflict_do_update(
            index_elements=["mac", "ip", "protocol"],
            set_={"count": e.c.count + stmt.excluded.count, "last_reason": stmt.excluded.last_reason},
        ))
    return {(k[0], k[1]) for k in results.facts} | {(k[0], k[1]) for k in results.errors}


def facts_of_devices(session: Session, device_ids: Iterable[int]) -> dict[int, list[Fact]]:
    """Every fact of every address of the given devices."""
    out: dict[int, list[Fact]] = defaultdict(list)
    ids = sorted(set(device_ids))
    for i in range(0, len(ids), IN_CHUNK):
        q = (select(Address.device_id, Fact)
             .join(Fact, (Fact.mac == Address.mac) & (Fact.ip == Address.ip))
             .where(Address.device_id.in_(ids[i : i + IN_CHUNK])))
        for device_id, fact in session.execute(q):
            if device_id is not None:
                out[device_id].append(fact)
    for facts in out.values():
        facts.sort(key=lambda f: (f.attribute, -f.confidence, -f.count, f.value))
    return out


def errors_of_devices(session: Session, device_ids: Iterable[int]) -> dict[int, list[ProtocolError]]:
    out: dict[int, list[ProtocolError]] = defaultdict(list)
    ids = sorted(set(device_ids))
    for i in range(0, len(ids), IN_CHUNK):
        q = (select(Address.device_id, ProtocolError)
             .join(ProtocolError, (ProtocolError.mac == Address.mac) & (ProtocolError.ip == Address.ip))
             .where(Address.device_id.in_(ids[i : i + IN_CHUNK])))
        for device_id, err in session.execute(q):
            if device_id is not None:
                out[device_id].append(err)
    return out


def device_ids_of(session: Session, addresses: set[tuple[str, str]]) -> set[int]:
    """Devices that own any of these (mac, ip) addresses."""
    found: set[int] = set()
    by_mac: dict[str, set[str]] = defaultdict(set)
    for mac, ip in addresses:
        by_mac[mac].add(ip)
    for mac, ips in by_mac.items():
        q = select(Address.device_id, Address.ip).where(Address.mac == mac)
        found |= {d for d, ip in session.execute(q) if d is not None and ip in ips}
    return found


def fact_json(f: Fact) -> dict[str, Any]:
    return {
        "attribute": f.attribute, "value": f.value, "source": f.source,
        "confidence": round(f.confidence, 3), "count": f.count,
        "first_seen": iso(f.first_seen), "last_seen": iso(f.last_seen),
        "address": {"mac": f.mac or None, "ip": f.ip or None},
    }
