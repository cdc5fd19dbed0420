"""Live capture for real: a sensor on a veth in a network namespace, real DHCP, DNS, HTTP and
Modbus/TCP between processes in two namespaces, checked in the sensor's inventory."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from tapwatch.sensor.rolling import extract, files
from tapwatch.store.alert_models import Alert
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.evidence import devices_json
from tapwatch.store.models import Connection, Event
from test_sensor_netns import (
    CLI_IP,
    PY,
    SRV_IP,
    Net,
    make_traffic,
    net,  # noqa: F401 - fixture
    start_sensor,
    start_servers,
    stop,
    summary,
    wait_for,
    wait_line,
)


def _devices(db: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    engine = open_engine(str(db))
    with sessions(engine)() as s:
        rows = {d["ip"]: d for d in devices_json(s, with_facts=True) if d["ip"]}
    engine.dispose()
    return rows


def _connections(db: Path) -> set[tuple[str, str, int, str]]:
    engine = open_engine(str(db))
    with sessions(engine)() as s:
        out = {(c.client_ip, c.transport, c.server_port, c.protocol) for c in s.scalars(select(Connection))}
    engine.dispose()
    return out


def test_live_inventory_from_real_traffic(net: Net, tmp_path: Path) -> None:  # noqa: F811
    start_servers(net)
    db = tmp_path / "sensor.db"
    rolling = tmp_path / "rolling"
    sensor = start_sensor(net, db, "--rolling-dir", str(rolling), "--rolling-gb", "0.01")
    wait_for(lambda: db.exists(), 20, "the sensor database")
    time.sleep(1.5)  # the ring is set up once the database is migrated
    t0 = time.time_ns()
    make_traffic(net)
    time.sleep(1.5)
    out, err = stop(sensor)
    assert sensor.returncode == 0, err
    totals = summary(out)
    assert totals["packets"] > 30 and totals["drops"] == 0, totals

    devices = _devices(db)
    cli_mac, srv_mac = net.mac(net.cli, net.cli_if), net.mac(net.srv, net.srv_if)
    assert devices[CLI_IP]["mac"] == cli_mac and devices[SRV_IP]["mac"] == srv_mac
    conns = _connections(db)
    assert (CLI_IP, "tcp", 502, "modbus") in conns
    assert (CLI_IP, "tcp", 8000, "http") in conns or any(c[:3] == (CLI_IP, "tcp", 8000) for c in conns)
    assert (CLI_IP, "udp", 53, "dns") in conns
    facts = {(f["attribute"], f["value"]) for f in devices[SRV_IP]["facts"]}
    assert any(v == "TapwatchTest Automation" for _, v in facts), facts  # Modbus device identification
    cli_facts = {(f["attribute"], f["value"], f["source"]) for d in devices.values() for f in d["facts"]
                 if d["mac"] == cli_mac}
    engine = open_engine(str(db))
    with sessions(engine)() as s:
        all_facts = {(f.mac, f.attribute, f.value, f.source) for f in s.scalars(select_facts())}
        events = list(s.scalars(select(Event)))
    engine.dispose()
    assert any(m == cli_mac and v == "plc-line-7" for m, _a, v, _s in all_facts), all_facts  # DHCP
    assert any(v.startswith("TapwatchProbe/1.0") for _m, _a, v, _s in all_facts), all_facts  # HTTP UA
    assert cli_facts or all_facts
    assert events is not None

    # the rolling capture holds the same packets, and a device's window can be cut out
    assert files(rolling)
    got = extract(rolling, t0 - 10**9, time.time_ns(), tmp_path / "cut.pcap", ip=CLI_IP)
    assert got.packets > 10
    only_srv = extract(rolling, t0 - 10**9, time.time_ns(), tmp_path / "cut2.pcap", mac=srv_mac)
    assert 0 < only_srv.packets <= totals["packets"]


def select_facts():  # type: ignore[no-untyped-def]
    from tapwatch.store.models import Fact

    return select(Fact)


def test_flushes_merge_deltas_without_double_counting(net: Net, tmp_path: Path) -> None:  # noqa: F811
    """Several flushes while traffic flows: the stored counts equal the packets sent, once."""
    start_servers(net)
    db = tmp_path / "sensor.db"
    sensor = start_sensor(net, db, "--no-dissect", flush=0.5)
    wait_for(lambda: db.exists(), 20, "the sensor database")
    time.sleep(1.5)
    code = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for i in range(300):\n"
            "    s.sendto(b'x' * 100, (sys.argv[1], 9999))\n"
            "    time.sleep(0.01)\n")
    net.python(net.cli, code, SRV_IP)  # ~3 s: spans several flushes
    time.sleep(1.2)
    out, err = stop(sensor)
    assert sensor.returncode == 0, err
    assert summary(out)["flushes"] >= 4
    engine = open_engine(str(db))
    with sessions(engine)() as s:
        c = s.scalar(select(Connection).where(Connection.server_port == 9999))
    engine.dispose()
    assert c is not None and c.packets_c2s == 300 and c.bytes_c2s == 300 * (100 + 42)


def test_survives_interface_down_and_up(net: Net, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "sensor.db"
    sensor = start_sensor(net, db, "--no-dissect", flush=0.5)
    wait_for(lambda: db.exists(), 20, "the sensor database")
    time.sleep(1.5)
    send = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for i in range(50): s.sendto(b'y' * 10, (sys.argv[1], int(sys.argv[2])))\n")
    net.python(net.cli, send, SRV_IP, "7001")
    net.link(net.srv, net.srv_if, "down")
    time.sleep(2)
    net.link(net.srv, net.srv_if, "up")
    net.link(net.cli, net.cli_if, "down")
    net.link(net.cli, net.cli_if, "up")
    time.sleep(2.5)  # the veth carrier comes back
    net.python(net.cli, send, SRV_IP, "7002")
    time.sleep(1.5)
    out, err = stop(sensor)
    assert sensor.returncode == 0, err
    assert sensor.poll() == 0
    ports = {p for _ip, _t, p, _proto in _connections(db)}
    assert {7001, 7002} <= ports, (ports, err[-2000:])


def test_kernel_drops_are_reported(net: Net) -> None:  # noqa: F811
    """A ring nobody reads overflows; the kernel's drop counter reaches the stats."""
    code = ("import socket, sys, time\n"
            "from tapwatch.sensor.live import LiveSource\n"
            "src = LiveSource(sys.argv[1], ring_mb=2, block_kb=64)\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "st = src.poll_stats()\n"
            "print(st.packets, st.drops, st.kernel_packets, flush=True)\n")
    p = net.spawn(net.srv, PY, "-u", "-c", code, net.srv_if, stdin=subprocess.PIPE)
    wait_line(p)
    flood = ("import socket, sys\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "for i in range(20000): s.sendto(b'z' * 1000, (sys.argv[1], 9))\n")
    net.python(net.cli, flood, SRV_IP)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("\n")
    p.stdin.flush()
    delivered, drops, seen = (int(x) for x in p.stdout.readline().split())
    p.wait(10)
    assert drops > 1000 and seen >= drops, (delivered, drops, seen)


SYSLOG_RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
print("ready", s.getsockname()[1], flush=True)
while True:
    print(s.recv(65535).decode("utf-8", "replace").replace("\n", " "), flush=True)
"""

SCRAPE = r"""
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode())
"""


def test_live_alerts_are_forwarded_and_metrics_served(net: Net, tmp_path: Path) -> None:  # noqa: F811
    """Once learning has ended, devices that appear on the wire raise alerts on the sensor
    itself; its forwarding rules send them to syslog, its metrics endpoint counts them, and
    the packets behind an alert come out of its rolling capture."""
    from test_sensor_netns import TAPWATCH, free_port

    start_servers(net)
    receiver = net.spawn(net.srv, PY, "-u", "-c", SYSLOG_RECEIVER)
    assert receiver.stdout is not None
    line = receiver.stdout.readline()
    assert line.startswith("ready"), line
    syslog_port = line.split()[1]
    db = tmp_path / "sensor.db"
    for cmd in (["learning", "stop"],
                ["forwarding", "add", "siem", "--action", "syslog", "--host", "127.0.0.1",
                 "--port", syslog_port, "--transport", "udp", "--format", "cef"]):
        r = subprocess.run([TAPWATCH, *cmd, "--db", str(db)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    metrics_port = free_port()
    rolling = tmp_path / "rolling"
    sensor = start_sensor(net, db, "--metrics-port", str(metrics_port), "--rolling-dir", str(rolling))
    wait_for(lambda: db.exists(), 20, "the sensor database")
    time.sleep(1.5)
    make_traffic(net)

    def alerts() -> list[Alert]:
        engine = open_engine(str(db))
        with sessions(engine)() as s:
            rows = list(s.scalars(select(Alert)))
        engine.dispose()
        return rows

    wait_for(lambda: any(a.type == "new_device" and a.src_ip == CLI_IP for a in alerts()), 20,
             "a new-device alert for the client")
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def scrape() -> float:
        """The sensor's counters now; its packets so far (the alert may come from the
        first flush, before the rest of the traffic was counted)."""
        scraped = net.python(net.srv, SCRAPE, str(metrics_port))
        counters.clear()
        counters.update({(s.name, tuple(sorted(s.labels.items()))): s.value
                         for m in text_string_to_metric_families(scraped) for s in m.samples})
        return counters.get(("tapwatch_sensor_packets_total", ()), 0.0)

    wait_for(lambda: scrape() > 30, 20, "the sensor to count the traffic", step=1.0)
    out, err = stop(sensor)
    assert sensor.returncode == 0, err
    assert "new alerts" in err  # the status line counts them

    assert counters[("tapwatch_sensor_packets_total", ())] > 30
    assert counters[("tapwatch_sensor_drops_total", ())] == 0
    assert sum(v for (name, labels), v in counters.items()
               if name == "tapwatch_alerts" and ("status", "new") in labels) >= 1

    receiver.terminate()
    received, _ = receiver.communicate(timeout=10)
    new_device = [a for a in alerts() if a.type == "new_device"]
    assert any(CLI_IP in m and "CEF:0|" in m for m in received.splitlines()), received[-2000:]
    assert received.count("CEF:0|") == len(alerts()) >= len(new_device)  # each alert sent once

    client = next(a for a in new_device if a.src_ip == CLI_IP)
    cut = tmp_path / "alert.pcap"
    r = subprocess.run([TAPWATCH, "alerts", "pcap", str(client.id), "--db", str(db), "-o", str(cut)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    from scapy.all import IP, Ether, rdpcap

    packets = rdpcap(str(cut))
    cli_mac = net.mac(net.cli, net.cli_if)
    assert len(packets) > 0 and r.stdout.strip().endswith(f"{len(packets)} packets")
    assert all(p[Ether].src == cli_mac or p[Ether].dst == cli_mac
               or (IP in p and CLI_IP in (p[IP].src, p[IP].dst)) for p in packets)
