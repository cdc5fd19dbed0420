"""A TCP port names an application only once data flows: a scan's SYN/RST probes are
connection attempts, so they neither add protocols to devices nor make a device "serve"
telnet (which would mislead recommendations and risk)."""

from __future__ import annotations

from pathlib import Path

from detect_helpers import conversation, run, tcp_pkt, write
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.evidence import devices_json
from tapwatch.store.models import Connection
from tapwatch.vulns.findings import gather


def test_probes_are_attempts_and_data_names_the_protocol(tmp_path: Path) -> None:
    probes = []
    for port in (21, 23, 502, 20000):  # closed ports: SYN, RST
        probes += [tcp_pkt(9, 2, 41000 + port, port, "S"), tcp_pkt(2, 9, port, 41000 + port, "RA")]
    talk = conversation(1, 2, 502, rounds=2, payload=b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01")
    # an open port answered SYN-ACK, then the client hung up without a byte
    silent = [tcp_pkt(9, 2, 42000, 80, "S"), tcp_pkt(2, 9, 80, 42000, "SA"), tcp_pkt(9, 2, 42000, 80, "R")]
    db = tmp_path / "t.db"
    run(db, write(tmp_path / "a.pcap", probes + talk + silent), no_learn=True)

    engine = open_engine(str(db))
    with sessions(engine)() as s:
        conns = {(c.client_ip, c.server_port): c.protocol for c in s.query(Connection)}
        devices = {d["ip"]: d for d in devices_json(s)}
        served = gather(s)[devices["10.1.0.2"]["id"]].served
    engine.dispose()
    assert conns[("10.1.0.1", 502)] == "modbus"  # data flowed
    assert {conns[("10.1.0.9", p)] for p in (21, 23, 502, 20000, 80)} == {"tcp"}
    assert "modbus" in devices["10.1.0.2"]["protocols"]
    assert not {"ftp", "telnet", "dnp3", "http"} & set(devices["10.1.0.2"]["protocols"])
    assert devices["10.1.0.9"]["protocols"] == ["ipv4", "tcp"]
    assert set(served) == {"modbus", "tcp"} and "telnet" not in served
