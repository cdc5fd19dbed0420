"""Merging sensors' address and connection batches into the console's inventory, set by set.

`store.inventory.merge_run` serves one analysis run with ORM objects, row by row; a console
gathering millions of rows from many sensors cannot afford that. This module builds the
same inventory (the tests compare the two field by field) with a few statements per batch:
the rows go into a temporary table (by COPY on PostgreSQL, executemany on SQLite) and from
there into the inventory with INSERT … SELECT … ON CONFLICT, in key order, so concurrent
batches lock rows in one order.

Connections add their counters inside the upsert, so connection batches may run side by
side. Planning devices needs every address of a MAC (one that turns out to be a gateway
changes its devices), so the caller runs address batches one at a time. Connections are
linked to their endpoints' devices when inserted, and relinked whenever an address changes
device; a connection's device ids thus always equal its endpoints' addresses'. Devices
whose identity may have changed are queued for the end of the sensor's flush.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    MetaData,
    Select,
    Table,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tapwatch.decode import protocols
from tapwatch.decode.aggregate import AddressRecord, ConnectionRecord
from tapwatch.decode.devices import Observed, ip_str, mac_str, plan_devices
from tapwatch.store.console_models import utcnow
from tapwatch.store.inventory import TRANSPORTS, chunks, dt_to_ns, merge_address, ns_to_dt
from tapwatch.store.models import Address, Connection, Device
from tapwatch.store.sensor_models import IdentityPending

ADDRESSES: Table = Address.__table__  # type: ignore[assignment]
CONNECTIONS: Table = Connection.__table__  # type: ignore[assignment]
DEVICES: Table = Device.__table__  # type: ignore[assignment]
PENDING: Table = IdentityPending.__table__  # type: ignore[assignment]
ADDRESS_KEY = ("mac", "ip")
DEVICE_KEY = ("key_mac", "key_ip")
CONNECTION_KEY = ("client_mac", "client_ip", "server_mac", "server_ip", "transport", "server_port")
ADDRESS_COLUMNS = ("mac", "ip", "device_id", "role", "flags", "first_seen", "last_seen", "packets_sent",
                   "packets_received", "bytes_sent", "bytes_received", "vlans", "protocols")
# what a device's addresses decide; everything else on a device belongs to identification or people
SUMMARY = ("mac", "ip", "is_gateway", "sensor", "first_seen", "last_seen", "packets_sent", "packets_received",
           "bytes_sent", "bytes_received", "vlans", "protocols", "updated_at")
COUNTERS = ("packets_sent", "packets_received", "bytes_sent", "bytes_received")
CONNECTION_COUNTERS = ("packets_c2s", "bytes_c2s", "packets_s2c", "bytes_s2c")


def _pg(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


# -- set-based statements -------------------------------------------------------------------


_STAGES: dict[tuple[str, tuple[str, ...]], Table] = {}


def _stage(s: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A temporary table holding `rows` (tuples in `columns` order) to join and upsert from.

    PostgreSQL receives the rows by COPY (the server's fast path); SQLite by executemany.
    The table lives as long as the connection and is emptied before each use.
    """
    columns = tuple(columns)
    stage = _STAGES.get((table.name, columns))
    if stage is None:
        name = f"tw_stage_{table.name}_{zlib.crc32(','.join(columns).encode()):08x}"
        stage = Table(name, MetaData(), *(Column(c, table.c[c].type) for c in columns))
        _STAGES[(table.name, columns)] = stage
    listed = ", ".join(columns)
    if _pg(s):
        s.execute(text(f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage.name} ON COMMIT DELETE ROWS AS "
                       f"SELECT {listed} FROM {table.name} WITH NO DATA"))
        s.execute(delete(stage))
        dbapi = s.connection().connection.driver_connection
        assert dbapi is not None
        json_at = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
        with dbapi.cursor() as cur, cur.copy(f"COPY {stage.name} ({listed}) FROM STDIN") as copy:
            for row in rows:
                if json_at:
                    row = list(row)
                    for i in json_at:
                        row[i] = json.dumps(row[i])
                copy.write_row(row)
    else:
        s.execute(text(f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage.name} AS "
                       f"SELECT {listed} FROM {table.name} WHERE 0"))
        s.execute(delete(stage))
        s.execute(insert(stage), [dict(zip(columns, r, strict=True)) for r in rows])
    return stage


def _upsert(s: Session, table: Table, source: Select[Any], columns: Sequence[str], key: Sequence[str],
            changes: Callable[[Any], dict[str, Any]], returning: Sequence[Any] = ()) -> list[Any]:
    """INSERT … SELECT `source` in key order, applying `changes(excluded)` where the key exists;
    the `returning` columns of every row written."""
    dialect = postgresql if _pg(s) else sqlite
    stmt = dialect.insert(table).from_select(list(columns), source.order_by(*(source.selected_columns[k]
                                                                             for k in key)))
    upsert = stmt.on_conflict_do_update(index_elements=list(key), set_=changes(stmt.excluded))
    if returning:
        return list(s.execute(upsert.returning(*returning)))
    s.execute(upsert)
    return []


def _insert_new(s: Session, table: Table, source: Select[Any], key: Sequence[str]) -> None:
    """INSERT … SELECT `source` in key order, skipping rows whose key exists."""
    dialect = postgresql if _pg(s) else sqlite
    ordered = source.order_by(*(source.selected_columns[k] for k in key))
    s.execute(dialect.insert(table).from_select(list(key), ordered).on_conflict_do_nothing())


def _select_in(s: Session, query: Select[Any], col: ColumnElement[Any], values: Iterable[Any]) -> list[Any]:
    """Rows of `query` whose `col` is one of `values`: one array parameter, or IN lists on SQLite."""
    values = sorted(set(values))
    if not values:
        return []
    if _pg(s):
        array = bindparam(None, values, type_=postgresql.ARRAY(col.type))
        return list(s.execute(query.where(col == any_(array))))
    out: list[Any] = []
    for part in chunks(values):
        out += s.execute(query.where(col.in_(part)))
    return out


def _defaults(table: Table, given: Iterable[str]) -> dict[str, Any]:
    """Python-side column defaults of the columns not given (INSERT … SELECT skips them)."""
    out = {}
    for c in table.columns:
        default = c.default
        if c.name in given or c.primary_key or default is None:
            continue
        if default.is_scalar:
            out[c.name] = default.arg  # type: ignore[attr-defined]
        elif default.is_callable:
            out[c.name] = default.arg(None)  # type: ignore[attr-defined]
    return out


# -- connections ----------------------------------------------------------------------------


class _Names:
    """MAC and IP texts, each computed once per process while it fits (endpoints repeat a lot,
    across the batches of a sensor too)."""

    LIMIT = 1 << 18

    def __init__(self) -> None:
        self.macs: dict[int, str] = {}
        self.ips: dict[tuple[int, int], str] = {}

    def mac(self, value: int) -> str:
        text = self.macs.get(value)
        if text is None:
            if len(self.macs) >= self.LIMIT:
                self.macs.clear()
            text = self.macs[value] = mac_str(value)
        return text

    def ip(self, hi: int, lo: int) -> str:
        text = self.ips.get((hi, lo))
        if text is None:
            if len(self.ips) >= self.LIMIT:
                self.ips.clear()
            text = self.ips[(hi, lo)] = ip_str(hi, lo)
        return text


NAMES = _Names()  # console threads share it: dict reads and writes are atomic
CONNECTION_IN = (*CONNECTION_KEY, "protocol", "first_seen", "last_seen", *CONNECTION_COUNTERS)


def connection_rows(records: list[ConnectionRecord]) -> list[list[Any]]:
    """Stored form of a batch's connections (CONNECTION_IN order), one row per key.

    Pure Python: the caller shapes the rows before it takes any lock.
    """
    mac, ip = NAMES.mac, NAMES.ip
    rows: dict[tuple[Any, ...], list[Any]] = {}
    for c in records:
        key = (mac(c.client_mac), ip(c.client_hi, c.client_lo), mac(c.server_mac),
               ip(c.server_hi, c.server_lo), TRANSPORTS.get(c.ipproto, f"ip-{c.ipproto}"), c.server_port)
        first, last = ns_to_dt(c.first_ns), ns_to_dt(c.last_ns)
        row = rows.get(key)
        if row is None:
            rows[key] = [*key, protocols.NAMES[c.app], first, last, c.packets_c2s, c.bytes_c2s, c.packets_s2c,
                         c.bytes_s2c]
            continue
        row[7], row[8] = min(row[7], first), max(row[8], last)
        row[9] += c.packets_c2s
        row[10] += c.bytes_c2s
        row[11] += c.packets_s2c
        row[12] += c.bytes_s2c
    return list(rows.values())


def merge_connections(s: Session, rows: list[list[Any]], sensor_id: int) -> None:
    """Add a batch of connections (from connection_rows): counters summed, first/last seen widened.

    New connections are linked to the devices of their endpoints' addresses, when known,
    and those devices wait for identification (what a device serves and polls is identity).
    """
    if not rows:
        return
    u = _stage(s, CONNECTIONS, CONNECTION_IN, rows)
    # one index lookup per end (a join would let the planner scan every address per batch)
    source = select(*u.c, *(select(ADDRESSES.c.device_id).where(_end(ADDRESSES, u, side)).scalar_subquery()
                            .label(f"{side}_device_id") for side in ("client", "server")))
    t = CONNECTIONS.c

    def changes(ex: Any) -> dict[str, Any]:
        return {
            "first_seen": case((ex.first_seen < t.first_seen, ex.first_seen), else_=t.first_seen),
            "last_seen": case((ex.last_seen > t.last_seen, ex.last_seen), else_=t.last_seen),
            **{f: t[f] + ex[f] for f in CONNECTION_COUNTERS},
        }

    # ids only grow: a row with an id above the largest one before the upsert was inserted now
    # (or by a concurrent batch, which is harmless: its devices are identified once more)
    newest = s.scalar(select(func.max(t.id))) or 0
    written = _upsert(s, CONNECTIONS, source, [*CONNECTION_IN, "client_device_id", "server_device_id"],
                      CONNECTION_KEY, changes, returning=(t.id, t.client_device_id, t.server_device_id))
    queue_identity(s, sensor_id, {d for id_, *ends in written if id_ > newest for d in ends})


def _end(address: Any, rows: Any, side: str) -> ColumnElement[bool]:
    """`address` is the client or server end of `rows`."""
    return and_(address.c.mac == rows.c[f"{side}_mac"], address.c.ip == rows.c[f"{side}_ip"])


def relink(s: Session, moved: list[tuple[str, str, int | None]]) -> None:
    """Point the connections of these (mac, ip, device id) addresses at their new devices."""
    if not moved:
        return
    u = _stage(s, ADDRESSES, ("mac", "ip", "device_id"), sorted(moved, key=lambda m: (m[0], m[1])))
    c = CONNECTIONS.c
    # the leading column of an index on each end (else the planner may scan every connection)
    for side, indexed, values in (("client", c.client_mac, {m[0] for m in moved}),
                                  ("server", c.server_ip, {m[1] for m in moved})):
        dev = c[f"{side}_device_id"]
        where = [_end(u, CONNECTIONS, side), dev.is_distinct_from(u.c.device_id)]
        if _pg(s):
            array = bindparam(None, sorted(values), type_=postgresql.ARRAY(indexed.type))
            where.append(indexed == any_(array))
        s.execute(update(CONNECTIONS).where(*where).values({dev.name: u.c.device_id}))


# -- addresses and devices ------------------------------------------------------------------


@dataclass(slots=True)
class _Address:
    """An address row being merged; `stored_*` is what the database holds now (None: new)."""

    mac: str
    ip: str
    device_id: int | None
    role: str
    flags: int
    first_seen: datetime
    last_seen: datetime
    packets_sent: int
    packets_received: int
    bytes_sent: int
    bytes_received: int
    vlans: list[int]
    protocols: list[str]
    stored_device: int | None = None
    stored_role: str | None = None
    dirty: bool = False
    device_key: tuple[str, str] | None = None

    def add(self, rec: AddressRecord) -> None:
        merge_address(self, rec)
        self.dirty = True

    def row(self) -> list[Any]:
        return [getattr(self, c) for c in ADDRESS_COLUMNS]


def _new_address(mac: str, ip: str, rec: AddressRecord) -> _Address:
    return _Address(mac, ip, None, "device", rec.flags, ns_to_dt(rec.first_ns), ns_to_dt(rec.last_ns),
                    rec.packets_sent, rec.packets_received, rec.bytes_sent, rec.bytes_received,
                    sorted(rec.vlans), protocols.names_from_mask(rec.protocols), dirty=True)


def _stored_addresses(s: Session, macs: set[str], loose_ips: set[str]) -> dict[tuple[str, str], _Address]:
    a = ADDRESSES.c
    q = select(*(a[c] for c in ADDRESS_COLUMNS))
    rows = _select_in(s, q, a.mac, macs) + _select_in(s, q.where(a.mac == ""), a.ip, loose_ips)
    out = {}
    for r in rows:
        row = _Address(*r)
        row.stored_device, row.stored_role = row.device_id, row.role
        out[(row.mac, row.ip)] = row
    return out


def _stored_devices(s: Session, macs: set[str],
                    loose_ips: set[str]) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(id, mac, is_gateway, protocols) of the devices of these MACs: what identity depends on."""
    d = DEVICES.c
    q = select(d.key_mac, d.key_ip, d.id, d.mac, d.is_gateway, d.protocols)
    rows = _select_in(s, q, d.key_mac, macs) + _select_in(s, q.where(d.key_mac == ""), d.key_ip, loose_ips)
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def _primary_ip(key_ip: str, own: list[_Address]) -> str | None:
    if key_ip:
        return key_ip
    ips = sorted((a for a in own if a.ip), key=lambda a: (a.ip.startswith("fe80"), -a.packets_sent))
    return ips[0].ip if ips else None


def _summary(mac: str, key_ip: str, own: list[_Address], traffic: list[_Address], gateway: bool,
             sensor: str, now: datetime) -> dict[str, Any]:
    """A device's columns from its addresses: addresses from `own`, traffic from `traffic`."""
    return {
        "key_mac": mac, "key_ip": key_ip, "mac": mac or None, "ip": _primary_ip(key_ip, own),
        "is_gateway": gateway, "sensor": sensor,
        "first_seen": min(a.first_seen for a in traffic), "last_seen": max(a.last_seen for a in traffic),
        **{f: sum(getattr(a, f) for a in traffic) for f in COUNTERS},
        "vlans": sorted({v for a in traffic for v in a.vlans}),
        "protocols": sorted({p for a in own for p in a.protocols}),
        "updated_at": now,
    }


def merge_addresses(s: Session, records: list[AddressRecord], sensor_id: int, sensor: str,
                    site: str | None, zone: str | None) -> None:
    """Add a batch of addresses and re-plan the devices of every MAC they touch.

    New devices take the sensor's site and zone, and so do devices without one yet (a
    person's choice is kept). Devices that are new, changed what identity reads (MAC,
    protocols, gateway), or gained or lost addresses wait for identification.
    """
    keyed = {(NAMES.mac(r.mac), NAMES.ip(r.ip_hi, r.ip_lo)): r for r in records}
    macs = {m for m, _ in keyed if m}
    loose_ips = {ip for m, ip in keyed if not m}
    stored = _stored_addresses(s, macs, loose_ips)
    for key, rec in keyed.items():
        if key in stored:
            stored[key].add(rec)
        else:
            stored[key] = _new_address(*key, rec)
    by_mac: dict[str, list[_Address]] = defaultdict(list)
    for row in stored.values():
        by_mac[row.mac].append(row)
    now = utcnow()
    devices: list[dict[str, Any]] = []
    for mac, rows in by_mac.items():
        pairs = [(Observed(a.mac, a.ip, a.flags, dt_to_ns(a.first_seen), a.packets_sent), a) for a in rows]
        row_of = {id(o): a for o, a in pairs}
        plan = plan_devices(mac, [o for o, _ in pairs])
        for o in plan.remote:
            row_of[id(o)].role, row_of[id(o)].device_key = "remote", None
        for key_ip, members in plan.devices.items():
            own = [row_of[id(o)] for o in members]
            for a in own:
                a.role, a.device_key = "device", (mac, key_ip)
            # a gateway sent every frame of its MAC, routed or not; its own addresses are fewer
            devices.append(_summary(mac, key_ip, own, rows if plan.is_gateway else own, plan.is_gateway,
                                    sensor, now))
    before = _stored_devices(s, macs, loose_ips)
    if devices:
        defaults = _defaults(DEVICES, [*devices[0], "created_at", "site", "zone"])
        columns = [*devices[0], "created_at", "site", "zone", *defaults]
        extra = [now, site, zone, *defaults.values()]
        u = _stage(s, DEVICES, columns, [[*d.values(), *extra] for d in devices])
        t = DEVICES.c
        _upsert(s, DEVICES, select(*u.c), columns, DEVICE_KEY, lambda ex: {
            **{c: ex[c] for c in SUMMARY},
            "site": func.coalesce(t.site, ex.site), "zone": func.coalesce(t.zone, ex.zone),
        })
    device_id = {key: v[0] for key, v in _stored_devices(s, macs, loose_ips).items()}
    for a in stored.values():
        a.device_id = device_id[a.device_key] if a.device_key else None
    changed = [a for a in stored.values()
               if a.dirty or a.device_id != a.stored_device or a.role != a.stored_role]
    if changed:
        u = _stage(s, ADDRESSES, ADDRESS_COLUMNS, [a.row() for a in changed])
        _upsert(s, ADDRESSES, select(*u.c), ADDRESS_COLUMNS, ADDRESS_KEY,
                lambda ex: {c: ex[c] for c in ADDRESS_COLUMNS if c not in ADDRESS_KEY})
    moved = [a for a in changed if a.device_id != a.stored_device]
    relink(s, [(a.mac, a.ip, a.device_id) for a in moved])
    touched = {device_id[(d["key_mac"], d["key_ip"])] for d in devices}
    orphans = sorted({v[0] for v in before.values()} - touched)  # e.g. the MAC became a gateway
    for part in chunks(orphans):
        s.execute(delete(DEVICES).where(DEVICES.c.id.in_(part)))
    waiting: set[int | None] = {a.device_id for a in moved} | {a.stored_device for a in moved}
    for d in devices:
        key = (d["key_mac"], d["key_ip"])
        if key not in before or before[key][1:] != (d["mac"], d["is_gateway"], d["protocols"]):
            waiting.add(device_id[key])
    queue_identity(s, sensor_id, waiting - set(orphans))


def queue_identity(s: Session, sensor_id: int, device_ids: Iterable[int | None]) -> None:
    """Note devices whose identity the end of this sensor's flush recomputes."""
    rows = [(sensor_id, d) for d in sorted({d for d in device_ids if d is not None})]
    if rows:
        u = _stage(s, PENDING, ("sensor_id", "device_id"), rows)
        _insert_new(s, PENDING, select(*u.c), ("sensor_id", "device_id"))


def take_identity_queue(s: Session, sensor_id: int) -> list[int]:
    """The devices waiting for this sensor's flush to end, taken off the queue and locked.

    Identification may run beside connection batches, which change what devices serve and
    poll. Locking the devices (in id order) before reading anything means whoever refreshes
    a device after us reads what was committed meanwhile, and never overwrites a newer view
    with an older one. FOR NO KEY UPDATE leaves the foreign-key checks of inserts free.
    """
    p = PENDING.c
    ids = sorted(s.scalars(delete(PENDING).where(p.sensor_id == sensor_id).returning(p.device_id)))
    query = select(DEVICES.c.id).order_by(DEVICES.c.id).with_for_update(key_share=True)
    return [row[0] for row in _select_in(s, query, DEVICES.c.id, ids)]
