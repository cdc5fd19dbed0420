"""The console's set-based merge of sensor batches builds the same inventory as the sensor's
own merge, field by field: from real captures, when a MAC turns out to be a gateway midway,
in the batch order of older sensors, and when two consoles apply overlapping batches from
several sensors at once on PostgreSQL."""

from __future__ import annotations

import threading
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from inventory_helpers import CAPTURES
from tapwatch.decode.aggregate import A_ARP, AddressRecord, ConnectionRecord
from tapwatch.sensor import ingest, wire
from tapwatch.store import inventory
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.identity import refresh_identity
from tapwatch.store.models import Address, Connection, Device
from tapwatch.store.sensor_models import IdentityPending, SensorBatch
from test_sensor_console import CAPTURE, build_outbox, console, post  # noqa: F401 - fixture

V4 = 0xFFFF << 32
T0 = 1_700_000_000 * 10**9


Inventory = tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]


def snapshot(engine: Engine, with_sensor: bool = True) -> Inventory:
    """Devices, addresses and connections by their keys, with devices named by key, not id."""
    with sessions(engine)() as s:
        devices = list(s.scalars(select(Device)))
        key = {d.id: (d.key_mac, d.key_ip) for d in devices}
        devs = {(d.key_mac, d.key_ip): (
            d.mac, d.ip, d.is_gateway, d.sensor if with_sensor else None, d.first_seen, d.last_seen,
            d.packets_sent, d.packets_received, d.bytes_sent, d.bytes_received, d.vlans, d.protocols,
            d.name, d.vendor, d.type, d.device_class, d.purdue_level, d.model, d.os, d.firmware, d.serial,
        ) for d in devices}
        addrs = {(a.mac, a.ip): (
            a.role, key.get(a.device_id) if a.device_id else None, a.flags, a.first_seen, a.last_seen,
            a.packets_sent, a.packets_received, a.bytes_sent, a.bytes_received, a.vlans, a.protocols,
        ) for a in s.scalars(select(Address))}
        conns = {(c.client_mac, c.client_ip, c.server_mac, c.server_ip, c.transport, c.server_port): (
            c.protocol, key.get(c.client_device_id) if c.client_device_id else None,
            key.get(c.server_device_id) if c.server_device_id else None, c.first_seen, c.last_seen,
            c.packets_c2s, c.bytes_c2s, c.packets_s2c, c.bytes_s2c,
        ) for c in s.scalars(select(Connection))}
    return devs, addrs, conns


def merge_locally(engine: Engine, addresses: list[AddressRecord], connections: list[ConnectionRecord],
                  sensor: str = "s1") -> None:
    """One flush the way the sensor stores it in its own inventory."""
    with sessions(engine).begin() as s:
        stats = inventory.merge_run(s, addresses, connections, sensor)
        refresh_identity(s, stats.device_ids)


def batches(addresses: list[AddressRecord], connections: list[ConnectionRecord],
            old_order: bool = False) -> list[dict[str, Any]]:
    """Decoded upload documents of one flush; `old_order`: connections first, no `more` marks."""
    parts = list(wire.delta_batches(addresses, connections, None))
    if old_order:
        parts = sorted(parts, key=lambda p: p[0] != "connections")
        for _kind, data, _n in parts:
            data.pop(wire.MORE, None)
    return [wire.decode(wire.encode(kind, data)[1]) for kind, data, _n in parts]


def address(mac: int, ip: int, packets: int = 10, flags: int = 0, t: int = 0) -> AddressRecord:
    return AddressRecord(mac, 0, V4 | ip, T0 + t, T0 + t + 10**9, packets, 100 * packets, packets,
                         90 * packets, flags, [0, 0, 0, 0], [])


def connection(cmac: int, cip: int, smac: int, sip: int, port: int, packets: int = 4) -> ConnectionRecord:
    return ConnectionRecord(cmac, 0, V4 | cip, smac, 0, V4 | sip, 6, port, 0, T0, T0 + 10**9,
                            packets, 60 * packets, packets, 70 * packets)


@pytest.mark.parametrize("capture", [CAPTURE, CAPTURES / "iot-dataset__schlage-lock-01.pcap"])
def test_console_inventory_equals_the_sensors_field_by_field(console, tmp_path: Path,  # noqa: F811
                                                             capture: Path) -> None:  # type: ignore[no-untyped-def]
    client, engine, tok = console
    rows = build_outbox(tmp_path / "sensor.db", capture, window=1 << 14)
    flush_ends = [r for r in rows if r.kind != "health" and not wire.more_follow(wire.decode(r.body)["data"])]
    assert len(flush_ends) >= 3  # several flushes
    for r in rows:
        assert post(client, tok["s1"], r.body).status_code == 200
    local = open_engine(str(tmp_path / "sensor.db"))
    expected = snapshot(local)
    local.dispose()
    assert snapshot(engine) == expected
    assert expected[0] and expected[2]
    with sessions(engine)() as s:
        assert s.scalar(select(func.count()).select_from(IdentityPending)) == 0


@pytest.mark.parametrize("old_order", [False, True])
def test_replanned_devices_are_relinked(tmp_path: Path, old_order: bool) -> None:
    """A MAC found to be a gateway, and a host whose main address changes (its IPv6 address
    moves to the new main device, with its connections)."""
    router, host, server = 0x02AA00000001, 0x02BB00000002, 0x02CC00000003
    lan, here, moved = 0x0A000001, 0x0A000002, 0x0A000003  # 10.0.0.1 (announced in ARP), .2, .3
    internet = [0x08080808, 0x01010101, 0x09090909]
    v6 = 0x20010DB800000000  # 2001:db8::/64
    flushes = [
        # the router's MAC with one public address: still an ordinary device of its own
        ([address(router, lan, flags=A_ARP), address(router, internet[0], 30), address(host, here),
          v6_address(host, v6, 2), v6_address(server, v6, 1)],
         [connection(host, here, router, internet[0], 443),
          ConnectionRecord(host, v6, 2, server, v6, 1, 6, 22, 0, T0, T0 + 10**9, 3, 300, 3, 400)]),
        # two more public addresses behind it: a gateway, and 8.8.8.8's device goes; the host's
        # busiest IPv4 address is now .3, so its IPv6 address belongs to that device
        ([address(router, internet[1], 5, t=5), address(router, internet[2], 5, t=5),
          address(host, moved, 500, t=5)],
         [connection(host, here, router, internet[1], 53), connection(host, here, router, internet[0], 443)]),
    ]
    local, remote = open_engine(str(tmp_path / "sensor.db")), open_engine(str(tmp_path / "console.db"))
    with sessions(remote).begin() as s:
        sensor_id = ingest.add_sensor(s, "s1", "plant", "cell", "test")[0].id
    for i, (addresses, connections) in enumerate(flushes):
        merge_locally(local, addresses, connections)
        for doc in batches(addresses, connections, old_order):
            assert ingest.apply_batch(sessions(remote), sensor_id, doc) is True
        got, want = snapshot(remote), snapshot(local)
        assert got == want, f"after flush {i + 1}"
    devices, _addresses, conns = want
    gw, h = "02:aa:00:00:00:01", "02:bb:00:00:00:02"
    assert devices[(gw, "10.0.0.1")][2] is True and (gw, "8.8.8.8") not in devices
    assert conns[(h, "10.0.0.2", gw, "8.8.8.8", "tcp", 443)][1:3] == ((h, "10.0.0.2"), None)
    assert conns[(h, "2001:db8::2", "02:cc:00:00:00:03", "2001:db8::1", "tcp", 22)][1] == (h, "10.0.0.3")
    local.dispose()
    remote.dispose()


def v6_address(mac: int, hi: int, lo: int) -> AddressRecord:
    return AddressRecord(mac, hi, lo, T0, T0 + 10**9, 3, 300, 3, 400, 0, [0, 0, 0, 0], [])


def test_overlapping_batches_from_two_consoles_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """Four sensors of one zone report the same devices and connections in many small batches,
    each batch applied by two consoles at once: one device per IP+MAC, one row per connection,
    every counter exactly four times one sensor's, every connection linked to its devices."""
    macs = [0x020000000000 + i for i in range(120)]
    addresses = [address(m, 0x0A010000 + i, packets=i + 1) for i, m in enumerate(macs)]
    connections = [connection(macs[j % 120], 0x0A010000 + j % 120, macs[(j * 7 + 1) % 120],
                              0x0A010000 + (j * 7 + 1) % 120, 1000 + j // 120) for j in range(1200)]
    docs = []
    parts = [("addresses", {"addresses": [list(astuple(a)) for a in addresses[i:i + 40]]})
             for i in range(0, 120, 40)]
    parts += [("connections", {"connections": [list(astuple(c)) for c in connections[i:i + 100]]})
              for i in range(0, 1200, 100)]
    for i, (_kind, data) in enumerate(parts):
        docs.append(dict(data, more=True) if i < len(parts) - 1 else data)
    engines = [open_engine(pg_url), open_engine(pg_url)]
    with sessions(engines[0]).begin() as s:
        ids = [ingest.add_sensor(s, f"p{i}", "plant", "zone-1", "test")[0].id for i in range(4)]
    bodies = {sid: [wire.encode(kind, data)[1] for (kind, _), data in zip(parts, docs, strict=True)]
              for sid in ids}
    errors: list[BaseException] = []

    def upload(sensor_id: int, engine: Engine) -> None:
        try:
            for body in bodies[sensor_id]:
                ingest.apply_batch(sessions(engine), sensor_id, wire.decode(body))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    # each sensor's batches go to both consoles at once, in order, like a retried upload would
    threads = [threading.Thread(target=upload, args=(sid, engines[k])) for sid in ids for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    local = open_engine(str(tmp_path / "reference.db"))
    for _ in ids:
        merge_locally(local, addresses, connections)
    assert snapshot(engines[0], with_sensor=False) == snapshot(local, with_sensor=False)
    local.dispose()
    with sessions(engines[0])() as s:
        assert s.scalar(select(func.count()).select_from(Device)) == 120
        assert s.scalar(select(func.count()).select_from(Connection)) == 1200
        assert s.scalar(select(func.count()).select_from(SensorBatch)) == 4 * len(parts)
        assert s.scalar(select(func.count()).select_from(IdentityPending)) == 0
    for e in engines:
        e.dispose()
