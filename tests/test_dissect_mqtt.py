"""MQTT dissector: CONNECT client id and credential flags, topics of PUBLISH / SUBSCRIBE / UNSUBSCRIBE."""

from __future__ import annotations

import json
import random

import pytest

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect.base import Evidence

TRUTH = {t["file"]: t for t in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_MQTT = sorted(name for name, t in TRUTH.items() if t.get("mqtt") and any(t["mqtt"].values()))


def s(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def control(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect(client_id: str, *, level: int = 4, user: str | None = None, password: bytes | None = None,
            will: tuple[str, bytes] | None = None) -> bytes:
    flags = 0x02 | (0x80 if user is not None else 0) | (0x40 if password is not None else 0)
    flags |= 0x04 if will else 0
    v5 = level == 5
    body = s("MQIsdp" if level == 3 else "MQTT") + bytes([level, flags]) + b"\x00\x3c"
    body += b"\x05\x11\x00\x00\x0e\x10" if v5 else b""  # session expiry interval property
    body += s(client_id)
    if will:
        body += (b"\x00" if v5 else b"") + s(will[0]) + len(will[1]).to_bytes(2, "big") + will[1]
    if user is not None:
        body += s(user)
    if password is not None:
        body += len(password).to_bytes(2, "big") + password
    return control(0x10, body)


def publish(topic: str, payload: bytes, qos: int = 0, v5: bool = False) -> bytes:
    body = s(topic) + (b"\x00\x07" if qos else b"") + (b"\x00" if v5 else b"") + payload
    return control(0x30 | (qos << 1), body)


def subscribe(*topics: str, v5: bool = False, props: bytes = b"") -> bytes:
    body = b"\x00\x01" + ((varint(len(props)) + props) if v5 else b"")
    body += b"".join(s(t) + (b"\x21" if v5 else b"\x01") for t in topics)
    return control(0x82, body)


def unsubscribe(*topics: str, v5: bool = False) -> bytes:
    return control(0xA2, b"\x00\x02" + (b"\x00" if v5 else b"") + b"".join(s(t) for t in topics))


def to_broker(payload: bytes) -> Evidence:
    return dissect_one("mqtt", packet(payload, transport="tcp", sport=50000, dport=1883))


def from_broker(payload: bytes) -> Evidence:
    return dissect_one("mqtt", packet(payload, transport="tcp", sport=1883, dport=50000))


def test_connect() -> None:
    ev = to_broker(connect("plc-7", user="admin", password=b"secret"))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "mqtt_client_id", "plc-7", 0.9),
        ("dst", "role", "mqtt-broker", 0.5),
        ("src", "mqtt_username_present", "true", 0.9),
        ("src", "mqtt_password_cleartext", "true", 0.9),
    ])
    assert sorted(to_broker(connect("sensor", level=3)).facts) == [("dst", "role", "mqtt-broker", 0.5),
                                                                  ("src", "mqtt_client_id", "sensor", 0.9)]
    v5 = to_broker(connect("cam", level=5, user="u", will=("dev/cam/status", b"offline")))
    assert v5.errors == []
    assert sorted(v5.facts) == sorted([
        ("src", "mqtt_client_id", "cam", 0.9), ("dst", "role", "mqtt-broker", 0.5),
        ("src", "mqtt_username_present", "true", 0.9), ("src", "mqtt_topic", "dev/cam/status", 0.5),
    ])
    assert to_broker(control(0x10, s("HTTP") + b"\x04\x02\x00\x3c" + s("x"))).errors == [
        ("src", "malformed MQTT packet type 1: protocol 'HTTP' level 4")]


def test_topics() -> None:
    assert to_broker(publish("plant/line1/temp", b"21.5", qos=1)).facts == [
        ("src", "mqtt_topic", "plant/line1/temp", 0.6)]
    # the broker delivering a message: the topic is the receiving client's
    assert from_broker(publish("plant/line1/temp", b"21.5")).facts == [
        ("dst", "mqtt_topic", "plant/line1/temp", 0.6)]
    assert to_broker(publish("a/b", b"x", qos=2, v5=True)).facts == [("src", "mqtt_topic", "a/b", 0.6)]
    assert [f[2] for f in to_broker(subscribe("a/#", "b/+/c")).facts] == ["a/#", "b/+/c"]
    assert [f[2] for f in to_broker(subscribe("a/#", "b/+/c", v5=True)).facts] == ["a/#", "b/+/c"]
    assert [f[2] for f in to_broker(subscribe("x", v5=True, props=b"\x0b\x05")).facts] == ["x"]
    assert [f[2] for f in to_broker(unsubscribe("a/#", "q")).facts] == ["a/#", "q"]
    assert [f[2] for f in to_broker(unsubscribe("a/#", v5=True)).facts] == ["a/#"]
    many = to_broker(subscribe(*(f"t/{i}" for i in range(40))))
    assert len(many.facts) == 16  # capped per packet
    assert to_broker(publish("bad/+", b"")).facts == []


def test_several_packets_and_long_publish() -> None:
    ev = to_broker(connect("c1") + subscribe("s/1") + publish("p/1", b"x" * 10) + b"\xe0\x00")
    assert {f[2] for f in ev.facts if f[1] == "mqtt_topic"} == {"s/1", "p/1"}
    long = publish("big/topic", b"y" * 5000)
    first, rest = long[:1400], long[1400:2800]
    assert to_broker(first).facts == [("src", "mqtt_topic", "big/topic", 0.6)]
    assert to_broker(rest).facts == [] and to_broker(rest).errors == []
    assert to_broker(b"0,\"a\":1}" + bytes(50)).errors == []  # text that looks like a PUBLISH header


def test_malformed_subscribe() -> None:
    bad = control(0x82, b"\x00\x01\x00\x05ab")
    assert to_broker(bad).errors == [("src", "malformed MQTT packet type 8: string longer than the packet")]
    assert to_broker(subscribe("abc")[:6]).errors == []  # cut by the segment: no verdict


def test_garbage_never_raises() -> None:
    valid = [connect("plc-7", level=5, user="u", password=b"p", will=("w", b"x")),
             publish("a/b", b"123", qos=1), subscribe("a", "b", v5=True, props=b"\x0b\x05"),
             unsubscribe("a"), connect("c", level=3)]
    rng = random.Random(1883)
    samples = [v[:n] for v in valid for n in range(len(v) + 1)]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))) for _ in range(300)]
    samples += [bytes([rng.choice((0x10, 0x30, 0x32, 0x82, 0xA2))])
                + bytes(rng.randrange(256) for _ in range(40)) for _ in range(300)]
    for sample in samples:
        to_broker(sample)
        from_broker(sample)


@pytest.mark.parametrize("name", WITH_MQTT)
def test_real_captures_match_tshark(name: str) -> None:
    """mqtt.clientid by sender and the capture's mqtt.topic values.

    Needs `tcp_all_segments`: in suricata-verify__mqtt-limit-2_input.pcap the PUBLISH to "baz"
    is the client's fifth segment of the flow, past the selector's default budget of four.
    """
    truth = TRUTH[name]["mqtt"]
    results = run_capture(CAPTURES / name, "mqtt")
    ids = facts_by_ip(results, "mqtt_client_id")
    for ip, values in truth["client_ids_by_src"].items():
        assert set(values) <= ids.get(ip, set()), ip
    assert set(truth["topics"]) <= set().union(*facts_by_ip(results, "mqtt_topic").values())
    assert results.errors == {}
