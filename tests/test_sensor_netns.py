"""Helpers for the live sensor tests: network namespaces joined by veth pairs, real traffic.

Topology of one `Net` (names are unique per test, everything is removed at the end):

    ns "cli" (10.77.1.1) ──veth── ns "srv" (10.77.1.2) ──veth uplink── root namespace
      clients                      servers + the sensor      (10.x.y.2 ↔ 10.x.y.1)  console

The sensor runs in "srv" and captures its device-side veth, which sees both directions.
The console runs in the root namespace and is reached over the uplink, so taking the
uplink down cuts the sensor off from the console. Tests need root (netns, AF_PACKET); when
that is missing they fail saying so, they do not skip.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import Connection, Device

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TAPWATCH = str(BIN / "tapwatch")
PY = sys.executable
CLI_IP, SRV_IP = "10.77.1.1", "10.77.1.2"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=60)


def require_root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the live sensor tests need root and iproute2 (ip netns, veth, AF_PACKET)")


@dataclass
class Net:
    tag: str
    cli: str  # namespace names
    srv: str
    cli_if: str = "cli0"
    srv_if: str = "srv0"
    up_root: str = ""  # uplink end in the root namespace
    up_ip_root: str = ""
    up_ip_srv: str = ""
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, ns: str, *cmd: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def spawn(self, ns: str | None, *cmd: str, **kw: Any) -> subprocess.Popen[str]:
        full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
        p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        self.procs.append(p)
        return p

    def python(self, ns: str, code: str, *args: str, timeout: float = 60) -> str:
        out = self.run(ns, PY, "-c", code, *args, timeout=timeout, check=False)
        if out.returncode != 0:
            raise AssertionError(f"helper failed in {ns}: {out.stderr[-2000:]}")
        return out.stdout

    def mac(self, ns: str, ifname: str) -> str:
        return self.run(ns, "cat", f"/sys/class/net/{ifname}/address").stdout.strip()

    def link(self, ns: str | None, ifname: str, state: str) -> None:
        if ns:
            self.run(ns, "ip", "link", "set", ifname, state)
        else:
            sh("ip", "link", "set", ifname, state)


def _make_net() -> Net:
    require_root()
    tag = uuid.uuid4().hex[:6]
    net = Net(tag, f"twc{tag}", f"tws{tag}")
    a, b = random.randint(16, 31), random.randint(0, 255)
    net.up_root, net.up_ip_root, net.up_ip_srv = f"twu{tag}", f"172.{a}.{b}.1", f"172.{a}.{b}.2"
    steps = [
        ("ip", "netns", "add", net.cli), ("ip", "netns", "add", net.srv),
        ("ip", "link", "add", f"twa{tag}", "type", "veth", "peer", "name", f"twb{tag}"),
        ("ip", "link", "set", f"twa{tag}", "netns", net.cli),
        ("ip", "link", "set", f"twb{tag}", "netns", net.srv),
        ("ip", "netns", "exec", net.cli, "ip", "link", "set", f"twa{tag}", "name", net.cli_if),
        ("ip", "netns", "exec", net.srv, "ip", "link", "set", f"twb{tag}", "name", net.srv_if),
        ("ip", "netns", "exec", net.cli, "ip", "addr", "add", f"{CLI_IP}/24", "dev", net.cli_if),
        ("ip", "netns", "exec", net.srv, "ip", "addr", "add", f"{SRV_IP}/24", "dev", net.srv_if),
        ("ip", "link", "add", net.up_root, "type", "veth", "peer", "name", f"twv{tag}"),
        ("ip", "link", "set", f"twv{tag}", "netns", net.srv),
        ("ip", "netns", "exec", net.srv, "ip", "link", "set", f"twv{tag}", "name", "up0"),
        ("ip", "addr", "add", f"{net.up_ip_root}/24", "dev", net.up_root),
        ("ip", "netns", "exec", net.srv, "ip", "addr", "add", f"{net.up_ip_srv}/24", "dev", "up0"),
        ("ip", "link", "set", net.up_root, "up"),
    ]
    for ns, ifs in ((net.cli, ("lo", net.cli_if)), (net.srv, ("lo", net.srv_if, "up0"))):
        for i in ifs:
            steps.append(("ip", "netns", "exec", ns, "ip", "link", "set", i, "up"))
    try:
        for step in steps:
            out = subprocess.run(step, capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                pytest.fail(f"network set-up failed: {' '.join(step)}: {out.stderr.strip()}")
    except BaseException:
        _remove_net(net)
        raise
    return net


def _remove_net(net: Net) -> None:
    for p in net.procs:
        if p.poll() is None:
            p.kill()
        try:
            p.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass
    subprocess.run(["ip", "link", "del", net.up_root], capture_output=True)
    for ns in (net.cli, net.srv):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def net() -> Iterator[Net]:
    n = _make_net()
    try:
        yield n
    finally:
        _remove_net(n)


# -- servers and clients run inside the namespaces ------------------------------------------

MODBUS_SERVER = r"""
import socket, struct, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 502)); s.listen(4); print("ready", flush=True)
objs = [b"TapwatchTest Automation", b"TW-PLC-1000", b"V2.7.1"]
while True:
    c, _ = s.accept()
    while True:
        h = c.recv(7)
        if len(h) < 7:
            break
        tid, pid, ln, unit = struct.unpack(">HHHB", h)
        pdu = c.recv(ln - 1)
        if pdu[0] == 3:
            n = struct.unpack(">H", pdu[3:5])[0]
            body = bytes([3, 2 * n]) + b"\x00\x2a" * n
        elif pdu[0] == 0x2B:
            body = bytes([0x2B, 0x0E, 1, 1, 0, 0, len(objs)])
            for i, o in enumerate(objs):
                body += bytes([i, len(o)]) + o
        else:
            body = bytes([pdu[0] | 0x80, 1])
        c.sendall(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
    c.close()
"""

MODBUS_CLIENT = r"""
import socket, struct, sys
c = socket.create_connection((sys.argv[1], 502), timeout=5)
def ask(tid, pdu):
    c.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, 1) + pdu)
    h = c.recv(7); ln = struct.unpack(">H", h[4:6])[0]; return c.recv(ln - 1)
ask(1, bytes([0x2B, 0x0E, 1, 0]))
for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 5):
    ask(2 + i, bytes([3, 0, 0, 0, 4]))
c.close()
"""

DNS_SERVER = r"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53)); print("ready", flush=True)
while True:
    q, addr = s.recvfrom(2048)
    end = 12
    while q[end]: end += 1 + q[end]
    question = q[12:end + 5]
    ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([10, 77, 1, 2])
    s.sendto(q[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1, 0, 0) + question + ans, addr)
"""

DNS_CLIENT = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
for i, name in enumerate(sys.argv[2:]):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    head = struct.pack(">HHHHHH", 0x1000 + i, 0x0100, 1, 0, 0, 0)
    s.sendto(head + qname + b"\x00\x01\x00\x01", (sys.argv[1], 53))
    s.recvfrom(2048)
"""

HTTP_CLIENT = r"""
import sys, urllib.request
for path in sys.argv[2:]:
    ua = {"User-Agent": "TapwatchProbe/1.0 (netns test)"}
    req = urllib.request.Request(f"http://{sys.argv[1]}:8000{path}", headers=ua)
    urllib.request.urlopen(req, timeout=5).read()
"""

DHCP_CLIENT = r"""
import sys
from scapy.all import BOOTP, DHCP, IP, UDP, Ether, sendp, get_if_hwaddr
iface = sys.argv[1]; mac = get_if_hwaddr(iface)
pkt = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
       / UDP(sport=68, dport=67) / BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")), xid=0x1234)
       / DHCP(options=[("message-type", "discover"), ("hostname", "plc-line-7"),
                       ("vendor_class_id", "TapwatchVendor 1.0"), "end"]))
sendp(pkt, iface=iface, count=int(sys.argv[2]) if len(sys.argv) > 2 else 1, verbose=False)
"""


def wait_line(p: subprocess.Popen[str], text: str = "ready", timeout: float = 20) -> None:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if text in line:
            return
        if p.poll() is not None:
            raise AssertionError(f"process ended: {p.stderr.read() if p.stderr else ''}")
    raise AssertionError(f"no {text!r} from {p.args}")


def start_servers(net: Net) -> None:
    for code in (MODBUS_SERVER, DNS_SERVER):
        wait_line(net.spawn(net.srv, PY, "-u", "-c", code))
    http = net.spawn(net.srv, PY, "-m", "http.server", "8000", "--bind", "0.0.0.0", cwd=str(ROOT))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if net.run(net.srv, PY, "-c", "import socket; socket.create_connection(('127.0.0.1', 8000), 1)",
                   check=False).returncode == 0:
            return
        assert http.poll() is None, "http.server did not start"
        time.sleep(0.2)
    raise AssertionError("http.server did not start")


def make_traffic(net: Net, rounds: int = 1) -> None:
    """DHCP, DNS, HTTP and Modbus/TCP from the client namespace to the server namespace."""
    for _ in range(rounds):
        net.python(net.cli, DHCP_CLIENT, net.cli_if)
        net.python(net.cli, DNS_CLIENT, SRV_IP, "plc7.plant.example", "historian.plant.example")
        net.python(net.cli, HTTP_CLIENT, SRV_IP, "/README.md", "/pyproject.toml")
        net.python(net.cli, MODBUS_CLIENT, SRV_IP, "5")


# -- the sensor and the console as processes -----------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def start_sensor(net: Net, db: Path, *extra: str, flush: float = 1.0) -> subprocess.Popen[str]:
    return net.spawn(net.srv, TAPWATCH, "sensor", "run", "--interface", net.srv_if, "--db", str(db),
                     "--name", f"sensor-{net.tag}", "--flush-seconds", str(flush), *extra)


def stop(p: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[str, str]:
    p.send_signal(sig)
    out, err = p.communicate(timeout=timeout)
    return out, err


def summary(out: str) -> dict[str, Any]:
    return json.loads(out.strip().splitlines()[-1])


@dataclass
class ConsoleProc:
    db: Path
    port: int
    net: Net
    proc: subprocess.Popen[str] | None = None
    tls: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.net.up_ip_root}:{self.port}"

    def start(self) -> None:
        args = [TAPWATCH, "serve", "--db", str(self.db), "--host", "0.0.0.0", "--port", str(self.port),
                "--log-file", str(self.db.with_suffix(".log"))]
        if self.tls:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        self.proc = self.net.spawn(None, *args)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    died = self.proc.stderr.read() if self.proc.stderr else ""
                    raise AssertionError(f"console died: {died}") from None
                time.sleep(0.2)
        raise AssertionError("console did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.communicate(timeout=10)


def register_sensor(console_db: Path, name: str, site: str = "plant-a", zone: str = "cell-1") -> str:
    from tapwatch.sensor.ingest import add_sensor

    engine = open_engine(str(console_db))
    with sessions(engine).begin() as s:
        _sensor, token = add_sensor(s, name, site, zone, "test")
    engine.dispose()
    return token


Totals = tuple[dict[tuple[str, str], tuple[int, ...]], dict[tuple[Any, ...], tuple[int, ...]]]


def inventory_totals(db: str) -> Totals:
    """Devices and connections with their counters: what must agree between sensor and console."""
    engine = open_engine(db)
    with sessions(engine)() as s:
        devices = {(d.key_mac, d.key_ip): (d.packets_sent, d.packets_received, d.bytes_sent, d.bytes_received)
                   for d in s.scalars(select(Device))}
        conns = {(c.client_mac, c.client_ip, c.server_mac, c.server_ip, c.transport, c.server_port):
                 (c.packets_c2s, c.packets_s2c, c.bytes_c2s, c.bytes_s2c)
                 for c in s.scalars(select(Connection))}
    engine.dispose()
    return devices, conns


def outbox_backlog(db: Path) -> int:
    from tapwatch.sensor.outbox import Outbox

    engine = open_engine(str(db))
    with sessions(engine)() as s:
        n = Outbox.backlog(s)[0]
    engine.dispose()
    return n


def wait_for(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")
