"""Storing dissector evidence (facts, events, protocol errors) and reading it back."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import case, insert, select
from sqlalchemy.orm import Session

from tapwatch.dissect.stage import DissectResults
from tapwatch.store.inventory import (
    chunks,
    device_addresses,
    device_json,
    iso,
    list_devices,
    ns_to_dt,
    upsert_for,
)
from tapwatch.store.models import Address, Event, Fact, ProtocolError


def merge_facts(session: Session, results: DissectResults) -> set[tuple[str, str]]:
    """Add one run's facts and protocol errors; returns the addresses they concern."""
    rekey = _mac_only_targets(session, {mac for (mac, ip, *_rest) in results.facts if mac and not ip})
    merged: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for (mac, ip, attr, value, source), st in results.facts.items():
        key = (mac, ip or rekey.get(mac, ""), attr, value, source)
        row = merged.get(key)
        if row is None:
            merged[key] = {"mac": key[0], "ip": key[1], "attribute": attr, "value": value,
                           "source": source, "confidence": st.confidence, "count": st.count,
                           "first_seen": ns_to_dt(st.first_ns), "last_seen": ns_to_dt(st.last_ns)}
        else:  # a bare-MAC fact re-keyed onto an address that has the same fact
            row["count"] += st.count
            row["confidence"] = max(row["confidence"], st.confidence)
            row["first_seen"] = min(row["first_seen"], ns_to_dt(st.first_ns))
            row["last_seen"] = max(row["last_seen"], ns_to_dt(st.last_ns))
    rows = list(merged.values())
    insert = upsert_for(session)
    t = Fact.__table__
    stmt = insert(t)
    ex = stmt.excluded
    if rows:
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
        ), rows)
    errors = [{"mac": mac, "ip": ip, "protocol": proto, "count": n, "last_reason": reason[:255]}
              for (mac, ip, proto), (n, reason, *_) in results.errors.items()]
    if errors:
        e = ProtocolError.__table__
        stmt = insert(e)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["mac", "ip", "protocol"],
            set_={"count": e.c.count + stmt.excluded.count, "last_reason": stmt.excluded.last_reason},
        ), errors)
    return {(k[0], k[1]) for k in merged} | {(k[0], k[1]) for k in results.errors}


def _mac_only_targets(session: Session, macs: set[str]) -> dict[str, str]:
    """For facts about a bare MAC whose (mac, "") address does not exist: the IP of the
    address that makes that MAC's main device, so the fact lands on a device."""
    bare: set[str] = set()  # MACs that have their own (mac, "") address: nothing to re-key
    best: dict[str, tuple[int, str]] = {}  # mac -> (packets sent, IP) of its busiest address
    for part in chunks(sorted(macs)):
        q = select(Address.mac, Address.ip, Address.packets_sent).where(
            Address.mac.in_(part), Address.device_id.is_not(None))
        for mac, ip, sent in session.execute(q):
            if ip == "":
                bare.add(mac)
            elif mac not in best or (sent, ip) > best[mac]:
                best[mac] = (sent, ip)
    return {mac: ip for mac, (_sent, ip) in best.items() if mac not in bare}


def _of_devices(session: Session, model: type[Fact] | type[ProtocolError],
                device_ids: Iterable[int]) -> dict[int, list[Any]]:
    """Rows of an address-keyed table (facts, protocol errors) per device owning the address,
    as read-only rows with the model's attributes (no ORM object per row: a large capture's
    devices have thousands of facts)."""
    out: dict[int, list[Any]] = defaultdict(list)
    table = model.__table__
    for part in chunks(sorted(set(device_ids))):
        q = (select(Address.device_id.label("owner_id"), *table.columns)
             .join(table, (table.c.mac == Address.mac) & (table.c.ip == Address.ip))
             .where(Address.device_id.in_(part)))
        for row in session.execute(q):
            if row.owner_id is not None:
                out[row.owner_id].append(row)
    return out


def facts_of_devices(session: Session, device_ids: Iterable[int]) -> dict[int, list[Any]]:
    """Every fact of every address of the given devices (rows with Fact's attributes), best
    first per attribute."""
    out = _of_devices(session, Fact, device_ids)
    for facts in out.values():
        facts.sort(key=lambda f: (f.attribute, -f.confidence, -f.count, f.value))
    return out


def errors_of_devices(session: Session, device_ids: Iterable[int]) -> dict[int, list[Any]]:
    return _of_devices(session, ProtocolError, device_ids)


def device_ids_of(session: Session, addresses: set[tuple[str, str]]) -> set[int]:
    """Devices that own any of these (mac, ip) addresses."""
    found: set[int] = set()
    for part in chunks(sorted({mac for mac, _ip in addresses})):  # one query per few hundred MACs
        q = select(Address.device_id, Address.mac, Address.ip).where(Address.mac.in_(part))
        found |= {d for d, mac, ip in session.execute(q) if d is not None and (mac, ip) in addresses}
    return found


def fact_json(f: Fact) -> dict[str, Any]:
    return {
        "attribute": f.attribute, "value": f.value, "source": f.source,
        "confidence": round(f.confidence, 3), "count": f.count,
        "first_seen": iso(f.first_seen), "last_seen": iso(f.last_seen),
        "address": {"mac": f.mac or None, "ip": f.ip or None},
    }


def store_events(session: Session, results: DissectResults, file_id: int | None) -> int:
    """Store one run's events, linked to the devices of their addresses; returns how many."""
    if not results.events:
        return 0
    keys = {e.src for e in results.events} | {e.dst for e in results.events}
    owner = _owners(session, keys)
    session.execute(insert(Event), [  # Core executemany: no ORM object per event
        {"ts": ns_to_dt(e.ts_ns), "kind": e.kind, "protocol": e.protocol, "src_mac": e.src[0],
         "src_ip": e.src[1], "dst_mac": e.dst[0], "dst_ip": e.dst[1],
         "src_device_id": owner.get(e.src), "dst_device_id": owner.get(e.dst), "file_id": file_id,
         "packet": e.packet, "details": _jsonable(e.details), "count": e.count,
         "last_ts": ns_to_dt(max(e.last_ns, e.ts_ns))}
        for e in results.events
    ])
    return len(results.events)


def _owners(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(mac, ip) -> device id; an address without MAC falls back to the device of its IP."""
    out: dict[tuple[str, str], int] = {}
    by_ip: dict[str, set[int]] = defaultdict(set)
    ips = sorted({ip for _, ip in keys if ip})
    macs = sorted({mac for mac, _ in keys if mac})
    for part in chunks(macs):
        q = select(Address.mac, Address.ip, Address.device_id).where(Address.mac.in_(part))
        for mac, ip, device_id in session.execute(q):
            if device_id is not None:
                out[(mac, ip)] = device_id
    for part in chunks(ips):
        by_ip_q = select(Address.ip, Address.device_id).where(Address.ip.in_(part))
        for ip, device_id in session.execute(by_ip_q):
            if device_id is not None:
                by_ip[ip].add(device_id)
    for mac, ip in keys:
        if (mac, ip) not in out and len(by_ip.get(ip, ())) == 1:
            out[(mac, ip)] = next(iter(by_ip[ip]))
    return out


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.hex() if isinstance(v, bytes) else v if isinstance(v, (int, float, str, bool))
                or v is None else str(v)) for k, v in details.items()}


def list_events(session: Session, kind: str | None = None, limit: int | None = None) -> list[Event]:
    q = select(Event).order_by(Event.ts, Event.id)
    if kind:
        q = q.where(Event.kind == kind)
    if limit:
        q = q.limit(limit)
    return list(session.scalars(q))


def event_json(e: Event) -> dict[str, Any]:
    return {
        "id": e.id, "time": iso(e.ts), "type": e.kind, "protocol": e.protocol,
        "source": {"device_id": e.src_device_id, "mac": e.src_mac or None, "ip": e.src_ip or None},
        "destination": {"device_id": e.dst_device_id, "mac": e.dst_mac or None,
                        "ip": e.dst_ip or None},
        "packet": e.packet, "file_id": e.file_id, "details": e.details,
        "count": e.count, "last_time": iso(e.last_ts or e.ts),
    }


def devices_json(session: Session, sort: str = "id", with_facts: bool = False) -> list[dict[str, Any]]:
    """Every device in the JSON contract of `tapwatch devices list --format json [--facts]`."""
    devices = list_devices(session, sort)
    ids = [d.id for d in devices]
    addresses = device_addresses(session, ids)
    rows = [device_json(d, addresses.get(d.id, [])) for d in devices]
    if with_facts:
        by_device = facts_of_devices(session, ids)
        for row in rows:
            row["facts"] = [fact_json(f) for f in by_device.get(row["id"], [])]
    return rows
