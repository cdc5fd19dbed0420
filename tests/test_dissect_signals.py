"""The detection signals dissectors emit: ARP requests and claims, industrial function codes,
logins, looked-up names and the EICAR string — checked against tshark on real captures, and
the two signal-only dissectors (ARP, EICAR) against hostile input."""

from __future__ import annotations

import subprocess
from collections import Counter

from dissect_helpers import dissect_one, hostile_payloads, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect.eicar import EICAR


def tshark(name: str, display_filter: str, *fields: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(CAPTURES / name), "-Y", display_filter, "-T", "fields",
                          *(x for f in fields for x in ("-e", f))], check=True, capture_output=True,
                         text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def test_arp_requests_and_claims_match_tshark() -> None:
    name = "zeek__nmap-vsn.pcap"
    results = run_capture(CAPTURES / name, "arp")
    requests = tshark(name, "arp.opcode == 1 && arp.src.proto_ipv4 != 0.0.0.0", "eth.src",
                      "arp.dst.proto_ipv4")
    seen: Counter[tuple[str, str]] = Counter()
    for s in results.signals:
        if s.kind == "arp_request":
            seen[(s.src[0], s.details["target"])] += s.count
    assert seen == Counter((m, t) for m, t in requests)
    name = "iti-ics-tools__melsoft_UDP_unclean_1.pcap"
    claims = {(s.details["ip"], s.details["mac"]) for s in run_capture(CAPTURES / name, "arp").signals
              if s.kind == "arp_claim"}
    replies = tshark(name, "arp.opcode == 2 || arp.isgratuitous", "arp.src.proto_ipv4", "arp.src.hw_mac")
    assert claims == {(i, m) for i, m in replies}


def test_modbus_function_codes_match_tshark() -> None:
    name = "icsnpp-modbus__modbus_example.pcap"
    results = run_capture(CAPTURES / name, "modbus")
    codes = Counter(s.details["code"] for s in results.signals if s.kind == "function")
    requests = tshark(name, "modbus && tcp.dstport == 502", "modbus.func_code")
    assert set(codes) == {int(c) for (c,) in requests}
    assert sum(codes.values()) == len(requests)  # folded repeats keep their counts


def test_dns_queries_become_domain_signals() -> None:
    name = "suricata-verify__public-ex1_section8_Sofacy.pcap"
    names = {s.details["name"] for s in run_capture(CAPTURES / name, "dns").signals if s.kind == "domain"}
    assert names == {q for (q,) in tshark(name, "dns.flags.response == 0", "dns.qry.name")}


def test_arp_and_eicar_survive_hostile_input() -> None:
    arp = bytes.fromhex("0001080006040001" "020000000001" "0a000001" "000000000000" "0a000002")
    for payload in hostile_payloads(arp, seed=806, max_len=64):
        ev = dissect_one("arp", packet(payload, transport="", ethertype=0x0806))
        assert all(kind in ("arp_request", "arp_claim") for _, kind, _ in ev.signals)
    ev = dissect_one("arp", packet(arp, transport="", ethertype=0x0806))
    assert ev.signals == [("src", "arp_request", {"target": "10.0.0.2"})]
    for payload in hostile_payloads(EICAR + b"\r\n", seed=68, max_len=100):
        ev = dissect_one("eicar", packet(payload, transport="tcp", dport=4444))
        assert bool(ev.signals) == (EICAR in payload)
