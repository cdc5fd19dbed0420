"""HTTP dissector: User-Agent and Host from requests, Server from responses, as tshark sees them."""

from __future__ import annotations

import json

import pytest

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_HTTP = [t["file"] for t in TRUTH if t["http_user_agents"] or t["http_servers"]]


def test_request_and_response_headers() -> None:
    req = dissect_one("http", packet(b"GET / HTTP/1.1\r\nHost: cam.local\r\nUser-Agent: curl/8.5\r\n\r\n",
                                     transport="tcp", dport=80))
    assert ("src", "http_user_agent", "curl/8.5", 0.7) in req.facts
    assert ("dst", "http_host", "cam.local", 0.5) in req.facts
    resp = dissect_one("http", packet(b"HTTP/1.1 200 OK\r\nServer: Boa/0.94\r\n\r\n", transport="tcp",
                                      sport=80, dport=40000))
    assert resp.facts == [("src", "http_server", "Boa/0.94", 0.7)]


@pytest.mark.parametrize("payload", [b"", b"GET", b"GET /\r\n\r\n", b"\xff" * 100, b"HTTP/1.1 200\r\n:\r\n"])
def test_garbage_never_raises(payload: bytes) -> None:
    dissect_one("http", packet(payload, transport="tcp"))


@pytest.mark.parametrize("name", WITH_HTTP)
def test_real_captures_match_tshark(name: str) -> None:
    truth = next(t for t in TRUTH if t["file"] == name)
    results = run_capture(CAPTURES / name, "http")
    agents, servers = facts_by_ip(results, "http_user_agent"), facts_by_ip(results, "http_server")
    for ip, values in truth["http_user_agents"].items():
        assert set(values) <= agents.get(ip, set()), ip
    for ip, values in truth["http_servers"].items():
        assert set(values) <= servers.get(ip, set()), ip
