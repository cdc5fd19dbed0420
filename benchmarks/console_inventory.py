"""Console inventory latency: list, filter, sort and page 100,000 devices through the real
console over HTTP, on SQLite and on PostgreSQL, next to the bare SQL of the same listing.

For each database the script builds a store that looks like an analysed plant (devices of
~30 types in IT/IoT/OT, vendors, sites and zones, authorized/new flags, last activity spread
over 90 days, one or two addresses per device, identity facts and connections), inserted
with SQLAlchemy Core in chunks into the tables the Alembic migrations create. It then starts
`tapwatch serve` on a free loopback port, issues an API token, and times a mix of real
requests (httpx, one keep-alive connection) against /api/v1/devices and the /devices page.
The peer, timed in the same run on the same parameters, is the bare SQL that answer needs at
the least (the COUNT, the page's SELECT ... ORDER BY ... LIMIT/OFFSET, and the page's
addresses) run with sqlite3 / psycopg directly, so the console's overhead shows as a ratio.

    .venv/bin/python benchmarks/console_inventory.py                  # 100,000 devices
    .venv/bin/python benchmarks/console_inventory.py --quick          # 10,000 devices, smoke run
    .venv/bin/python benchmarks/console_inventory.py --json out.json --check
    TAPWATCH_TEST_PG_URL=postgresql+psycopg://user:pw@host/db ...     (default: the test server)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
from sqlalchemy import Engine, create_engine, insert, text

from tapwatch.console import auth
from tapwatch.console.queries import NOT_NULL_SORTS, SEARCH_COUNT_CAP
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import SEARCH_COLUMNS, Address, Connection, Device, Fact

TAPWATCH = str(Path(sys.executable).parent / "tapwatch")
TARGET_MS = 150.0
DEFAULT_PG = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test"
CHUNK = 5000

# -- the plant ------------------------------------------------------------------------------

# type, class, Purdue level, weight, vendors (with OUI), models, os
TYPES: list[tuple[str, str | None, int | None, int, list[tuple[str, str]], list[str], list[str]]] = [
    ("workstation", "IT", 4, 260, [("Dell", "d4:81:d7"), ("HP", "3c:d9:2b"), ("Lenovo", "54:ee:75")],
     ["OptiPlex 7090", "EliteDesk 800", "ThinkCentre M90"], ["Windows 10", "Windows 11"]),
    ("laptop", "IT", 4, 90, [("Dell", "d4:81:d7"), ("Lenovo", "54:ee:75"), ("Apple", "a4:83:e7")],
     ["Latitude 5420", "ThinkPad T14", "MacBook Pro"], ["Windows 11", "macOS 14"]),
    ("server", "IT", 4, 40, [("Dell", "d4:81:d7"), ("HP", "3c:d9:2b"), ("VMware", "00:50:56")],
     ["PowerEdge R740", "ProLiant DL380", "ESXi VM"], ["Windows Server 2019", "Ubuntu 22.04", "RHEL 9"]),
    ("mobile_phone", "IT", 5, 40, [("Apple", "a4:83:e7"), ("Samsung", "8c:f5:a3")],
     ["iPhone 14", "Galaxy S23"], ["iOS 17", "Android 14"]),
    ("switch", "IT", 3, 25, [("Cisco", "00:1b:54"), ("Hirschmann", "00:80:63"), ("Moxa", "00:90:e8")],
     ["Catalyst 9300", "RS20", "EDS-510E"], ["IOS XE 17.9", "HiOS 9.1", ""]),
    ("router", "IT", 3, 6, [("Cisco", "00:1b:54"), ("Juniper", "00:05:85")], ["ISR 4331", "SRX300"], [""]),
    ("firewall", "IT", 3, 5, [("Fortinet", "00:09:0f"), ("Palo Alto Networks", "00:1b:17")],
     ["FortiGate 100F", "PA-440"], ["FortiOS 7.2", "PAN-OS 11"]),
    ("access_point", "IT", 4, 20, [("Aruba", "00:0b:86"), ("Ubiquiti", "24:5a:4c")],
     ["AP-515", "U6-Pro"], [""]),
    ("printer", "IoT", 4, 60, [("HP", "3c:d9:2b"), ("Brother", "00:80:77"), ("Canon", "00:1e:8f")],
     ["LaserJet M507", "HL-L6200", "imageRUNNER 2630"], [""]),
    ("ip_camera", "IoT", 4, 80, [("Axis", "00:40:8c"), ("Hikvision", "44:19:b6"), ("Bosch", "00:07:5f")],
     ["P3245-V", "DS-2CD2143", "FLEXIDOME 5100i"], [""]),
    ("voip_phone", "IoT", 4, 50, [("Cisco", "00:1b:54"), ("Yealink", "80:5e:c0"), ("Polycom", "00:04:f2")],
     ["CP-8845", "T54W", "VVX 450"], [""]),
    ("building_controller", "IoT", 2, 20, [("Johnson Controls", "00:10:be"), ("Honeywell", "00:40:84")],
     ["Metasys NAE55", "Spyder"], [""]),
    ("access_control", "IoT", 4, 15, [("HID Global", "00:06:8e"), ("Bosch", "00:07:5f")],
     ["VertX V1000", "AMC2"], [""]),
    ("ups", "IoT", 3, 10, [("Schneider Electric", "00:c0:b7"), ("Eaton", "00:20:85")],
     ["Smart-UPS 3000", "9PX"], [""]),
    ("iot_device", "IoT", 4, 30, [("Espressif", "24:0a:c4"), ("Raspberry Pi", "b8:27:eb")],
     ["ESP32", "Raspberry Pi 4"], ["", "Raspbian 11"]),
    ("plc", "OT", 1, 70, [("Siemens", "00:1b:1b"), ("Rockwell Automation", "00:00:bc"),
                          ("Schneider Electric", "00:80:f4"), ("Mitsubishi Electric", "00:26:92")],
     ["S7-1500 CPU 1516-3", "S7-300 CPU 315-2", "ControlLogix 1756-L83E", "Modicon M580",
      "MELSEC iQ-R"], [""]),
    ("hmi", "OT", 2, 40, [("Siemens", "00:1b:1b"), ("Rockwell Automation", "00:00:bc"),
                          ("Beijer Electronics", "00:05:51")],
     ["TP1200 Comfort", "PanelView Plus 7", "X2 pro 12"], ["Windows 10 IoT", ""]),
    ("rtu", "OT", 1, 12, [("ABB", "00:04:a3"), ("Schneider Electric", "00:80:f4")],
     ["RTU560", "SCADAPack 470"], [""]),
    ("engineering_workstation", "OT", 2, 15, [("Dell", "d4:81:d7"), ("Siemens", "00:1b:1b")],
     ["Precision 3660", "Field PG M6"], ["Windows 10", "Windows 11"]),
    ("historian", "OT", 3, 4, [("Dell", "d4:81:d7"), ("OSIsoft", "00:15:5d")],
     ["PowerEdge R650", "PI Server"], ["Windows Server 2019"]),
    ("ied", "OT", 1, 25, [("ABB", "00:04:a3"), ("SEL", "00:30:a7"), ("GE Vernova", "00:a0:db")],
     ["REF615", "SEL-751", "Multilin 850"], [""]),
    ("drive", "OT", 0, 30, [("Siemens", "00:1b:1b"), ("ABB", "00:04:a3"), ("Danfoss", "00:1b:08")],
     ["SINAMICS G120", "ACS880", "VLT FC 302"], [""]),
    ("dcs_controller", "OT", 1, 8, [("Emerson", "00:d0:c9"), ("Yokogawa", "00:00:64")],
     ["DeltaV PK", "CENTUM VP FCS"], [""]),
    ("unknown", None, None, 45, [("", "02:00:00")], [""], [""]),
]
SITES = ["plant-lyon", "plant-bremen", "plant-ostrava", "plant-porto", "plant-gdansk", "hq-paris"]
ZONES = ["office", "dmz", "scada", "cell-1", "cell-2", "cell-3", "cell-4", "utilities", "packaging",
         "lab", "warehouse", "security"]
PROTOCOLS = {"IT": ["http", "https", "dns", "smb", "rdp"], "IoT": ["http", "rtsp", "sip", "snmp", "mdns"],
             "OT": ["s7comm", "modbus", "enip", "opcua", "profinet", "iec104"], None: ["arp"]}
PORTS = {"s7comm": 102, "modbus": 502, "enip": 44818, "opcua": 4840, "iec104": 2404, "http": 80,
         "https": 443, "dns": 53, "smb": 445, "rdp": 3389, "rtsp": 554, "sip": 5060, "snmp": 161}


@dataclass
class Plant:
    n: int
    now: datetime
    vendors: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)


def _ip(i: int) -> str:
    j = i + 256 * 4  # 10.0.4.0 upwards: one /24 per zone block
    return f"10.{(j >> 16) & 255}.{(j >> 8) & 255}.{j & 255 or 1}"


def _mac(oui: str, i: int) -> str:
    return f"{oui}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def plant_rows(n: int, now: datetime, seed: int = 6) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(table, rows) in chunks: devices first, then addresses, facts and connections."""
    rng = random.Random(seed)
    weights = [t[3] for t in TYPES]
    devices, addresses, facts, conns = [], [], [], []
    servers: dict[tuple[str, str], list[tuple[str, str, int, str | None]]] = {}
    for i in range(n):
        tname, cls, level, _w, vendors, models, oses = rng.choices(TYPES, weights)[0]
        block = i >> 8  # the /24 of the device: one zone of one site
        site = SITES[block % len(SITES)]
        zone = ZONES[(block // len(SITES)) % len(ZONES)]
        vendor, oui = rng.choice(vendors)
        mac = _mac(oui, i)
        mac_only = tname in ("switch", "drive") and rng.random() < 0.15  # seen at layer 2 alone
        ip = None if mac_only else _ip(i)
        last = now - timedelta(seconds=rng.uniform(0, 89 * 86400))
        first = last - timedelta(seconds=rng.uniform(0, 300 * 86400))
        sent = int(rng.paretovariate(1.2) * 200)
        protos = rng.sample(PROTOCOLS[cls], k=min(len(PROTOCOLS[cls]), rng.randint(1, 3)))
        name = f"{site[6:] if site.startswith('plant-') else site}-{tname.replace('_', '-')}-{i:06d}"
        devices.append({
            "id": i + 1, "key_mac": mac, "key_ip": ip or "", "mac": mac, "ip": ip, "is_gateway": False,
            "sensor": f"sensor-{site}", "first_seen": first, "last_seen": last,
            "packets_sent": sent, "packets_received": int(sent * rng.uniform(0.5, 1.5)),
            "bytes_sent": sent * rng.randint(60, 900), "bytes_received": sent * rng.randint(60, 900),
            "vlans": [10 + ZONES.index(zone)] if rng.random() < 0.3 else [], "protocols": protos,
            "name": name if rng.random() < 0.8 else None, "vendor": vendor or None,
            "type": tname, "device_class": cls, "purdue_level": level,
            "serial": f"S{rng.randrange(10**9):09d}" if cls == "OT" else None,
            "module": None, "rack_slot": "0/1" if tname == "plc" else None,
            "plc_mode": rng.choice(["run", "run", "stop"]) if tname == "plc" else None, "overrides": {},
            "authorized": rng.random() < 0.85, "is_new": rng.random() < 0.04,
            "importance": rng.choices(["low", "normal", "high"], [1, 8, 1])[0],
            "programming_device": tname == "engineering_workstation", "description": None,
            "location": None, "tags": ["critical"] if cls == "OT" and rng.random() < 0.1 else [],
            "site": site, "zone": zone, "endpoint_agent": None,
            "model": rng.choice(models) or None, "os": rng.choice(oses) or None,
            "firmware": f"V{rng.randint(1, 4)}.{rng.randint(0, 9)}" if cls == "OT" else None,
            "created_at": first, "updated_at": last,
        })
        couplings = [ip or ""]
        if ip and rng.random() < 0.12:  # a dual-stack host: its link-local IPv6 as well
            couplings.append(f"fe80::{mac.replace(':', '')[:4]}:{mac.replace(':', '')[4:8]}:{i:x}")
        for a_ip in couplings:
            addresses.append({"mac": mac, "ip": a_ip, "device_id": i + 1, "role": "device", "flags": 0,
                              "first_seen": first, "last_seen": last, "packets_sent": sent,
                              "packets_received": sent, "bytes_sent": sent * 100, "bytes_received": sent * 90,
                              "vlans": [], "protocols": protos})
        if vendor:
            facts.append({"mac": mac, "ip": ip or "", "attribute": "vendor", "value": vendor, "source": "oui",
                          "confidence": 0.5, "count": 1, "first_seen": first, "last_seen": last})
        if rng.random() < 0.5:
            facts.append({"mac": mac, "ip": ip or "", "attribute": "type", "value": tname,
                          "source": protos[0], "confidence": 0.8, "count": rng.randint(1, 50),
                          "first_seen": first, "last_seen": last})
        if ip:
            key = (site, zone)
            peers = servers.setdefault(key, [])
            if peers and rng.random() < 0.8:
                s_mac, s_ip, s_id, s_cls = rng.choice(peers)
                proto = rng.choice(PROTOCOLS[s_cls])
                conns.append({"client_mac": mac, "client_ip": ip, "server_mac": s_mac, "server_ip": s_ip,
                              "transport": "udp" if proto in ("dns", "snmp", "sip") else "tcp",
                              "server_port": PORTS.get(proto, 0), "protocol": proto,
                              "client_device_id": i + 1, "server_device_id": s_id, "first_seen": first,
                              "last_seen": last, "packets_c2s": sent, "bytes_c2s": sent * 80,
                              "packets_s2c": sent, "bytes_s2c": sent * 120})
            if tname in ("server", "plc", "historian", "hmi", "nas", "ied", "rtu") and len(peers) < 20:
                peers.append((mac, ip, i + 1, cls))
        if len(devices) >= CHUNK:
            yield "devices", devices
            devices = []
    yield "devices", devices
    for table, rows in (("addresses", addresses), ("facts", facts), ("connections", conns)):
        for k in range(0, len(rows), CHUNK):
            yield table, rows[k:k + CHUNK]


def describe_plant(n: int, now: datetime, seed: int = 6) -> Plant:
    """What the request mix picks filter values from (the same choices plant_rows makes)."""
    plant = Plant(n, now)
    plant.vendors = sorted({v for t in TYPES for v, _ in t[4] if v})
    plant.types = [t[0] for t in TYPES]
    rng = random.Random(seed + 1)
    for _ in range(200):
        i = rng.randrange(n)
        plant.ips.append(_ip(i))
    return plant


def populate(engine: Engine, n: int, now: datetime) -> dict[str, int]:
    tables = {"devices": Device.__table__, "addresses": Address.__table__, "facts": Fact.__table__,
              "connections": Connection.__table__}
    counts: dict[str, int] = dict.fromkeys(tables, 0)
    with engine.begin() as conn:
        for table, rows in plant_rows(n, now):
            if rows:
                conn.execute(insert(tables[table]), rows)
                counts[table] += len(rows)
    # a store in service has been vacuumed and analysed by autovacuum; a fresh bulk load not yet
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    return counts


# -- the request mix ------------------------------------------------------------------------


@dataclass
class Kind:
    name: str
    path: str  # /api/v1/devices or /devices
    params: Callable[[random.Random, Plant], dict[str, Any]]
    what: str


def _pick_type(rng: random.Random) -> str:
    return rng.choices([t[0] for t in TYPES], [t[3] for t in TYPES])[0]


def _search(rng: random.Random, p: Plant) -> str:
    r = rng.random()
    if r < 0.35:
        return rng.choice(p.ips).rsplit(".", 1)[0] + "."  # a subnet
    if r < 0.6:
        return rng.choice(p.vendors)[:5].lower()
    if r < 0.8:
        return f"{_pick_type(rng).replace('_', '-')}-{rng.randrange(p.n):06d}"[:-2]  # a name prefix
    return rng.choice(["s7-1500", "windows 10", "controllogix", "optiplex", "axis"])


def _filters(rng: random.Random, p: Plant) -> dict[str, Any]:
    """A filter a person would set on the page (for the HTML kind)."""
    pick = rng.randrange(6)
    if pick == 0:
        return {}
    if pick == 1:
        return {"type": _pick_type(rng)}
    if pick == 2:
        return {"class": rng.choice(["IT", "IoT", "OT"]), "site": rng.choice(SITES)}
    if pick == 3:
        return {"q": _search(rng, p)}
    if pick == 4:
        return {"authorized": "false"}
    return {"seen_after": (p.now - timedelta(days=rng.choice([1, 7]))).date().isoformat()}


API = "/api/v1/devices"
SORTS = [("last_seen", "desc"), ("name", "asc"), ("vendor", "asc"), ("ip", "asc"), ("type", "asc"),
         ("first_seen", "desc"), ("packets", "desc"), ("site", "asc"), ("class", "asc")]
KINDS = [
    Kind("first_page", API, lambda r, p: {"page": r.randint(1, 3)}, "no filter, sort by id, pages 1-3"),
    Kind("deep_page", API, lambda r, p: {"page": r.randint(1, max(1, p.n // 50)), "page_size": 50},
         "no filter, any page of the whole inventory"),
    Kind("sorted", API, lambda r, p: dict(zip(("sort", "order"), r.choice(SORTS), strict=True),
                                          page=r.randint(1, 10)),
         "no filter, sorted by one of 9 columns, pages 1-10"),
    Kind("type", API, lambda r, p: {"type": _pick_type(r), "sort": "last_seen", "order": "desc",
                                    "page": r.randint(1, 3)}, "type=, newest first"),
    Kind("class_site", API, lambda r, p: {"class": r.choice(["IT", "IoT", "OT"]), "site": r.choice(SITES),
                                          "sort": "name", "page": r.randint(1, 3)},
         "class= and site=, by name"),
    Kind("vendor", API, lambda r, p: {"vendor": r.choice(p.vendors), "sort": "ip", "page": r.randint(1, 2)},
         "vendor=, by IP"),
    Kind("zone_auth", API, lambda r, p: {"site": r.choice(SITES), "zone": r.choice(ZONES),
                                         "authorized": r.choice(["true", "false"])},
         "site=, zone=, authorized="),
    Kind("unauthorized_new", API, lambda r, p: {"authorized": "false", "new": r.choice(["true", "false"]),
                                                "sort": "last_seen", "order": "desc"},
         "authorized=false, new=, newest first"),
    Kind("search", API, lambda r, p: {"q": _search(r, p), "page": r.randint(1, 2)},
         "q= (subnet, vendor, name or model text)"),
    Kind("last_activity", API, lambda r, p: (
        {"seen_after": (p.now - timedelta(days=r.choice([1, 7, 30]))).date().isoformat(),
         "sort": "last_seen", "order": "desc"} if r.random() < 0.6 else
        {"seen_before": (p.now - timedelta(days=r.choice([30, 60]))).date().isoformat(),
         "sort": "last_seen", "order": "asc"}), "seen_after= / seen_before= (inactive devices)"),
    Kind("page_500", API, lambda r, p: {"page_size": 500, "page": r.randint(1, 20),
                                        "sort": r.choice(["id", "last_seen"]), "order": "desc"},
         "500 rows a page (the largest)"),
    Kind("html_page", "/devices", lambda r, p: {**_filters(r, p), "page": r.randint(1, 3)},
         "the /devices page: filters as above, newest first"),
]


def plan(kinds: list[Kind], plant: Plant, per_kind: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    return {k.name: [k.params(rng, plant) for _ in range(per_kind)] for k in kinds}


# -- the console ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_console(url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([TAPWATCH, "serve", "--database-url", url, "--host", "127.0.0.1",
                             "--port", str(port), "--log-file", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tapwatch serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            httpx.get(base + "/api/v1/openapi.json", timeout=2)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("tapwatch serve did not answer within 60 s")


def issue_token(engine: Engine) -> str:
    with sessions(engine).begin() as s:
        user = auth.add_user(s, "bench-reader", "a long bench password", "security_reader", "bench")
        return auth.issue_token(s, user, "bench", "bench")


def time_http(client: httpx.Client, path: str, params: dict[str, Any]) -> float:
    t = time.perf_counter()
    r = client.get(path, params=params)
    ms = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"GET {path}?{urlencode(params)}: {r.status_code} {r.text[:300]}")
    return ms


# -- the peer: bare SQL ---------------------------------------------------------------------

SQL_SORT = {"id": "id", "ip": "ip", "mac": "mac", "name": "name", "type": "type", "class": "device_class",
            "vendor": "vendor", "site": "site", "zone": "zone", "first_seen": "first_seen",
            "last_seen": "last_seen", "packets": "(packets_sent + packets_received)"}


class SqlPeer:
    """The same listing as bare SQL, the least the answer needs: the page's ids in sort order,
    their rows, their addresses, and the count (only when a full page leaves it open).

    It takes the console's paths (tapwatch.console.queries): a text search reads the ids of
    its first SEARCH_COUNT_CAP matches in one pass, as `lower(col) LIKE lower(text)` on
    PostgreSQL (what the trigram index answers), planned for each text, and SQLite sorts the
    matches itself (`+col`) rather than walking the sort column's index.
    """

    def __init__(self, dialect: str, target: str, schema: str | None = None) -> None:
        self.dialect = dialect
        if dialect == "sqlite":
            self.con: Any = sqlite3.connect(target)
            self.ph = "?"
        else:
            # no prepared statements: each statement is planned for its own values
            self.con = psycopg.connect(target, options=f"-csearch_path={schema}", autocommit=True,
                                       prepare_threshold=None)
            self.ph = "%s"

    def close(self) -> None:
        self.con.close()

    def _ts(self, value: str) -> Any:
        dt = datetime.fromisoformat(value)
        return dt.strftime("%Y-%m-%d %H:%M:%S.%f") if self.dialect == "sqlite" else dt

    def statements(self, params: dict[str, Any]) -> tuple[str, str, list[Any], list[Any]]:
        """(count, ids of the page, their arguments): for a search the ids are its first matches."""
        ph, where, args = self.ph, [], []
        search = bool(params.get("q"))
        if search:
            like = "%" + params["q"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            test = "lower({c}) LIKE lower({ph}) ESCAPE '\\'" if self.dialect == "postgresql" \
                else "{c} LIKE {ph} ESCAPE '\\'"
            where.append("(" + " OR ".join(test.format(c=c, ph=ph) for c in SEARCH_COLUMNS) + ")")
            args += [like] * len(SEARCH_COLUMNS)
        for key, col in (("type", "type"), ("vendor", "vendor"), ("site", "site"), ("zone", "zone"),
                         ("class", "device_class")):
            if params.get(key):
                where.append(f"{col} = {ph}")
                args.append(params[key])
        for key, col in (("authorized", "authorized"), ("new", "is_new")):
            if params.get(key):
                where.append(f"{col} = {'true' if params[key] == 'true' else 'false'}")
        if params.get("seen_after"):
            where.append(f"last_seen >= {ph}")
            args.append(self._ts(params["seen_after"]))
        if params.get("seen_before"):
            where.append(f"last_seen < {ph}")
            args.append(self._ts(params["seen_before"]))
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        key = params.get("sort", "id")
        sort = SQL_SORT[key]
        if search and self.dialect == "sqlite" and key != "id":
            sort = f"+{sort}"
        direction = "DESC" if params.get("order", "asc") == "desc" else "ASC"
        nulls = "" if key in NOT_NULL_SORTS else " NULLS LAST"
        size = int(params.get("page_size", 50))
        offset = (int(params.get("page", 1)) - 1) * size
        count = f"SELECT count(id) FROM devices{cond}"
        ids = f"SELECT id FROM devices{cond} ORDER BY {sort} {direction}{nulls}, id LIMIT {ph} OFFSET {ph}"
        reach = max(SEARCH_COUNT_CAP, offset + size)
        return count, ids, args, [*args, reach + 1, 0] if search else [*args, size, offset]

    def run(self, params: dict[str, Any]) -> float:
        count, page, count_args, page_args = self.statements(params)
        size = int(params.get("page_size", 50))
        offset = (int(params.get("page", 1)) - 1) * size
        t = time.perf_counter()
        cur = self.con.cursor()
        cur.execute(page, page_args)
        ids = [row[0] for row in cur.fetchall()]
        if params.get("q"):
            ids = ids[offset:offset + size]
        elif len(ids) == size or (not ids and offset):
            cur.execute(count, count_args)
            cur.fetchone()
        if ids:
            marks = ",".join([self.ph] * len(ids))
            cur.execute(f"SELECT * FROM devices WHERE id IN ({marks})", ids)
            cur.fetchall()
            cur.execute(f"SELECT * FROM addresses WHERE device_id IN ({marks})", ids)
            cur.fetchall()
        cur.close()
        return (time.perf_counter() - t) * 1000


# -- measuring ------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": round(pct(values, 0.5), 2), "p95": round(pct(values, 0.95), 2),
            "max": round(max(values), 2), "n": len(values)}


def measure(db: str, base: str, token: str, peer: SqlPeer, kinds: list[Kind], plant: Plant,
            per_kind: int, rounds: int, warmup: int, seed: int) -> dict[str, Any]:
    """Each round: every kind's requests interleaved (a load change hits all kinds alike), then
    the SQL peer on the same parameters. Figures per round; the report takes their medians."""
    out: dict[str, Any] = {"rounds": []}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        warm = plan(kinds, plant, warmup, seed + 1000)
        for k in kinds:
            for params in warm[k.name]:
                time_http(client, k.path, params)
                if k.path == API:
                    peer.run(params)
        for rnd in range(rounds):
            todo = plan(kinds, plant, per_kind, seed + rnd)
            http: dict[str, list[float]] = {k.name: [] for k in kinds}
            sql: dict[str, list[float]] = {k.name: [] for k in kinds if k.path == API}
            for i in range(per_kind):
                for k in kinds:
                    http[k.name].append(time_http(client, k.path, todo[k.name][i]))
            for k in kinds:
                if k.path == API:
                    sql[k.name] = [peer.run(params) for params in todo[k.name]]
            everything = [v for vs in http.values() for v in vs]
            rec: dict[str, Any] = {"http": {name: stats(v) for name, v in http.items()},
                   "sql": {name: stats(v) for name, v in sql.items()},
                   "overall": stats(everything)}
            out["rounds"].append(rec)
            print(f"  {db} round {rnd + 1}/{rounds}: overall p50 {rec['overall']['p50']:.1f} ms, "
                  f"p95 {rec['overall']['p95']:.1f} ms, worst kind p95 "
                  f"{max(s['p95'] for s in rec['http'].values()):.1f} ms", file=sys.stderr)
    out["summary"] = summarise(out["rounds"], kinds)
    return out


def summarise(rounds: list[dict[str, Any]], kinds: list[Kind]) -> dict[str, Any]:
    def med(path: list[str], key: str) -> float:
        vals = []
        for r in rounds:
            node = r
            for p in path:
                node = node[p]
            vals.append(node[key])
        return round(statistics.median(vals), 2) if key != "max" else round(max(vals), 2)

    summary: dict[str, Any] = {}
    for k in kinds:
        row = {key: med(["http", k.name], key) for key in ("p50", "p95", "max")}
        if k.path == API:
            row.update({f"sql_{key}": med(["sql", k.name], key) for key in ("p50", "p95")})
        summary[k.name] = row
    summary["overall"] = {key: med(["overall"], key) for key in ("p50", "p95", "max")}
    return summary


# -- one database ---------------------------------------------------------------------------


def run_database(db: str, url: str, sql_target: str, schema: str | None, args: argparse.Namespace,
                 tmp: Path, kinds: list[Kind]) -> dict[str, Any]:
    now = datetime.now(UTC).replace(tzinfo=None)
    t = time.perf_counter()
    engine = open_engine(url)
    counts = populate(engine, args.devices, now)
    token = issue_token(engine)
    engine.dispose()
    build = time.perf_counter() - t
    print(f"{db}: stored {counts['devices']:,} devices, {counts['addresses']:,} addresses, "
          f"{counts['facts']:,} facts, {counts['connections']:,} connections in {build:.1f} s",
          file=sys.stderr)
    proc, base = start_console(url, tmp / f"console-{db}.log")
    peer = SqlPeer(db, sql_target, schema)
    try:
        result = measure(db, base, token, peer, kinds, describe_plant(args.devices, now),
                         args.requests, args.repeat, args.warmup, args.seed)
    finally:
        peer.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result.update(build_seconds=round(build, 1), rows=counts)
    return result


def pg_schema(base: str) -> tuple[Engine, str, str]:
    schema = f"twbench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    return admin, schema, f"{base}?options=-csearch_path%3D{schema}"


def report(results: dict[str, Any], kinds: list[Kind], target: float) -> bool:
    dbs = list(results)
    ok = True
    head = f"{'kind':<17}" + "".join(
        f" | {db + ' p50':>12} {'p95':>7} {'max':>7} {'SQL p50':>7} {'×SQL':>5}" for db in dbs)
    print(head)
    print("-" * len(head))
    for name in [k.name for k in kinds] + ["overall"]:
        line = f"{name:<17}"
        for db in dbs:
            s = results[db]["summary"][name]
            ok &= s["p95"] <= target
            ratio = f"{s['p50'] / s['sql_p50']:.1f}" if s.get("sql_p50") else "–"
            sqlp = f"{s['sql_p50']:.1f}" if "sql_p50" in s else "–"
            flag = "" if s["p95"] <= target else "!"
            line += (f" | {s['p50']:>12.1f} {s['p95']:>6.1f}{flag or ' '} {s['max']:>7.1f} "
                     f"{sqlp:>7} {ratio:>5}")
        print(line)
    print()
    for db in dbs:
        worst = max((s["p95"], n) for n, s in results[db]["summary"].items())
        verdict = "PASS" if worst[0] <= target else "FAIL"
        print(f"{db}: p95 ≤ {target:.0f} ms for every kind: {verdict} (worst {worst[1]} {worst[0]:.1f} ms); "
              f"overall p50 {results[db]['summary']['overall']['p50']:.1f} ms, "
              f"p95 {results[db]['summary']['overall']['p95']:.1f} ms")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=None, help="devices in the store (default 100,000)")
    ap.add_argument("--requests", type=int, default=None, help="requests per kind and round (default 200)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="measurement rounds, medians reported (default 3)")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured requests per kind first")
    ap.add_argument("--quick", action="store_true", help="smoke run: 10,000 devices, 40 requests, 1 round")
    ap.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"],
                    default=["sqlite", "postgresql"])
    ap.add_argument("--database-url", default=os.environ.get("TAPWATCH_TEST_PG_URL", DEFAULT_PG),
                    help="PostgreSQL server (a private schema is created and dropped)")
    ap.add_argument("--kinds", nargs="+", choices=[k.name for k in KINDS], help="only these request kinds")
    ap.add_argument("--target-ms", type=float, default=TARGET_MS)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--tmpdir", default=None, help="where the SQLite file and console logs go")
    ap.add_argument("--json", type=Path, help="write the results as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    args = ap.parse_args()
    args.devices = args.devices or (10_000 if args.quick else 100_000)
    args.requests = args.requests or (40 if args.quick else 200)
    args.repeat = args.repeat or (1 if args.quick else 3)
    kinds = [k for k in KINDS if not args.kinds or k.name in args.kinds]
    print(f"{args.devices:,} devices; {len(kinds)} request kinds × {args.requests} requests × "
          f"{args.repeat} rounds per database", file=sys.stderr)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="twbench-", dir=args.tmpdir) as d:
        tmp = Path(d)
        if "sqlite" in args.databases:
            path = tmp / "inventory.db"
            results["sqlite"] = run_database("sqlite", f"sqlite:///{path}", str(path), None, args, tmp, kinds)
        if "postgresql" in args.databases:
            admin, schema, url = pg_schema(args.database_url)
            try:
                dsn = args.database_url.replace("postgresql+psycopg://", "postgresql://")
                results["postgresql"] = run_database("postgresql", url, dsn, schema, args, tmp, kinds)
            finally:
                with admin.begin() as c:
                    c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
                admin.dispose()
    print()
    ok = report(results, kinds, args.target_ms)
    if args.json:
        args.json.write_text(json.dumps({
            "devices": args.devices, "requests_per_kind": args.requests, "rounds": args.repeat,
            "target_ms": args.target_ms, "kinds": {k.name: {"path": k.path, "what": k.what} for k in kinds},
            "command": " ".join(sys.argv), "python": platform.python_version(),
            "machine": platform.platform(), "cpus": os.cpu_count(), "results": results, "pass": ok,
        }, indent=2))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
