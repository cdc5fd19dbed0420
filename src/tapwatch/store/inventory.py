"""Merging one analysis run into the stored inventory, and reading the inventory back.

A run's addresses and connections are added to what is stored (counts summed, first/last
seen widened), then the devices of every touched MAC are re-planned from all of that
MAC's addresses, so a MAC that turns out to be a gateway later is corrected then.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tapwatch import clock
from tapwatch.decode import protocols
from tapwatch.decode.aggregate import AddressRecord, ConnectionRecord
from tapwatch.decode.devices import Observed, ip_str, mac_str, plan_devices
from tapwatch.store.models import Address, Connection, Device, IngestedFile

TRANSPORTS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
IN_CHUNK = 500


EPOCH = datetime(1970, 1, 1)


def ns_to_dt(ns: int) -> datetime:
    """Capture nanoseconds to a naive UTC datetime (microsecond precision)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def dt_to_ns(dt: datetime) -> int:
    return (dt.replace(tzinfo=None) - EPOCH) // timedelta(microseconds=1) * 1000


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=None).isoformat() + "Z"


def _utcnow() -> datetime:
    return clock.now().astimezone(UTC).replace(tzinfo=None)


def chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """Slices small enough for an SQL IN (...) list."""
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


@dataclass
class IngestStats:
    devices_new: int = 0
    devices_known: int = 0
    connections_new: int = 0
    connections_total: int = 0
    device_ids: set[int] = field(default_factory=set)  # devices this run touched
    new_devices: list[Device] = field(default_factory=list)  # devices this run created


# -- ingested files -----------------------------------------------------------------------


def candidates(session: Session, size: int, head_hash: str) -> list[IngestedFile]:
    """Files already ingested that might be this one (same size and first MiB)."""
    q = select(IngestedFile).where(IngestedFile.size == size, IngestedFile.head_hash == head_hash)
    return list(session.scalars(q))


def is_ingested(session: Session, content_hash: str) -> bool:
    q = select(IngestedFile.id).where(IngestedFile.content_hash == content_hash)
    return session.scalar(q) is not None


# -- merging a run --------------------------------------------------------------------------


def merge_address(row: Any, rec: AddressRecord) -> None:
    """Widen an address (a row, or the console's staged copy of one) by a run's record."""
    row.first_seen = min(row.first_seen, ns_to_dt(rec.first_ns))
    row.last_seen = max(row.last_seen, ns_to_dt(rec.last_ns))
    row.packets_sent += rec.packets_sent
    row.packets_received += rec.packets_received
    row.bytes_sent += rec.bytes_sent
    row.bytes_received += rec.bytes_received
    row.flags |= rec.flags
    row.vlans = sorted(set(row.vlans) | set(rec.vlans))
    row.protocols = sorted(set(row.protocols) | set(protocols.names_from_mask(rec.protocols)))


def _new_address(mac: str, ip: str, rec: AddressRecord) -> Address:
    return Address(
        mac=mac, ip=ip, device_id=None, role="device", flags=rec.flags,
        first_seen=ns_to_dt(rec.first_ns), last_seen=ns_to_dt(rec.last_ns),
        packets_sent=rec.packets_sent, packets_received=rec.packets_received,
        bytes_sent=rec.bytes_sent, bytes_received=rec.bytes_received,
        vlans=sorted(rec.vlans), protocols=protocols.names_from_mask(rec.protocols),
    )


def _load_addresses(session: Session, macs: set[str], ips_without_mac: set[str]) -> list[Address]:
    rows: list[Address] = []
    for part in chunks(sorted(macs)):
        rows += session.scalars(select(Address).where(Address.mac.in_(part)))
    for part in chunks(sorted(ips_without_mac)):
        rows += session.scalars(select(Address).where(Address.mac == "", Address.ip.in_(part)))
    return rows


def merge_run(
    session: Session,
    addresses: list[AddressRecord],
    connections: list[ConnectionRecord],
    sensor: str,
) -> IngestStats:
    """Add one run to the inventory (inside the caller's transaction)."""
    stats = IngestStats()
    now = _utcnow()
    keyed = {(mac_str(r.mac), ip_str(r.ip_hi, r.ip_lo)): r for r in addresses}
    macs = {m for m, _ in keyed if m}
    loose_ips = {ip for m, ip in keyed if not m}
    stored = {(a.mac, a.ip): a for a in _load_addresses(session, macs, loose_ips)}
    for key, rec in keyed.items():
        if key in stored:
            merge_address(stored[key], rec)
        else:
            row = _new_address(*key, rec)
            session.add(row)
            stored[key] = row

    by_mac: dict[str, list[Address]] = defaultdict(list)
    for a in stored.values():
        by_mac[a.mac].append(a)
    existing = _load_devices(session, macs, loose_ips)
    plans = []
    for mac, rows in by_mac.items():
        pairs = [(Observed(a.mac, a.ip, a.flags, dt_to_ns(a.first_seen), a.packets_sent), a)
                 for a in rows]
        plans.append((mac, rows, {id(o): a for o, a in pairs},
                      plan_devices(mac, [o for o, _ in pairs])))
    created = [Device(key_mac=mac, key_ip=key_ip, sensor=sensor, created_at=now, updated_at=now,
                      first_seen=now, last_seen=now)
               for mac, _, _, plan in plans for key_ip in plan.devices
               if (mac, key_ip) not in existing]
    session.add_all(created)
    existing.update({(d.key_mac, d.key_ip): d for d in created})
    stats.devices_new = len(created)
    stats.new_devices = created
    touched: list[Device] = []
    for mac, rows, row_of, plan in plans:
        for o in plan.remote:
            row_of[id(o)].role = "remote"
            row_of[id(o)].device = None
        for key_ip, members in plan.devices.items():
            device = existing[(mac, key_ip)]
            touched.append(device)
            member_rows = [row_of[id(o)] for o in members]
            for a in member_rows:
                a.role = "device"
                a.device = device
            # a gateway sent every frame of its MAC, routed or not; its own addresses are fewer
            traffic = rows if plan.is_gateway else member_rows
            _summarize(device, mac, key_ip, member_rows, traffic, plan.is_gateway, sensor, now)
    session.flush()  # devices first, then addresses with their device ids: one pass
    seen_ids = {d.id for d in touched}
    stats.devices_known = len(seen_ids) - stats.devices_new
    # devices of touched MACs that no longer hold any address (e.g. the MAC became a gateway)
    stats.device_ids = seen_ids
    orphans = [d for key, d in existing.items() if d.id not in seen_ids]
    for d in orphans:
        session.delete(d)
    session.flush()
    _merge_connections(session, connections, stats)
    _relink_connections(session, macs, loose_ips)
    return stats


def _load_devices(session: Session, macs: set[str], loose_ips: set[str]) -> dict[tuple[str, str], Device]:
    rows: list[Device] = []
    for part in chunks(sorted(macs)):
        rows += session.scalars(select(Device).where(Device.key_mac.in_(part)))
    for part in chunks(sorted(loose_ips)):
        rows += session.scalars(select(Device).where(Device.key_mac == "", Device.key_ip.in_(part)))
    return {(d.key_mac, d.key_ip): d for d in rows}


def _primary_ip(key_ip: str, rows: list[Address]) -> str | None:
    if key_ip:
        return key_ip
    ips = sorted((a for a in rows if a.ip), key=lambda a: (a.ip.startswith("fe80"), -a.packets_sent))
    return ips[0].ip if ips else None


def _summarize(device: Device, mac: str, key_ip: str, own: list[Address], traffic: list[Address],
               gateway: bool, sensor: str, now: datetime) -> None:
    """Recompute a device's totals: addresses from `own`, traffic from `traffic`."""
    device.mac = mac or None
    device.ip = _primary_ip(key_ip, own)
    device.is_gateway = gateway
    device.sensor = sensor
    device.first_seen = min(a.first_seen for a in traffic)
    device.last_seen = max(a.last_seen for a in traffic)
    device.packets_sent = sum(a.packets_sent for a in traffic)
    device.packets_received = sum(a.packets_received for a in traffic)
    device.bytes_sent = sum(a.bytes_sent for a in traffic)
    device.bytes_received = sum(a.bytes_received for a in traffic)
    device.vlans = sorted({v for a in traffic for v in a.vlans})
    device.protocols = sorted({p for a in own for p in a.protocols})
    device.updated_at = now


def upsert_for(session: Session):  # type: ignore[no-untyped-def]
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"unsupported database dialect {name}")


def _merge_connections(session: Session, records: list[ConnectionRecord], stats: IngestStats) -> None:
    if not records:
        return
    rows = []
    for c in records:
        rows.append({
            "client_mac": mac_str(c.client_mac), "client_ip": ip_str(c.client_hi, c.client_lo),
            "server_mac": mac_str(c.server_mac), "server_ip": ip_str(c.server_hi, c.server_lo),
            "transport": TRANSPORTS.get(c.ipproto, f"ip-{c.ipproto}"),
            "server_port": c.server_port, "protocol": protocols.NAMES[c.app],
            "first_seen": ns_to_dt(c.first_ns), "last_seen": ns_to_dt(c.last_ns),
            "packets_c2s": c.packets_c2s, "bytes_c2s": c.bytes_c2s,
            "packets_s2c": c.packets_s2c, "bytes_s2c": c.bytes_s2c,
        })
    before = session.scalar(select(func.count(Connection.id))) or 0
    insert = upsert_for(session)
    t = Connection.__table__
    stmt = insert(t)
    ex = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["client_mac", "client_ip", "server_mac", "server_ip", "transport",
                        "server_port"],
        set_={
            "first_seen": case((ex.first_seen < t.c.first_seen, ex.first_seen), else_=t.c.first_seen),
            "last_seen": case((ex.last_seen > t.c.last_seen, ex.last_seen), else_=t.c.last_seen),
            "packets_c2s": t.c.packets_c2s + ex.packets_c2s,
            "bytes_c2s": t.c.bytes_c2s + ex.bytes_c2s,
            "packets_s2c": t.c.packets_s2c + ex.packets_s2c,
            "bytes_s2c": t.c.bytes_s2c + ex.bytes_s2c,
        },
    )
    session.execute(stmt, rows)  # executemany: one statement, compiled once
    after = session.scalar(select(func.count(Connection.id))) or 0
    stats.connections_new = after - before
    stats.connections_total = after


def _relink_connections(session: Session, macs: set[str], loose_ips: set[str]) -> None:
    """Point connections of touched MACs at the devices their addresses now belong to."""
    for side in ("client", "server"):
        mac_col = getattr(Connection, f"{side}_mac")
        ip_col = getattr(Connection, f"{side}_ip")
        owner = (
            select(Address.device_id)
            .where(Address.mac == mac_col, Address.ip == ip_col)
            .scalar_subquery()
        )
        for part in chunks(sorted(macs)):
            session.execute(update(Connection).where(mac_col.in_(part))
                            .values({f"{side}_device_id": owner}))
        for part in chunks(sorted(loose_ips)):
            session.execute(update(Connection).where(and_(mac_col == "", ip_col.in_(part)))
                            .values({f"{side}_device_id": owner}))


def record_file(session: Session, *, content_hash: str, size: int, head_hash: str, path: str,
                sensor: str, packets: int, first_ns: int | None, last_ns: int | None) -> int:
    """Remember an analyzed file; returns its id."""
    row = IngestedFile(
        content_hash=content_hash, size=size, head_hash=head_hash, path=path, sensor=sensor,
        packets=packets, first_seen=ns_to_dt(first_ns) if first_ns is not None else None,
        last_seen=ns_to_dt(last_ns) if last_ns is not None else None, ingested_at=_utcnow(),
    )
    session.add(row)
    session.flush()
    return row.id


# -- reading ------------------------------------------------------------------------------

DEVICE_SORTS = {
    "id": Device.id, "ip": Device.ip, "mac": Device.mac, "last_seen": Device.last_seen,
    "first_seen": Device.first_seen, "packets": Device.packets_sent + Device.packets_received,
}


def list_devices(session: Session, sort: str = "id") -> list[Device]:
    q = select(Device).order_by(DEVICE_SORTS.get(sort, Device.id), Device.id)
    devices = list(session.scalars(q))
    if sort == "ip":  # numerically, IPv4 before IPv6, address-less last
        devices.sort(key=lambda d: (d.ip is None, ipaddress.ip_address(d.ip).version if d.ip else 0,
                                    ipaddress.ip_address(d.ip) if d.ip else 0))
    return devices


def device_addresses(session: Session, device_ids: Iterable[int]) -> dict[int, list[Address]]:
    out: dict[int, list[Address]] = defaultdict(list)
    ids = sorted(set(device_ids))
    for part in chunks(ids):
        for a in session.scalars(select(Address).where(Address.device_id.in_(part))):
            out[a.device_id].append(a)  # type: ignore[index]
    return out


def _ip_sort_key(ip: str) -> tuple[int, str]:
    return (0 if "." in ip else (2 if ip.startswith("fe80") else 1), ip)


def device_json(device: Device, addresses: list[Address]) -> dict[str, Any]:
    """The stable JSON contract of a device."""
    ips = sorted({a.ip for a in addresses if a.ip}, key=_ip_sort_key)
    return {
        "id": device.id,
        "mac": device.mac,
        "ip": device.ip,
        "ips": ips,
        "vlans": list(device.vlans),
        "first_seen": iso(device.first_seen),
        "last_seen": iso(device.last_seen),
        "packets_sent": device.packets_sent,
        "packets_received": device.packets_received,
        "bytes_sent": device.bytes_sent,
        "bytes_received": device.bytes_received,
        "protocols": list(device.protocols),
        "is_gateway": device.is_gateway,
        "sensor": device.sensor,
        "name": device.name,
        "vendor": device.vendor,
        "type": device.type,
        "class": device.device_class,
        "purdue_level": device.purdue_level,
        "serial": device.serial,
        "module": device.module,
        "rack_slot": device.rack_slot,
        "plc_mode": device.plc_mode,
        "model": device.model,
        "os": device.os,
        "firmware": device.firmware,
        "authorized": device.authorized,
        "new": device.is_new,
        "importance": device.importance,
        "programming_device": device.programming_device,
        "description": device.description,
        "location": device.location,
        "tags": list(device.tags or []),
        "site": device.site,
        "zone": device.zone,
        "endpoint_agent": device.endpoint_agent,
        "addresses": [
            {"ip": a.ip or None, "packets_sent": a.packets_sent, "packets_received": a.packets_received}
            for a in sorted(addresses, key=lambda a: _ip_sort_key(a.ip))
        ],
    }


def list_connections(session: Session) -> list[Connection]:
    q = select(Connection).order_by(Connection.first_seen, Connection.id)
    return list(session.scalars(q))


def connection_json(c: Connection) -> dict[str, Any]:
    return {
        "id": c.id,
        "client_device_id": c.client_device_id,
        "client_mac": c.client_mac or None,
        "client_ip": c.client_ip or None,
        "server_device_id": c.server_device_id,
        "server_mac": c.server_mac or None,
        "server_ip": c.server_ip or None,
        "transport": c.transport,
        "server_port": c.server_port,
        "protocol": c.protocol,
        "packets": c.packets_c2s + c.packets_s2c,
        "bytes": c.bytes_c2s + c.bytes_s2c,
        "packets_client_to_server": c.packets_c2s,
        "packets_server_to_client": c.packets_s2c,
        "bytes_client_to_server": c.bytes_c2s,
        "bytes_server_to_client": c.bytes_s2c,
        "first_seen": iso(c.first_seen),
        "last_seen": iso(c.last_seen),
    }
