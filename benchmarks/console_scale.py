"""Console scale benchmark on PostgreSQL: many sensors uploading at once to several console
processes, then query latency; next to raw psycopg COPY of the same rows (the lower bound).

Each simulated sensor owns a block of devices (MAC+IP) and connections among them and
uploads them the way a sensor does: gzip'd JSON batches of one flush (addresses, then
connections), each applied exactly once. Two `tapwatch serve` processes share one fresh
PostgreSQL schema; uploads go to both, round robin, from a thread pool. The load average
is printed around the upload, since the machine may be busy with other work.

    .venv/bin/python benchmarks/console_scale.py                 # 50 sensors, 10k devices, 100k connections
    .venv/bin/python benchmarks/console_scale.py --full          # 50 sensors, 1 M devices, 10 M connections
    TAPWATCH_TEST_PG_URL=postgresql+psycopg://user:pw@host/db ... (default: the test server)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, text

from tapwatch.console import auth
from tapwatch.decode.aggregate import AddressRecord, ConnectionRecord
from tapwatch.sensor import wire
from tapwatch.sensor.ingest import add_sensor
from tapwatch.store.db import open_engine, sessions

TAPWATCH = str(Path(sys.executable).parent / "tapwatch")
V4 = 0xFFFF << 32
T0 = 1_700_000_000 * 10**9


def sensor_records(k: int, devices: int,
                   connections: int) -> tuple[list[AddressRecord], list[ConnectionRecord]]:
    macs = [0x020000000000 + (k << 24) + i for i in range(devices)]
    ips = [V4 | (10 << 24) | ((k & 0xFF) << 16) | i for i in range(devices)]
    addresses = [AddressRecord(macs[i], 0, ips[i], T0, T0 + 10**9, 10, 1000, 12, 1400, 0, [0, 0, 0, 0], [])
                 for i in range(devices)]
    conns = []
    for j in range(connections):
        c, s = j % devices, (j // devices + 1 + j) % devices
        conns.append(ConnectionRecord(macs[c], 0, ips[c], macs[s], 0, ips[s], 6, 1000 + j // devices, 0,
                                      T0, T0 + 10**9, 5, 500, 6, 700))
    return addresses, conns


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, token: str, body: bytes) -> dict[str, object]:
    req = urllib.request.Request(url + "/api/v1/sensors/upload", data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Encoding": "gzip", "Content-Type": "application/json"})
    for attempt in range(5):
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]
        except OSError:
            if attempt == 4:
                raise
            time.sleep(1)
    raise AssertionError


def get_ms(url: str, token: str, path: str, n: int = 10) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def copy_peer(dsn: str, schema: str, sensors: int, devices: int, connections: int) -> float:
    """Seconds for psycopg COPY of the same rows into plain tables: the floor for ingestion.

    The rows are made again sensor by sensor (as for the upload), never all held at once.
    """
    with psycopg.connect(dsn, options=f"-csearch_path={schema}") as con:
        con.execute("CREATE TABLE peer_devices (mac bigint, ip bigint, first_ns bigint, last_ns bigint, "
                    "ps bigint, bs bigint, pr bigint, br bigint)")
        con.execute("CREATE TABLE peer_connections (cmac bigint, cip bigint, smac bigint, sip bigint, "
                    "proto int, port int, first_ns bigint, last_ns bigint, p1 bigint, b1 bigint, "
                    "p2 bigint, b2 bigint, UNIQUE (cmac, cip, smac, sip, proto, port))")
        took = 0.0
        for k in range(sensors):
            addresses, conns = sensor_records(k, devices, connections)
            t = time.perf_counter()
            with con.cursor() as cur:
                with cur.copy("COPY peer_devices FROM STDIN") as cp:
                    for a in addresses:
                        cp.write_row((a.mac, a.ip_lo, a.first_ns, a.last_ns, a.packets_sent, a.bytes_sent,
                                      a.packets_received, a.bytes_received))
                with cur.copy("COPY peer_connections FROM STDIN") as cp:
                    for c in conns:
                        cp.write_row((c.client_mac, c.client_lo, c.server_mac, c.server_lo, c.ipproto,
                                      c.server_port, c.first_ns, c.last_ns, c.packets_c2s, c.bytes_c2s,
                                      c.packets_s2c, c.bytes_s2c))
            took += time.perf_counter() - t
        t = time.perf_counter()
        con.commit()
        return took + time.perf_counter() - t


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensors", type=int, default=50)
    ap.add_argument("--devices", type=int, default=10_000, help="in total")
    ap.add_argument("--connections", type=int, default=100_000, help="in total")
    ap.add_argument("--full", action="store_true", help="1 M devices and 10 M connections")
    ap.add_argument("--consoles", type=int, default=2)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    if args.full:
        args.devices, args.connections = 1_000_000, 10_000_000
    base = os.environ.get("TAPWATCH_TEST_PG_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test")
    schema = f"twbench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{base}?options=-csearch_path%3D{schema}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        engine = open_engine(url)
        tokens = []
        with sessions(engine).begin() as s:
            user = auth.add_user(s, "bench", "a long password", "owner", "bench")
            admin_token = auth.issue_token(s, user, "bench", "bench")
            for k in range(args.sensors):
                tokens.append(add_sensor(s, f"bench-{k}", "site", f"zone-{k % 5}", "bench")[1])
        engine.dispose()
        per_dev, per_conn = args.devices // args.sensors, args.connections // args.sensors
        print(f"{args.sensors} sensors × {per_dev} devices, {per_conn} connections; "
              f"{args.consoles} console processes on PostgreSQL")
        # per sensor, its flush's batches in order (addresses, then connections); sensors in parallel
        by_sensor: dict[int, list[bytes]] = {}
        t = time.perf_counter()
        for k in range(args.sensors):
            addresses, conns = sensor_records(k, per_dev, per_conn)
            by_sensor[k] = [wire.encode(kind, data)[1]
                            for kind, data, _n in wire.delta_batches(addresses, conns, None)]
        rows = args.sensors * (per_dev + per_conn)
        print(f"encoded {sum(map(len, by_sensor.values()))} batches in {time.perf_counter() - t:.1f}s")
        urls = []
        with tempfile.TemporaryDirectory() as d:
            for i in range(args.consoles):
                port = free_port()
                procs.append(subprocess.Popen([TAPWATCH, "serve", "--database-url", url, "--port", str(port),
                                               "--log-file", str(Path(d) / f"c{i}.log")],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                urls.append(f"http://127.0.0.1:{port}")
            for u in urls:
                for _ in range(150):
                    try:
                        urllib.request.urlopen(u + "/api/v1/openapi.json", timeout=2).read()
                        break
                    except OSError:
                        time.sleep(0.2)

            def upload(k: int) -> None:
                for body in by_sensor[k]:
                    post(urls[k % len(urls)], tokens[k], body)

            print(f"uploading; {load()}")
            t = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as pool:
                list(pool.map(upload, range(args.sensors)))
            ingest = time.perf_counter() - t
            n_dev, n_conn = args.sensors * per_dev, args.sensors * per_conn
            print(f"tapwatch console ingestion: {ingest:.1f}s, {n_dev / ingest:,.0f} devices/s, "
                  f"{n_conn / ingest:,.0f} connections/s ({rows / ingest:,.0f} rows/s); {load()}")
            # a re-send of everything (every acknowledgement lost) applies nothing
            t = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as pool:
                list(pool.map(upload, range(args.sensors)))
            print(f"re-sending every batch (all recognised as applied): {time.perf_counter() - t:.1f}s")
            for path in ("/api/v1/devices?page=1&page_size=100", "/api/v1/connections?page=1&page_size=100",
                         "/api/v1/sensors", "/api/v1/devices?page=50&page_size=100"):
                print(f"query {path}: median {get_ms(urls[0], admin_token, path):.1f} ms")
            dsn = base.replace("postgresql+psycopg://", "postgresql://")
            peer = copy_peer(dsn, schema, args.sensors, per_dev, per_conn)
            print(f"peer psycopg COPY of the same rows: {peer:.1f}s, {rows / peer:,.0f} rows/s "
                  f"(tapwatch is {ingest / peer:.1f}x the raw COPY time)")
            with psycopg.connect(dsn, options=f"-csearch_path={schema}") as con:
                got_dev = con.execute("select count(*) from devices").fetchone()
                got_conn = con.execute("select count(*) from connections").fetchone()
            print(f"stored: {got_dev[0] if got_dev else '?'} devices, "
                  f"{got_conn[0] if got_conn else '?'} connections")
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    main()
