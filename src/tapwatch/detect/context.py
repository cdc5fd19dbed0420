"""What the engines see of one analysis: its connections, dissector events and signals,
protocol errors, new devices, the baseline, and whether a moment was still learning."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from tapwatch.detect.alerts import AlertSink, Finding
from tapwatch.detect.baseline import Baseline, endpoint
from tapwatch.dissect.stage import EventRecord
from tapwatch.store.inventory import ns_to_dt
from tapwatch.store.models import Device

Endpoint = tuple[str | None, str | None]


@dataclass
class Conn:
    """One aggregated connection of the run (client, server, transport, server port)."""

    client: Endpoint
    server: Endpoint
    transport: str
    port: int
    protocol: str
    first: datetime
    last: datetime
    bytes: int
    packets: int

    @property
    def client_key(self) -> str:
        return endpoint(*self.client)

    @property
    def server_key(self) -> str:
        return endpoint(*self.server)


@dataclass
class RunInputs:
    """Everything one analysis hands to detection."""

    sensor: str | None
    file_id: int | None
    first: datetime  # first and last packet of the run (capture time)
    last: datetime
    connections: list[Conn] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    signals: list[EventRecord] = field(default_factory=list)
    errors: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    new_devices: list[Device] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)  # every device the run touched
    firmware_before: dict[int, str | None] = field(default_factory=dict)
    gap: tuple[datetime, datetime] | None = None  # the longest silence between packets
    # a live sensor's flush: the end of the previous one (devices that fell silent since
    # are checked even though this delta did not touch them)
    watch_since: datetime | None = None


@lru_cache(maxsize=65536)
def ip_kind(ip: str | None) -> str:
    """"public", "private", "group" (multicast/broadcast) or "" for no/odd address."""
    if not ip:
        return ""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    if a.is_multicast or ip == "255.255.255.255" or (a.version == 4 and ip.endswith(".255")):
        return "group"
    if a.is_global:
        return "public"
    return "private"


class Context:
    def __init__(self, session: Session, inputs: RunInputs, baseline: Baseline, sink: AlertSink,
                 learning_end: datetime | None) -> None:
        self.session = session
        self.inputs = inputs
        self.baseline = baseline
        self.sink = sink
        self.learning_end = learning_end
        self.known_before = set(baseline.known)  # entries from earlier runs only
        self._devices: dict[int, Device] = {d.id: d for d in inputs.devices}
        self.scanners: set[Endpoint] = set()  # sources of this run's scans: (mac, ip), or (mac, None)

    def scanning(self, ep: Endpoint) -> bool:
        return ep in self.scanners or (ep[0], None) in self.scanners

    def learning(self, ts: datetime) -> bool:
        return self.learning_end is None or ts < self.learning_end

    def report(self, finding: Finding) -> None:
        self.sink.report(finding)

    def device(self, ep: Endpoint | None) -> Device | None:
        device_id = self.sink.devices(ep)
        if device_id is None:
            return None
        d = self._devices.get(device_id)
        if d is None:
            d = self.session.get(Device, device_id)
            if d is not None:
                self._devices[device_id] = d
        return d

    def threshold(self, type_id: str, name: str) -> Any:
        return self.sink.threshold(type_id, name)

    def enabled(self, type_id: str) -> bool:
        return self.sink.enabled(type_id)



def at(record: EventRecord) -> datetime:
    """When an event or signal was first seen."""
    return ns_to_dt(record.ts_ns)


def last_at(record: EventRecord) -> datetime:
    return ns_to_dt(max(record.last_ns, record.ts_ns))
