"""TLS dissector: SNI, JA3 (as tshark computes it), JA4 (FoxIO spec) and certificate subjects."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from collections import defaultdict

import pytest

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.capture import CaptureReader
from tapwatch.decode import Decoder
from tapwatch.dissect.base import Evidence, Packet
from tapwatch.dissect.stage import DissectStage
from tapwatch.dissect.tls import TLS, alpn_code, certificate_subject, is_grease

TRUTH = [json.loads(line) for line in (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines()]
WITH_TLS = [t["file"] for t in TRUTH if t["tls_client_hello"]]


# --- building handshakes by hand --------------------------------------------------------

def u16(values: list[int]) -> bytes:
    return b"".join(struct.pack("!H", v) for v in values)


def ext(etype: int, data: bytes) -> bytes:
    return struct.pack("!HH", etype, len(data)) + data


def sni_ext(name: str) -> bytes:
    entry = b"\x00" + struct.pack("!H", len(name)) + name.encode()
    return ext(0x0000, struct.pack("!H", len(entry)) + entry)


def alpn_ext(*protocols: bytes) -> bytes:
    body = b"".join(bytes([len(p)]) + p for p in protocols)
    return ext(0x0010, struct.pack("!H", len(body)) + body)


def list16_ext(etype: int, values: list[int]) -> bytes:
    return ext(etype, struct.pack("!H", 2 * len(values)) + u16(values))


def versions_ext(values: list[int]) -> bytes:
    return ext(0x002B, bytes([2 * len(values)]) + u16(values))


def record(handshake_type: int, body: bytes, version: int = 0x0301) -> bytes:
    msg = bytes([handshake_type]) + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", 22, version, len(msg)) + msg


def client_hello(ciphers: list[int], extensions: list[bytes], version: int = 0x0303) -> bytes:
    exts = b"".join(extensions)
    body = (struct.pack("!H", version) + bytes(range(32)) + b"\x20" + bytes(32)
            + struct.pack("!H", 2 * len(ciphers)) + u16(ciphers) + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    return record(1, body)


def tls_packet(payload: bytes, *, seq: int = 1000, sport: int = 50000, dport: int = 443,
               src_ip: str = "10.0.0.1", dst_ip: str = "10.0.0.2") -> Packet:
    """A TCP packet whose l3 carries IPv4 and TCP headers, so that the TCP seq is known."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x18, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 1, 0x4000, 64, 6, 0,
                     bytes(map(int, src_ip.split("."))), bytes(map(int, dst_ip.split("."))))
    return packet(payload, transport="tcp", sport=sport, dport=dport, src_ip=src_ip, dst_ip=dst_ip,
                  l3=ip + tcp + payload)


def facts(ev: Evidence) -> dict[tuple[str, str], str]:
    return {(about, attribute): value for about, attribute, value, _ in ev.facts}


# The worked example of FoxIO's JA4 specification (technical_details/JA4.md): its cipher,
# extension and signature algorithm lists, in the order given there, plus GREASE values
# that must be ignored.
SPEC_CIPHERS = [0x0A0A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
                0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
SPEC_SIG_ALGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def spec_extensions() -> list[bytes]:
    return [
        ext(0x3A3A, b""), ext(0x001B, b"\x02\x00\x02"), sni_ext("example.com"),
        ext(0x0033, b"\x00\x00"), alpn_ext(b"h2", b"http/1.1"), ext(0x4469, b""),
        ext(0x0017, b""), ext(0x002D, b"\x01\x01"), list16_ext(0x000D, SPEC_SIG_ALGS),
        ext(0x0005, b"\x01\x00\x00\x00\x00"), ext(0x0023, b""), ext(0x0012, b""),
        versions_ext([0x7A7A, 0x0304, 0x0303]), ext(0xFF01, b"\x00"),
        ext(0x000B, b"\x01\x00"), list16_ext(0x000A, [0x2A2A, 0x001D, 0x0017, 0x0018]),
        ext(0x0015, b"\x00\x00"),
    ]


def test_ja4_matches_the_specification_example() -> None:
    ev = dissect_one("tls", tls_packet(client_hello(SPEC_CIPHERS, spec_extensions())))
    got = facts(ev)
    assert got[("src", "ja4")] == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert got[("src", "tls_sni")] == "example.com"
    assert got[("dst", "dns_name")] == "example.com"
    # JA3: legacy version, then ciphers, extensions, groups, point formats without GREASE
    ja3 = ("771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,"
           "27-0-51-16-17513-23-45-13-5-35-18-43-65281-11-10-21,29-23-24,0")
    assert got[("src", "ja3")] == hashlib.md5(ja3.encode()).hexdigest()
    assert got[("src", "ja3")] == "c000e2caf3a25423f9de6c8a4b12a975"
    assert ev.errors == []


def test_ja3_and_ja4_match_a_published_chrome_fingerprint() -> None:
    # browserleaks.com's report for Chrome 143 (quoted in service0427/v2_cp_app, tls.md):
    # ja4_ro gives the original cipher / extension / signature algorithm order, ja3_text
    # the groups and point formats, ja3_hash and ja4 the expected results.
    ciphers = [0x5A5A, 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
               0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
    extensions = [
        ext(0xDADA, b""), ext(0x002D, b"\x01\x01"), ext(0x0033, b"\x00\x00"), alpn_ext(b"h2"),
        ext(0xFE0D, b""), ext(0x0017, b""), ext(0x44CD, b""), sni_ext("tls.browserleaks.com"),
        ext(0x000B, b"\x01\x00"), list16_ext(0x000A, [0x4A4A, 4588, 29, 23, 24]),
        versions_ext([0x2A2A, 0x0304, 0x0303]), ext(0xFF01, b"\x00"), ext(0x0023, b""),
        ext(0x0012, b""), ext(0x0005, b"\x01\x00\x00\x00\x00"),
        list16_ext(0x000D, SPEC_SIG_ALGS), ext(0x001B, b"\x02\x00\x02"), ext(0x1A1A, b"\x00"),
    ]
    got = facts(dissect_one("tls", tls_packet(client_hello(ciphers, extensions))))
    assert got[("src", "ja3")] == "98487aa16281980e7d1120d399efb6a4"
    assert got[("src", "ja4")] == "t13d1516h2_8daaf6152771_d8a2da3f94cd"


def test_tls12_client_without_sni_or_alpn() -> None:
    hello = client_hello([0x002F, 0x0035, 0x000A], [ext(0x000B, b"\x01\x00")])
    got = facts(dissect_one("tls", tls_packet(hello)))
    assert got[("src", "ja4")].startswith("t12i030100_")
    assert ("src", "tls_sni") not in got and ("dst", "dns_name") not in got
    assert got[("src", "ja3")] == hashlib.md5(b"771,47-53-10,11,,0").hexdigest()
    # no extension left once SNI and ALPN are dropped -> zeros, per the reference tools
    bare = facts(dissect_one("tls", tls_packet(client_hello([0x002F], [sni_ext("a.example")]))))
    assert bare[("src", "ja4")] == (
        "t12d0101" + "00_" + hashlib.sha256(b"002f").hexdigest()[:12] + "_000000000000")


def test_alpn_codes() -> None:
    assert alpn_code(None) == "00" and alpn_code(b"") == "00"
    assert alpn_code(b"h2") == "h2" and alpn_code(b"http/1.1") == "h1" and alpn_code(b"h") == "hh"
    assert alpn_code(b"\xab\xcd") == "ad" and alpn_code(b"0\xab") == "3b"
    assert is_grease(0x0A0A) and is_grease(0xFAFA) and not is_grease(0x0A1A)


def test_ip_address_in_sni_is_not_a_dns_name() -> None:
    got = facts(dissect_one("tls", tls_packet(client_hello([0x002F], [sni_ext("192.168.115.75")]))))
    assert got[("src", "tls_sni")] == "192.168.115.75"
    assert ("dst", "dns_name") not in got


# --- certificates -------------------------------------------------------------------------

def der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def name(*rdns: tuple[bytes, int, bytes]) -> bytes:
    return der(0x30, b"".join(der(0x31, der(0x30, der(0x06, oid) + der(tag, value)))
                              for oid, tag, value in rdns))


OID_CN, OID_O, OID_C = b"\x55\x04\x03", b"\x55\x04\x0a", b"\x55\x04\x06"


def certificate(subject: bytes) -> bytes:
    tbs = der(0x30, der(0xA0, der(0x02, b"\x02")) + der(0x02, b"\x01")
              + der(0x30, der(0x06, b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b"))
              + name((OID_CN, 0x0C, b"Issuer CA")) + der(0x30, b"") + subject + der(0x30, b"\x00" * 150))
    return der(0x30, tbs + der(0x30, b"") + der(0x03, b"\x00" * 64))


SUBJECT = name((OID_C, 0x13, b"US"), (OID_O, 0x0C, b"Example, Inc."),
               (OID_CN, 0x0C, "caf\u00e9.example".encode()))


def server_flight(leaf: bytes) -> bytes:
    server_hello = bytes([2]) + (38).to_bytes(3, "big") + b"\x03\x03" + bytes(32) + b"\x00\x00\x2f\x00"
    chain = len(leaf).to_bytes(3, "big") + leaf
    cert_msg = bytes([11]) + (len(chain) + 3).to_bytes(3, "big") + len(chain).to_bytes(3, "big") + chain
    msgs = server_hello + cert_msg + b"\x0e\x00\x00\x00"
    return struct.pack("!BHH", 22, 0x0303, len(msgs)) + msgs


def test_certificate_subject_in_rfc4514_order() -> None:
    assert certificate_subject(certificate(SUBJECT)) == "CN=caf\u00e9.example, O=Example\\, Inc., C=US"
    ev = dissect_one("tls", tls_packet(server_flight(certificate(SUBJECT)), sport=443, dport=50000))
    assert ev.facts == [("src", "tls_certificate_subject", "CN=caf\u00e9.example, O=Example\\, Inc., C=US",
                         0.7)]
    assert ev.errors == []


def test_segments_are_joined_in_sequence_order() -> None:
    flight = server_flight(certificate(SUBJECT))
    a, b, c = flight[:100], flight[100:200], flight[200:]
    tls = TLS()
    evs = []
    for payload, seq in ((a, 5000), (c, 5200), (b, 5100)):  # the last one arrives early
        ev = Evidence()
        tls.dissect(tls_packet(payload, seq=seq, sport=443, dport=50000), ev)
        evs.append(ev)
    assert [e.facts for e in evs[:2]] == [[], []]
    assert [f[2] for f in evs[2].facts] == ["CN=caf\u00e9.example, O=Example\\, Inc., C=US"]
    assert tls._pending == {}
    # a ClientHello split in two, across a sequence-number wrap
    hello = client_hello(SPEC_CIPHERS, spec_extensions())
    ev1, ev2 = Evidence(), Evidence()
    tls.dissect(tls_packet(hello[:70], seq=0xFFFFFFF0), ev1)
    tls.dissect(tls_packet(hello[70:], seq=(0xFFFFFFF0 + 70) & 0xFFFFFFFF), ev2)
    assert ev1.facts == [] and facts(ev2)[("src", "ja4")] == "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_encrypted_handshake_and_other_records_are_quiet() -> None:
    rng = random.Random(7)
    for _ in range(50):
        finished = b"\x16\x03\x03\x00\x28" + rng.randbytes(40)
        ev = dissect_one("tls", tls_packet(finished))
        assert ev.facts == [] and ev.errors == []
    others = (b"\x17\x03\x03\x00\x10" + bytes(16), b"\x15\x03\x03\x00\x02\x01\x00", b"GET / HTTP/1.1\r\n")
    for payload in others:
        ev = dissect_one("tls", tls_packet(payload))
        assert ev.facts == [] and ev.errors == []


def test_malformed_handshakes_are_errors() -> None:
    hello = bytearray(client_hello([0x002F], [sni_ext("a.example")]))
    hello[9 + 2 + 32 + 1 + 32] = 0xFF  # cipher suite length beyond the message
    ev = dissect_one("tls", tls_packet(bytes(hello)))
    assert ev.facts == [] and ev.errors == [("src", "ClientHello cipher suite list overruns the message")]
    bad_leaf = server_flight(b"\x30\x05\x02\x01\x01")
    ev = dissect_one("tls", tls_packet(bad_leaf, sport=443, dport=50000))
    assert ev.facts == [] and ev.errors and ev.errors[0][1].startswith("leaf certificate:")


def test_garbage_never_raises() -> None:
    samples = [client_hello(SPEC_CIPHERS, spec_extensions()), server_flight(certificate(SUBJECT))]
    tls = TLS()
    for sample in samples:
        for i in range(len(sample) + 1):
            tls.dissect(tls_packet(sample[:i]), Evidence())
            tls.dissect(packet(sample[:i], transport="tcp", dport=443), Evidence())
    rng = random.Random(1)
    for i in range(400):
        junk = rng.randbytes(rng.randrange(0, 300))
        if i % 2:
            junk = bytes((22, 3, rng.randrange(5))) + junk  # looks like a handshake record
        tls.dissect(tls_packet(junk, seq=rng.randrange(1 << 32)), Evidence())
        mutated = bytearray(samples[i % 2])
        for _ in range(4):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        tls.dissect(tls_packet(bytes(mutated)), Evidence())
    assert len(tls._pending) <= 256


# --- real captures --------------------------------------------------------------------------

class PairRecorder(TLS):
    """Keeps each ClientHello's (SNI, JA3) pair: ground truth lists pairs, facts are separate."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs: dict[str, set[tuple[str | None, str]]] = defaultdict(set)

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        super().dissect(pkt, out)
        got = {attribute: value for _, attribute, value, _ in out.facts}
        if "ja3" in got:
            self.pairs[pkt.src_ip].add((got.get("tls_sni"), got["ja3"]))


def recorded_pairs(name: str) -> dict[str, set[tuple[str | None, str]]]:
    recorder = PairRecorder()
    stage, decoder = DissectStage([recorder]), Decoder()
    with CaptureReader(CAPTURES / name) as reader:
        for chunk in reader.chunks():
            for rows in decoder.batches(chunk):
                stage.batch(chunk, rows)
    assert stage.results.errors == {}
    return recorder.pairs


@pytest.mark.parametrize("name", WITH_TLS)
def test_client_hellos_match_tshark(name: str) -> None:
    truth = next(t for t in TRUTH if t["file"] == name)
    expected = {ip: {(p["sni"], p["ja3"]) for p in pairs} for ip, pairs in truth["tls_client_hello"].items()}
    assert recorded_pairs(name) == expected


# Leaf certificate subjects, checked against tshark 4.0.17's x509af.rdnSequence (which lists
# the RDNs in the same most-specific-first order).
SUBJECTS = {
    "zeek__tls1.2.pcap": {
        "68.233.76.12": "CN=*.taleo.net, OU=Comodo PremiumSSL Wildcard, OU=Web, O=Taleo Inc., "
                        "street=4140 Dublin Boulevard, street=Suite 400, L=Dublin, ST=CA, "
                        "postalCode=94568, C=US"},
    "ndpi__iphone.pcap": {
        "17.248.185.140": "C=US, ST=California, O=Apple Inc., CN=fmfmobile.icloud.com",
        "17.130.2.46": "C=US, ST=California, O=Apple Inc., OU=management:idms.group.576486, "
                       "CN=*.ls.apple.com"},
    "ndpi__alexa-app.pcapng": {
        "52.85.209.197": "CN=www.amazon.com, O=Amazon.com\\, Inc., L=Seattle, ST=Washington, C=US",
        "216.58.194.78": "CN=*.google.com, O=Google Inc, L=Mountain View, ST=California, C=US"},
    "zeek__google-cert-repeat.pcap": {"142.250.179.196": "CN=www.google.com"},
}

# Servers whose Certificate tshark shows (tls.handshake.certificate, 4.0.17, default prefs).
# ndpi__teams.pcap has two more in our output: 40.126.9.5 and 52.114.250.123 sent their
# certificates out of order (tshark marks "Previous segment not captured" / "Out-Of-Order")
# and tshark does not reassemble out-of-order segments by default; we hold early segments.
CERT_SERVERS = {
    "ndpi__teams.pcap": ({"52.113.194.132", "52.114.77.33", "52.114.75.69", "13.107.18.11",
                          "52.114.15.45", "40.126.9.67", "52.114.250.152", "52.114.250.153",
                          "104.40.187.151", "52.169.186.119"}, {"40.126.9.5", "52.114.250.123"}),
    "ndpi__iphone.pcap": ({"17.130.2.46", "17.137.166.35", "17.248.176.75", "17.248.185.140",
                           "17.248.185.87"}, set()),
}


@pytest.mark.parametrize("name", sorted(SUBJECTS))
def test_certificate_subjects(name: str) -> None:
    subjects = facts_by_ip(run_capture(CAPTURES / name, "tls"), "tls_certificate_subject")
    for ip, subject in SUBJECTS[name].items():
        assert subject in subjects[ip], ip


@pytest.mark.parametrize("name", sorted(CERT_SERVERS))
def test_certificates_seen_where_tshark_sees_them(name: str) -> None:
    tshark_servers, reordered = CERT_SERVERS[name]
    subjects = facts_by_ip(run_capture(CAPTURES / name, "tls"), "tls_certificate_subject")
    assert set(subjects) == tshark_servers | reordered
