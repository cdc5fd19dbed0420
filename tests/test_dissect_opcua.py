"""OPC UA dissector: Hello endpoint URL, secure channel policy and mode, application descriptions."""

from __future__ import annotations

import json
import random
import struct

import pytest

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.dissect.base import Evidence

TRUTH = {t["file"]: t for t in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_OPCUA = sorted(name for name, t in TRUTH.items() if t.get("opcua") and any(t["opcua"].values()))
NONE = "http://opcfoundation.org/UA/SecurityPolicy#None"
BASIC256 = "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"


# --- OPC 10000-6 binary encoding ------------------------------------------------------------

def s(text: str | None) -> bytes:
    if text is None:
        return struct.pack("<i", -1)
    raw = text.encode()
    return struct.pack("<i", len(raw)) + raw


def lt(text: str, locale: str = "en") -> bytes:
    return b"\x03" + s(locale) + s(text)


def nid(ident: int) -> bytes:
    return struct.pack("<BBH", 1, 0, ident)  # four-byte encoding


def request_header() -> bytes:
    return (b"\x00\x00" + bytes(8) + struct.pack("<II", 1, 0) + s(None) + struct.pack("<I", 10000)
            + b"\x00\x00\x00")


def response_header() -> bytes:
    return bytes(8) + struct.pack("<II", 1, 0) + b"\x00" + struct.pack("<i", -1) + b"\x00\x00\x00"


def application(uri: str, product: str, name: str, kind: int = 0) -> bytes:
    return (s(uri) + s(product) + lt(name) + struct.pack("<i", kind) + s(None) + s(None)
            + struct.pack("<i", 1) + s("opc.tcp://plc:4840"))


def endpoint(url: str, app: bytes, mode: int, policy: str) -> bytes:
    token = s("anonymous") + struct.pack("<i", 0) + s(None) + s(None) + s(None)
    return (s(url) + app + s(None) + struct.pack("<i", mode) + s(policy) + struct.pack("<i", 1) + token
            + s("http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary") + b"\x00")


def message(kind: bytes, body: bytes, chunk: bytes = b"F") -> bytes:
    return kind + chunk + struct.pack("<I", len(body) + 8) + body


def hello(url: str) -> bytes:
    return message(b"HEL", struct.pack("<5I", 0, 65536, 65536, 0, 0) + s(url))


def opn(policy: str, body: bytes) -> bytes:
    return message(b"OPN", struct.pack("<I", 0) + s(policy) + s(None) + s(None) + struct.pack("<II", 1, 1)
                   + body)


def msg(service: int, body: bytes) -> bytes:
    return message(b"MSG", struct.pack("<IIII", 1, 1, 2, 2) + nid(service) + body)


def to_server(payload: bytes) -> Evidence:
    return dissect_one("opcua", packet(payload, transport="tcp", sport=50000, dport=4840))


def from_server(payload: bytes) -> Evidence:
    return dissect_one("opcua", packet(payload, transport="tcp", sport=4840, dport=50000))


PLC = application("urn:acme:plc1", "http://acme.example/s7ua", "Acme PLC 1")
GET_ENDPOINTS_RESPONSE = msg(431, response_header() + struct.pack("<i", 2)
                             + endpoint("opc.tcp://10.0.0.2:4840", PLC, 1, NONE)
                             + endpoint("opc.tcp://10.0.0.2:4840", PLC, 3, BASIC256))


# --- unit tests -------------------------------------------------------------------------------

def test_hello_names_the_server_endpoint() -> None:
    ev = to_server(hello("opc.tcp://10.0.0.2:4840/acme"))
    assert ev.errors == []
    assert ev.facts == [("dst", "opcua_endpoint_url", "opc.tcp://10.0.0.2:4840/acme", 0.7)]


def test_open_secure_channel() -> None:
    request = opn(NONE, nid(446) + request_header() + struct.pack("<IiI", 0, 0, 1) + s(None)
                  + struct.pack("<I", 3600000))
    ev = to_server(request)
    assert ev.errors == []
    assert sorted(ev.facts) == [("dst", "opcua_security_mode", "None", 0.9),
                                ("dst", "opcua_security_policy", NONE, 0.9)]
    # with a real policy the body is encrypted: the policy is still in clear, the mode is not
    encrypted = opn(BASIC256, bytes(range(200)))
    assert to_server(encrypted).facts == [("dst", "opcua_security_policy", BASIC256, 0.9)]
    assert from_server(encrypted).facts == [("src", "opcua_security_policy", BASIC256, 0.9)]
    response = opn(NONE, nid(449) + response_header() + bytes(20))
    assert from_server(response).facts == [("src", "opcua_security_policy", NONE, 0.9)]


def test_get_endpoints() -> None:
    ev = to_server(msg(428, request_header() + s("opc.tcp://10.0.0.2:4840") + struct.pack("<ii", 0, 0)))
    assert ev.facts == [("dst", "opcua_endpoint_url", "opc.tcp://10.0.0.2:4840", 0.7)]
    ev = from_server(GET_ENDPOINTS_RESPONSE)
    assert ev.errors == []
    assert sorted(set(ev.facts)) == sorted([
        ("src", "opcua_endpoint_url", "opc.tcp://10.0.0.2:4840", 0.8),
        ("src", "opcua_application_uri", "urn:acme:plc1", 0.8),
        ("src", "opcua_product_uri", "http://acme.example/s7ua", 0.8),
        ("src", "opcua_application_name", "Acme PLC 1", 0.8),
        ("src", "opcua_security_mode", "None", 0.5),  # offered
        ("src", "opcua_security_policy", NONE, 0.5),
        ("src", "opcua_security_mode", "SignAndEncrypt", 0.5),
        ("src", "opcua_security_policy", BASIC256, 0.5),
    ])


def test_create_session() -> None:
    client = application("urn:scada:hmi", "urn:scada", "HMI", kind=1)
    request = msg(461, request_header() + client + s("urn:acme:plc1") + s("opc.tcp://10.0.0.2:4840")
                  + s("session 1") + s(None) + s(None) + struct.pack("<dI", 1200000.0, 0))
    ev = to_server(request)
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "opcua_application_uri", "urn:scada:hmi", 0.8),
        ("src", "opcua_product_uri", "urn:scada", 0.8),
        ("src", "opcua_application_name", "HMI", 0.8),
        ("dst", "opcua_application_uri", "urn:acme:plc1", 0.5),
        ("dst", "opcua_endpoint_url", "opc.tcp://10.0.0.2:4840", 0.7),
    ])
    response = msg(464, response_header() + nid(7) + b"\x04\x00\x00" + bytes(16) + struct.pack("<d", 1.0)
                   + s(None) + s(None) + struct.pack("<i", 1) + endpoint("opc.tcp://plc:4840", PLC, 1, NONE)
                   + struct.pack("<i", 0) + bytes(8))
    ev = from_server(response)
    assert ev.errors == []
    assert ("src", "opcua_application_uri", "urn:acme:plc1", 0.8) in ev.facts
    assert ("src", "opcua_endpoint_url", "opc.tcp://plc:4840", 0.8) in ev.facts


def test_discovery_services() -> None:
    lds = application("urn:lds", "http://open62541.org", "LDS", kind=3)
    one = from_server(msg(425, response_header() + struct.pack("<i", 1) + lds))
    assert ("src", "opcua_application_uri", "urn:lds", 0.7) in one.facts
    two = from_server(msg(425, response_header() + struct.pack("<i", 2) + lds + PLC))
    assert ("src", "opcua_application_uri", "urn:acme:plc1", 0.4) in two.facts  # registered elsewhere
    register = msg(12211, request_header() + s("urn:acme:plc1") + s("http://acme.example/s7ua")
                   + struct.pack("<i", 1) + lt("Acme PLC 1") + struct.pack("<i", 0) + s(None)
                   + struct.pack("<i", 1) + s("opc.tcp://plc:4840") + s(None) + b"\x01"
                   + struct.pack("<i", 0))
    ev = to_server(register)
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "opcua_application_uri", "urn:acme:plc1", 0.8),
        ("src", "opcua_product_uri", "http://acme.example/s7ua", 0.8),
        ("src", "opcua_application_name", "Acme PLC 1", 0.8),
        ("src", "opcua_endpoint_url", "opc.tcp://plc:4840", 0.6),
    ])


def test_several_messages_in_a_segment_and_split_messages() -> None:
    ev = to_server(hello("opc.tcp://a:4840") + msg(631, bytes(30)) + hello("opc.tcp://b:4840"))
    assert [f[2] for f in ev.facts] == ["opc.tcp://a:4840", "opc.tcp://b:4840"]
    # the first TCP segment of a long response: read what is there, no error
    ev = from_server(GET_ENDPOINTS_RESPONSE[:150])
    assert ev.errors == [] and ("src", "opcua_endpoint_url", "opc.tcp://10.0.0.2:4840", 0.8) in ev.facts
    assert from_server(GET_ENDPOINTS_RESPONSE[150:]).facts == []  # its continuation
    # a complete message whose fields do not fit is malformed
    broken = message(b"HEL", struct.pack("<5I", 0, 1, 1, 0, 0) + struct.pack("<i", 50) + b"opc")
    assert to_server(broken).errors == [("src", "HEL message shorter than its fields")]
    assert to_server(b"HELF\x04\x00\x00\x00").errors == [("src", "UA TCP message size 4")]


def test_garbage_never_raises() -> None:
    valid = [hello("opc.tcp://x:4840"), GET_ENDPOINTS_RESPONSE,
             opn(NONE, nid(446) + request_header() + struct.pack("<IiI", 0, 0, 1)),
             msg(12211, request_header() + s("urn:x") + s("urn:y") + struct.pack("<i", 1) + lt("n"))]
    rng = random.Random(4840)
    samples = [v[:n] for v in valid for n in range(len(v) + 1)]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120))) for _ in range(200)]
    for kind in (b"HELF", b"OPNF", b"MSGF", b"RHEF"):
        samples += [kind + struct.pack("<I", rng.randrange(8, 140))
                    + bytes(rng.randrange(256) for _ in range(120)) for _ in range(100)]
        samples += [kind + struct.pack("<I", 200) + struct.pack("<IIII", 1, 1, 1, 1) + nid(svc)
                    + bytes(rng.randrange(256) for _ in range(150))
                    for svc in (428, 431, 425, 461, 464, 12211)]
    for sample in samples:
        to_server(sample)
        from_server(sample)


# --- real captures ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", WITH_OPCUA)
def test_real_captures_match_tshark(name: str) -> None:
    """tshark's opcua.EndpointUrl / ApplicationUri / ProductUri, over the whole capture (the ground
    truth does not say which host each belongs to)."""
    truth = TRUTH[name]["opcua"]
    results = run_capture(CAPTURES / name, "opcua")
    for key, attribute in (("endpoint_urls", "opcua_endpoint_url"),
                           ("application_uris", "opcua_application_uri"),
                           ("product_uris", "opcua_product_uri")):
        ours = set().union(*facts_by_ip(results, attribute).values())
        assert set(truth[key]) <= ours, key
    assert results.errors == {}


def test_real_capture_roles() -> None:
    """The server's URIs are about the server, the client's about the client."""
    results = run_capture(CAPTURES / "icsnpp-opcua-binary__opcua_with-gap_with-handshake.pcap", "opcua")
    uris = facts_by_ip(results, "opcua_application_uri")
    assert uris["192.168.11.33"] == {"urn:MES::FraunhoferIOSB:SiLab UA-Client"}
    assert uris["192.168.11.34"] == {"urn:00:06:71:33:05:02"}
    assert facts_by_ip(results, "opcua_endpoint_url")["192.168.11.34"] == {"opc.tcp://192.168.11.34:4840"}
    assert facts_by_ip(results, "opcua_security_mode")["192.168.11.34"] == {"None"}
