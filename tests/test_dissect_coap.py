"""CoAP dissector: request URIs (Uri-Host / Uri-Port / Uri-Path) and created resources."""

from __future__ import annotations

import json
import random

import pytest

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect.base import Evidence

TRUTH = {t["file"]: t for t in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_COAP = sorted(name for name, t in TRUTH.items() if t.get("coap_uri_paths"))


def option_bytes(delta: int, value: bytes) -> bytes:
    def nibble(n: int) -> tuple[int, bytes]:
        if n < 13:
            return n, b""
        if n < 269:
            return 13, bytes([n - 13])
        return 14, (n - 269).to_bytes(2, "big")
    d, dx = nibble(delta)
    n, nx = nibble(len(value))
    return bytes([(d << 4) | n]) + dx + nx + value


def coap(code: int, opts: list[tuple[int, bytes]], token: bytes = b"\x72\x16", payload: bytes = b"") -> bytes:
    out = bytes([0x40 | len(token), code]) + b"\x12\x34" + token
    last = 0
    for number, value in sorted(opts, key=lambda o: o[0]):
        out += option_bytes(number - last, value)
        last = number
    return out + (b"\xff" + payload if payload else b"")


def request(message: bytes) -> Evidence:
    return dissect_one("coap", packet(message, sport=40000, dport=5683))


def response(message: bytes) -> Evidence:
    return dissect_one("coap", packet(message, sport=5683, dport=40000))


def test_request_paths() -> None:
    ev = request(coap(1, [(11, b"sensors"), (11, b"temp"), (15, b"unit=c")]))
    assert ev.errors == []
    assert ev.facts == [("dst", "coap_uri", "/sensors/temp", 0.6)]
    with_host = coap(3, [(3, b"lamp.local"), (7, b"\x16\x34"), (11, b"light")], payload=b"on")
    assert request(with_host).facts == [("dst", "coap_uri", "coap://lamp.local:5684/light", 0.6)]
    assert request(coap(1, [(3, b"gw")])).facts == [("dst", "coap_uri", "coap://gw/", 0.6)]
    assert request(coap(1, [])).facts == []  # GET / without options
    long_segment = b"x" * 300  # a 2-byte extended length
    assert request(coap(1, [(11, long_segment)])).facts == [("dst", "coap_uri", "/" + "x" * 300, 0.6)]
    proxy = coap(1, [(11, b"a"), (35, b"coap://elsewhere/b")])  # option delta 24: extended by one byte
    assert request(proxy).facts == [("dst", "coap_uri", "/a", 0.6)]


def test_responses() -> None:
    created = coap(65, [(8, b"storage"), (8, b"17")])
    assert response(created).facts == [("src", "coap_uri", "/storage/17", 0.5)]
    assert response(coap(69, [(12, b"\x00")], payload=b"22.5")).facts == []
    assert response(coap(0, [], token=b"")).facts == []  # empty ACK


def test_malformed() -> None:
    assert request(b"\x40\x01").errors == [("src", "CoAP message shorter than its header")]
    assert request(b"\x80\x01\x00\x00").errors == [("src", "CoAP version 2")]
    assert request(b"\x49\x01\x00\x00" + bytes(9)).errors == [("src", "CoAP token length 9")]
    assert request(b"\x40\x01\x00\x00\xb5ab").errors == [("src", "option 11 longer than the message")]
    assert request(b"\x40\x01\x00\x00\xf1a").errors == [("src", "reserved option nibble 15")]


def test_garbage_never_raises() -> None:
    valid = [coap(1, [(3, b"h"), (7, b"\x16\x33"), (11, b"a"), (11, b"b" * 20), (15, b"q")], payload=b"p"),
             coap(65, [(8, b"x")])]
    rng = random.Random(5683)
    samples = [v[:n] for v in valid for n in range(len(v) + 1)]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))) for _ in range(300)]
    samples += [b"\x40\x01\x00\x00" + bytes(rng.randrange(256) for _ in range(30)) for _ in range(200)]
    for sample in samples:
        request(sample)
        response(sample)


@pytest.mark.parametrize("name", WITH_COAP)
def test_real_captures_match_tshark(name: str) -> None:
    """tshark's "/" + "/".join(coap.opt.uri_path) of every request (a capture-wide set)."""
    results = run_capture(CAPTURES / name, "coap")
    assert set(TRUTH[name]["coap_uri_paths"]) <= set().union(*facts_by_ip(results, "coap_uri").values())
    assert results.errors == {}
