"""Endpoint-agent lists: `tapwatch endpoints import FILE`.

An EDR product's export (CSV or JSON: MAC, IP, hostname, agent id) is stored, and every
device it matches is flagged "managed by endpoint agent" (Device.endpoint_agent), which
takes it out of the billable count. A device matches an entry by MAC; an entry without a
MAC matches by IP. The stored list is applied again whenever it changes, so flags always
follow the list (`--replace` makes the file the whole list).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tapwatch.plans.access import Actor
from tapwatch.records import normalize_ip as _ip
from tapwatch.records import normalize_mac as _mac
from tapwatch.records import read_table, split_list
from tapwatch.store.console_models import audit, utcnow
from tapwatch.store.models import Address, Device
from tapwatch.store.plan_models import EndpointAgent

ALIASES: dict[str, tuple[str, ...]] = {
    "mac": ("mac address", "mac addresses", "macaddress", "mac_address", "physical address",
            "hw address", "ethernet address", "local mac"),
    "ip": ("ip address", "ip addresses", "ipaddress", "ipv4", "ipv4 address", "local ip", "last ip",
           "internal ip", "private ip", "last reported ip"),
    "hostname": ("host", "host name", "device name", "computer name", "computername", "endpoint name",
                 "machine name", "name"),
    "agent_id": ("agent id", "agentid", "agent", "aid", "sensor id", "device id", "machine id",
                 "endpoint id", "agent uuid", "uuid", "id"),
}


@dataclass
class ImportResult:
    path: str
    rows: int = 0
    entries_added: int = 0
    errors: list[str] = field(default_factory=list)
    flagged: int = 0  # devices flagged after the import
    newly_flagged: int = 0
    unflagged: int = 0


def _entries(values: dict[str, str]) -> list[tuple[str, str]]:
    """(mac, ip) couplings of one row: paired when the row names one of each."""
    macs = [_mac(m) for m in split_list(values["mac"])]
    ips = [_ip(i) for i in split_list(values["ip"])]
    if not macs and not ips:
        raise ValueError("neither a MAC nor an IP address")
    if len(macs) == 1 and len(ips) <= 1:
        return [(macs[0], ips[0] if ips else "")]
    if not macs and len(ips) == 1:
        return [("", ips[0])]
    return [(m, "") for m in macs] + ([] if macs else [("", i) for i in ips])


def apply(session: Session) -> tuple[int, int, int]:
    """Flag the devices the stored list matches and clear the others: (flagged, new, cleared)."""
    by_mac: dict[str, str] = {}
    by_ip: dict[str, str] = {}
    for e in session.scalars(select(EndpointAgent).order_by(EndpointAgent.id)):
        if e.mac:
            by_mac.setdefault(e.mac, e.agent_id)
        elif e.ip:
            by_ip.setdefault(e.ip, e.agent_id)
    device_ips: dict[int, set[str]] = {}
    if by_ip:
        for device_id, ip in session.execute(select(Address.device_id, Address.ip).where(
                Address.device_id.is_not(None), Address.ip.in_(list(by_ip)))):
            device_ips.setdefault(device_id or 0, set()).add(ip)
    flagged = new = cleared = 0
    for d in session.scalars(select(Device)):
        agent = by_mac.get((d.mac or "").lower())
        if agent is None:
            for ip in sorted({d.ip or ""} | device_ips.get(d.id, set())):
                if ip in by_ip:
                    agent = by_ip[ip]
                    break
        if agent is not None:
            flagged += 1
            if d.endpoint_agent is None:
                new += 1
            if d.endpoint_agent != agent:
                d.endpoint_agent = agent[:255]
        elif d.endpoint_agent is not None:
            d.endpoint_agent = None
            cleared += 1
    return flagged, new, cleared


def import_file(session: Session, path: str | Path, actor: Actor, replace: bool = False) -> ImportResult:
    """Store the entries of an EDR export and re-flag the inventory; bad rows are reported."""
    table = read_table(path, ALIASES)
    result = ImportResult(table.path, errors=list(table.errors))
    now = utcnow()
    if replace:
        session.execute(delete(EndpointAgent))
    known = {(e.agent_id, e.mac, e.ip) for e in session.scalars(select(EndpointAgent))}
    for row in table.rows:
        agent = row.values["agent_id"]
        if not agent:
            table.error(row.line, "no agent id")
            result.errors.append(table.errors[-1])
            continue
        try:
            couplings = _entries(row.values)
        except ValueError as e:
            table.error(row.line, str(e))
            result.errors.append(table.errors[-1])
            continue
        result.rows += 1
        for mac, ip in couplings:
            if (agent[:255], mac, ip) in known:
                continue
            known.add((agent[:255], mac, ip))
            session.add(EndpointAgent(agent_id=agent[:255], mac=mac, ip=ip,
                                      hostname=row.values["hostname"][:255] or None,
                                      source=table.path[:1024], imported_at=now))
            result.entries_added += 1
    session.flush()
    result.flagged, result.newly_flagged, result.unflagged = apply(session)
    audit(session, actor.name, "endpoints.import", "endpoint_list", None, file=table.path,
          rows=result.rows, entries_added=result.entries_added, errors=len(result.errors),
          replace=replace, flagged=result.flagged, newly_flagged=result.newly_flagged,
          unflagged=result.unflagged)
    return result
