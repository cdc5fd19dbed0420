"""Which observed addresses form which device, and which MACs are gateways.

A device is a unique MAC+IPv4 coupling. IPv6 addresses and layer-2-only traffic of a
MAC belong to that MAC's main device; a MAC with no IPv4 is one device on its own. A
MAC that sources many addresses, public ones among them, is a router: the addresses
behind it are remote endpoints, and only the addresses it shows as its own (announced
in ARP, sent to a local broadcast/multicast, link-local) belong to the gateway device.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from tapwatch.decode.aggregate import A_ARP, A_GROUP, AddressRecord
from tapwatch.decode.kernel import NO_MAC, V4_MAPPED

GATEWAY_MIN_PUBLIC = 2  # distinct public addresses behind one MAC...
GATEWAY_MIN_ADDRESSES = 3  # ...among at least this many addresses
GATEWAY_MIN_IPV4 = 8  # or this many IPv4 addresses, public or not


def mac_str(mac: int) -> str:
    """'aa:bb:cc:dd:ee:ff', or '' for none."""
    if mac == NO_MAC:
        return ""
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def ip_str(hi: int, lo: int) -> str:
    """Canonical text of a (hi, lo) address pair; '' for none."""
    if hi == 0 and lo == 0:
        return ""
    if hi == 0 and (lo & ~0xFFFFFFFF) & 0xFFFFFFFFFFFFFFFF == V4_MAPPED:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    value = ((hi & 0xFFFFFFFFFFFFFFFF) << 64) | (lo & 0xFFFFFFFFFFFFFFFF)
    return str(ipaddress.IPv6Address(value))


def is_public(ip: str) -> bool:
    if not ip:
        return False
    addr = ipaddress.ip_address(ip)
    return addr.is_global and not addr.is_multicast


def is_link_local(ip: str) -> bool:
    return bool(ip) and ipaddress.ip_address(ip).is_link_local


@dataclass
class Observed:
    """An address as the device planner sees it (from this run, the store, or both)."""

    mac: str
    ip: str
    flags: int
    first_ns: int
    packets_sent: int

    @property
    def is_v4(self) -> bool:
        return "." in self.ip


@dataclass
class Plan:
    """How the addresses of one MAC are grouped: device key ip -> addresses, plus remotes."""

    mac: str
    is_gateway: bool
    devices: dict[str, list[Observed]] = field(default_factory=dict)
    remote: list[Observed] = field(default_factory=list)


def is_gateway(addresses: list[Observed]) -> bool:
    ips = [a.ip for a in addresses if a.ip]
    v4 = sum(1 for ip in ips if "." in ip)
    public = sum(1 for ip in ips if is_public(ip))
    return (public >= GATEWAY_MIN_PUBLIC and len(ips) >= GATEWAY_MIN_ADDRESSES) or (
        v4 >= GATEWAY_MIN_IPV4
    )


def _main_first(addrs: list[Observed]) -> list[Observed]:
    return sorted(addrs, key=lambda a: (-a.packets_sent, a.first_ns, a.ip))


def plan_devices(mac: str, addresses: list[Observed]) -> Plan:
    """Group every address of one MAC ('' for link types without MACs) into devices."""
    if not mac:
        return Plan(mac, False, {a.ip: [a] for a in addresses if a.ip})
    gateway = is_gateway(addresses)
    plan = Plan(mac, gateway)
    if gateway:
        own = [a for a in addresses
               if not a.ip or a.flags & (A_ARP | A_GROUP) or is_link_local(a.ip)]
        plan.remote = [a for a in addresses if a not in own]
        own_v4 = sorted((a for a in own if a.is_v4), key=lambda a: (a.first_ns, a.ip))
        plan.devices[own_v4[0].ip if own_v4 else ""] = own
        return plan
    v4 = [a for a in addresses if a.is_v4]
    rest = [a for a in addresses if not a.is_v4]
    for a in v4:
        plan.devices[a.ip] = [a]
    main = _main_first(v4)[0].ip if v4 else ""
    plan.devices.setdefault(main, []).extend(rest)
    return plan


def observed(record: AddressRecord) -> Observed:
    return Observed(mac_str(record.mac), ip_str(record.ip_hi, record.ip_lo), record.flags,
                    record.first_ns, record.packets_sent)
