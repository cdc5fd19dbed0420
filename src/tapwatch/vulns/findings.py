"""Security-relevant observations per device, gathered once for recommendations and risk.

Everything here is read from the inventory the earlier stages built: connections (what a
device serves, whom it talks to), facts (SNMP communities, MQTT credentials, OPC UA
security, SMB1 session strings), events, alerts and the stored vulnerability matches. No
new evidence is invented: where the wire gave nothing (an SMB2-only host, a PLC whose key
switch no protocol reports) the finding is simply absent.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tapwatch.store.alert_models import Alert
from tapwatch.store.inventory import chunks
from tapwatch.store.models import Address, Connection, Device, Event, Fact
from tapwatch.vulns.matcher import list_matches

MODE_EVENTS = ("plc_stop", "plc_start", "mode_change", "program_download")
CONTROLLER_TYPES = frozenset({"plc", "dcs_controller", "rtu"})
SMB1_FACTS = ("smb_os", "smb_native_lanman")  # only SMB1 Session Setup AndX carries these
FACT_ATTRIBUTES = ("snmp_community", "mqtt_password_cleartext", "mqtt_username_present",
                   "mqtt_client_id", "opcua_security_mode", "opcua_security_policy",
                   *SMB1_FACTS)


@dataclass
class DeviceFindings:
    device: Device
    served: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # protocol -> ports
    used: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # as a client
    facts: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    fact_sources: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    internet_peers: set[str] = field(default_factory=set)
    mqtt_brokers: set[int] = field(default_factory=set)  # devices this MQTT client logged in to
    mqtt_clients: set[int] = field(default_factory=set)  # devices logged in to this broker
    mode_events: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    alerts: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # open, by severity
    vulns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def speaks_smb(self) -> bool:
        protocols = set(self.device.protocols or [])
        return bool(protocols & {"smb", "netbios-ssn"}) or bool(self.facts.get("smb_os"))

    @property
    def speaks_opcua(self) -> bool:
        return "opcua" in set(self.device.protocols or []) or any(
            a.startswith("opcua_") for a in self.facts)

    @property
    def is_controller(self) -> bool:
        return self.device.plc_mode is not None or (self.device.type or "") in CONTROLLER_TYPES


def is_public(ip: str) -> bool:
    """A globally routable address (not private, link-local, multicast, documentation…)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return addr.is_global and not addr.is_multicast


def gather(session: Session) -> dict[int, DeviceFindings]:
    """Findings for every device, from one pass over each table."""
    devices = {d.id: DeviceFindings(d) for d in session.scalars(select(Device).order_by(Device.id))}
    ids = sorted(devices)
    for part in chunks(ids):
        q = (select(Address.device_id, Fact.attribute, Fact.value, Fact.source)
             .join(Fact, (Fact.mac == Address.mac) & (Fact.ip == Address.ip))
             .where(Address.device_id.in_(part), Fact.attribute.in_(FACT_ATTRIBUTES)))
        for device_id, attribute, value, source in session.execute(q):
            if device_id is None:
                continue
            devices[device_id].facts[attribute].add(value)
            devices[device_id].fact_sources[attribute].add(source)
    for c in session.scalars(select(Connection)):
        server = devices.get(c.server_device_id) if c.server_device_id else None
        client = devices.get(c.client_device_id) if c.client_device_id else None
        if server is not None:
            server.served[c.protocol].add(c.server_port)
            if is_public(c.client_ip):
                server.internet_peers.add(c.client_ip)
        if client is not None:
            client.used[c.protocol].add(c.server_port)
        if client is not None and is_public(c.server_ip):
            client.internet_peers.add(c.server_ip)
        if c.protocol == "mqtt" and server is not None and client is not None:
            client.mqtt_brokers.add(server.device.id)
            server.mqtt_clients.add(client.device.id)
    for dst, kind, count in session.execute(
            select(Event.dst_device_id, Event.kind, Event.count)
            .where(Event.kind.in_(MODE_EVENTS), Event.dst_device_id.is_not(None))):
        if dst in devices:
            devices[dst].mode_events[kind] += count
    alerts = select(Alert.id, Alert.severity, Alert.src_device_id, Alert.dst_device_id).where(
        Alert.status != "closed", or_(Alert.src_device_id.is_not(None), Alert.dst_device_id.is_not(None)))
    for _, sev, src, dst in session.execute(alerts):
        for device_id in {src, dst} - {None}:
            if device_id in devices:
                devices[device_id].alerts[sev] += 1
    for row in list_matches(session):
        if row["device_id"] in devices:
            devices[row["device_id"]].vulns.append(row)
    return devices


def brief(d: Device) -> dict[str, Any]:
    """How a device is named in recommendations and risk listings."""
    return {"device_id": d.id, "ip": d.ip, "mac": d.mac, "name": d.name, "vendor": d.vendor,
            "model": d.model, "type": d.type, "class": d.device_class, "site": d.site}
