"""BACnet dissector: I-Am / I-Have, identity properties in (multiple) read acks, device-changing requests."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES
from tapwatch.decode import protocols
from tapwatch.dissect.bacnet import character_string, vendor_names
from tapwatch.dissect.base import Evidence

TRUTH = {t["file"]: t for t in map(json.loads, (CAPTURES / "GROUND_TRUTH.jsonl").read_text().splitlines())}
WITH_BACNET = sorted(name for name, t in TRUTH.items() if t.get("bacnet") and any(t["bacnet"].values()))


# --- encoding helpers (ASHRAE 135 clause 20.2) -----------------------------------------------

def tag(number: int, content: bytes, *, context: bool = False) -> bytes:
    head = (number << 4) | (0x08 if context else 0)
    if len(content) <= 4:
        return bytes([head | len(content)]) + content
    if len(content) < 254:
        return bytes([head | 5, len(content)]) + content
    return bytes([head | 5, 254]) + len(content).to_bytes(2, "big") + content


def unsigned(value: int, number: int = 2, *, context: bool = False) -> bytes:
    return tag(number, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"), context=context)


def oid(otype: int, instance: int, number: int = 12, *, context: bool = False) -> bytes:
    return tag(number, ((otype << 22) | instance).to_bytes(4, "big"), context=context)


def string(text: str, charset: int = 0, encoding: str = "utf-8") -> bytes:
    return tag(7, bytes([charset]) + text.encode(encoding))


def opening(number: int) -> bytes:
    return bytes([(number << 4) | 0x0E])


def closing(number: int) -> bytes:
    return bytes([(number << 4) | 0x0F])


def npdu(apdu: bytes, *, snet: int | None = None) -> bytes:
    if snet is None:
        return b"\x01\x00" + apdu
    return b"\x01\x08" + snet.to_bytes(2, "big") + b"\x01\x07" + apdu  # SNET, SLEN 1, SADR 7


def bvlc(payload: bytes, function: int = 0x0A) -> bytes:
    return bytes([0x81, function]) + (len(payload) + 4).to_bytes(2, "big") + payload


def unconfirmed(service: int, body: bytes) -> bytes:
    return bytes([0x10, service]) + body


def confirmed(service: int, body: bytes, invoke: int = 1) -> bytes:
    return bytes([0x00, 0x05, invoke, service]) + body


def complex_ack(service: int, body: bytes, invoke: int = 1) -> bytes:
    return bytes([0x30, invoke, service]) + body


def bacnet(message: bytes, **kw) -> Evidence:
    return dissect_one("bacnet", packet(message, dport=47808, sport=47808, **kw))


def i_am(instance: int, vendor: int) -> bytes:
    return unconfirmed(0, oid(8, instance) + unsigned(1476) + tag(9, b"\x03") + unsigned(vendor))


def rp_ack(otype: int, instance: int, prop: int, value: bytes) -> bytes:
    return complex_ack(12, oid(otype, instance, 0, context=True) + unsigned(prop, 1, context=True)
                       + opening(3) + value + closing(3))


# --- unit tests ---------------------------------------------------------------------------------

def test_i_am() -> None:
    ev = bacnet(bvlc(npdu(i_am(1234, 5)), function=0x0B))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "bacnet_device_instance", "1234", 0.9),
        ("src", "bacnet_vendor_id", "5", 0.9),
        ("src", "vendor", "Johnson Controls, Inc.", 0.7),
    ])


def test_relayed_i_am_is_weak_and_names_no_vendor() -> None:
    """A router relays a device of another network (NPDU SNET): the facts are not the router's own."""
    ev = bacnet(bvlc(npdu(i_am(17, 24), snet=3)))
    assert sorted(ev.facts) == [("src", "bacnet_device_instance", "17", 0.2),
                                ("src", "bacnet_vendor_id", "24", 0.2)]
    forwarded = bvlc(b"\xc0\xa8\x00\x05\xba\xc0" + npdu(i_am(18, 24)), function=0x04)  # BBMD
    assert ("src", "bacnet_device_instance", "18", 0.2) in bacnet(forwarded).facts


def test_unknown_vendor_id_has_no_name() -> None:
    ev = bacnet(bvlc(npdu(i_am(4194303, 65000))))
    assert [f[1] for f in ev.facts] == ["bacnet_device_instance", "bacnet_vendor_id"]


def test_vendor_table() -> None:
    names = vendor_names()
    assert names[5] == "Johnson Controls, Inc." and names[24] == "Automated Logic Corporation"
    assert names[36] == "Tridium Inc." and names[260] == "BACnet Stack at SourceForge"
    assert len(names) > 400


def test_read_property_acks_of_identity_properties() -> None:
    cases = [
        (121, string("JCI", 4, "utf-16-be"), ("vendor", "JCI", 0.8)),
        (70, string("MS-NAE4510-2"), ("model", "MS-NAE4510-2", 0.8)),
        (44, string("5.1.0.4400", 5, "latin-1"), ("firmware", "5.1.0.4400", 0.8)),
        (12, string("12.0 build 3"), ("os_version", "12.0 build 3", 0.8)),
        (372, string("SN-0042"), ("serial", "SN-0042", 0.8)),
        (77, string("AHU-1 controller"), ("bacnet_object_name", "AHU-1 controller", 0.8)),
        (75, oid(8, 500), ("bacnet_device_instance", "500", 0.8)),
    ]
    for prop, value, fact in cases:
        ev = bacnet(bvlc(npdu(rp_ack(8, 4194303, prop, value))))
        assert ev.errors == [] and ev.facts == [("src", *fact)], prop
    ev = bacnet(bvlc(npdu(rp_ack(8, 500, 120, unsigned(24)))))
    assert sorted(ev.facts) == [("src", "bacnet_vendor_id", "24", 0.9),
                                ("src", "vendor", "Automated Logic Corporation", 0.7)]
    # a point's name describes the device weakly; description and location have no attribute
    assert bacnet(bvlc(npdu(rp_ack(0, 3, 77, string("ZONE TEMP"))))).facts == [
        ("src", "bacnet_object_name", "ZONE TEMP", 0.3)]
    assert bacnet(bvlc(npdu(rp_ack(8, 500, 28, string("3rd floor"))))).facts == []
    # with an array index, and relayed from another network (no identity attribute then)
    indexed = complex_ack(12, oid(8, 9, 0, context=True) + unsigned(77, 1, context=True)
                          + unsigned(0, 2, context=True) + opening(3) + string("dev9") + closing(3))
    assert bacnet(bvlc(npdu(indexed))).facts == [("src", "bacnet_object_name", "dev9", 0.8)]
    assert bacnet(bvlc(npdu(rp_ack(8, 9, 70, string("X")), snet=5))).facts == []


def test_read_property_multiple_ack() -> None:
    body = (oid(8, 77, 0, context=True) + opening(1)
            + unsigned(77, 2, context=True) + opening(4) + string("Boiler plant") + closing(4)
            + unsigned(121, 2, context=True) + opening(4) + string("Acme Controls") + closing(4)
            + unsigned(76, 2, context=True) + unsigned(0, 3, context=True)  # object-list[0]
            + opening(4) + unsigned(3) + closing(4)
            + unsigned(70, 2, context=True) + opening(5) + tag(9, b"\x02") + tag(9, b"\x20") + closing(5)
            + unsigned(1000, 2, context=True)  # a constructed value is skipped
            + opening(4) + opening(0) + unsigned(1) + closing(0) + closing(4)
            + unsigned(44, 2, context=True) + opening(4) + string("v2.3") + closing(4)
            + closing(1)
            + oid(0, 1, 0, context=True) + opening(1)
            + unsigned(77, 2, context=True) + opening(4) + string("OAT") + closing(4) + closing(1))
    ev = bacnet(bvlc(npdu(complex_ack(14, body))))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "bacnet_object_name", "Boiler plant", 0.8),
        ("src", "vendor", "Acme Controls", 0.8),
        ("src", "firmware", "v2.3", 0.8),
        ("src", "bacnet_object_name", "OAT", 0.3),
    ])
    # Ethernet padding after an LLC frame is not an error
    assert bacnet(npdu(complex_ack(14, body)) + bytes(20), transport="", src_ip="", dst_ip="").errors == []
    truncated = bacnet(bvlc(npdu(complex_ack(14, body[:-3]))))
    assert truncated.errors == [("src", "malformed ReadPropertyMultiple-ACK")]


def test_character_sets() -> None:
    assert character_string(b"\x00caf\xc3\xa9") == "café"
    assert character_string(b"\x05caf\xe9") == "café"
    assert character_string(b"\x04\x00K\x00B") == "KB"
    assert character_string(b"\x03\x00\x00\x00K") == "K"
    assert character_string(b"\x01\x03\xa4" + "温度２".encode("cp932")) == "温度２"  # DBCS, code page 932
    jis = bytes(b & 0x7F for b in "温度".encode("euc_jp"))  # JIS X 0208 code points
    assert character_string(b"\x02" + jis) == "温度"
    assert character_string(b"\x09abc") is None
    assert character_string(b"") is None


def test_i_have_and_who_is_and_who_has() -> None:
    ev = bacnet(bvlc(npdu(unconfirmed(1, oid(8, 254) + oid(23, 4) + string("Meter 4"))), 0x0B))
    assert sorted(ev.facts) == [("src", "bacnet_device_instance", "254", 0.9),
                                ("src", "bacnet_object_name", "Meter 4", 0.3)]
    assert bacnet(bvlc(npdu(unconfirmed(8, b"")), 0x0B)).facts == [("src", "role", "bacnet-client", 0.3)]
    # Who-Has names an object the sender looks for: not the sender's
    who_has = bvlc(npdu(unconfirmed(7, tag(3, b"\x00relay 108", context=True))), 0x0B)
    assert bacnet(who_has).facts == [] and bacnet(who_has).errors == []
    router = bvlc(b"\x01\x80\x01\x00\x03", 0x0B)  # I-Am-Router-To-Network 3
    assert bacnet(router).facts == [("src", "role", "bacnet-router", 0.6)]


def events(message: bytes) -> list[tuple[str, dict]]:
    ev = bacnet(bvlc(npdu(message)))
    assert ev.errors == []
    return [(kind, details) for _about, kind, details in ev.events]


def test_device_changing_requests() -> None:
    write = confirmed(15, oid(2, 7, 0, context=True) + unsigned(85, 1, context=True)
                      + opening(3) + tag(4, b"\x42\x28\x00\x00") + closing(3) + unsigned(8, 4, context=True))
    assert events(write) == [("config_write", {"service": "write-property", "relayed": False,
                                               "object_type": 2, "instance": 7, "property": 85})]
    dcc = confirmed(17, unsigned(60, 0, context=True) + unsigned(1, 1, context=True)
                    + tag(2, b"\x00pw", context=True))
    assert events(dcc) == [("config_write", {"service": "device-communication-control", "relayed": False,
                                             "duration_minutes": 60, "state": "disable"})]
    cold = confirmed(20, unsigned(0, 0, context=True) + tag(1, b"\x00secret", context=True))
    assert events(cold) == [("cold_restart", {"service": "reinitialize-device", "state": "coldstart",
                                              "password": True, "relayed": False})]
    warm = confirmed(20, unsigned(1, 0, context=True))
    assert events(warm)[0][0] == "warm_restart" and events(warm)[0][1]["password"] is False
    assert events(confirmed(20, unsigned(4, 0, context=True)))[0][:1] == ("config_write",)
    read_file = confirmed(6, oid(10, 1) + opening(0) + tag(3, b"\x00") + unsigned(512) + closing(0))
    assert events(read_file) == [("file_transfer",
                                  {"direction": "read", "relayed": False, "file_instance": 1})]
    write_file = confirmed(7, oid(10, 0) + opening(0) + tag(3, b"\x00") + tag(6, b"data") + closing(0))
    assert events(write_file)[0][1]["direction"] == "write"
    time_sync = unconfirmed(6, tag(10, b"\x7b\x01\x02\x03") + tag(11, b"\x0c\x00\x00\x00"))
    assert events(time_sync) == [("time_set", {"service": "time-synchronization", "relayed": False})]
    assert events(unconfirmed(9, b""))[0][1]["service"] == "utc-time-synchronization"
    create = confirmed(10, opening(0) + unsigned(0, 0, context=True) + closing(0))
    assert events(create)[0][0] == "config_write"
    # acknowledgements and reads are not actions
    assert events(confirmed(12, oid(8, 1, 0, context=True) + unsigned(77, 1, context=True))) == []
    assert events(bytes([0x20, 1, 15])) == []


def test_not_bacnet_ip() -> None:
    assert bacnet(b"\x82\x01\x00\x10").errors == []  # BACnet/IPv6: not read
    assert bacnet(b"\x45\x00\x00\x10").errors[0][1] == "not a BACnet/IP BVLC header"
    assert bacnet(bvlc(b"", function=0x00)).errors == []  # BVLC-Result
    assert bacnet(b"\x81\x0a\x00\x40\x01\x00").errors[0][1].startswith("BVLC length 64")
    assert bacnet(bvlc(b"\x02\x00\x10\x08")).errors[0][1] == "NPDU protocol version 2"


def test_garbage_never_raises() -> None:
    valid = [
        bvlc(npdu(i_am(1234, 5))),
        bvlc(npdu(unconfirmed(1, oid(8, 254) + oid(23, 4) + string("Meter 4")), snet=2)),
        bvlc(npdu(rp_ack(8, 1, 121, string("JCI", 4, "utf-16-be")))),
        bvlc(npdu(complex_ack(14, oid(8, 77, 0, context=True) + opening(1) + unsigned(77, 2, context=True)
                              + opening(4) + string("Boiler") + closing(4) + closing(1)))),
        bvlc(npdu(confirmed(17, unsigned(60, 0, context=True) + unsigned(1, 1, context=True)))),
        bvlc(npdu(confirmed(20, unsigned(0, 0, context=True)))),
        bvlc(b"\x01\x28\x00\x05\x01\x07\x00\x03\x01\x09\xff" + i_am(5, 5)),  # DNET and SNET
    ]
    rng = random.Random(47808)
    samples = [v[:n] for v in valid for n in range(len(v) + 1)]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))) for _ in range(300)]
    samples += [b"\x81\x0a\x00\x2c" + bytes(rng.randrange(256) for _ in range(40)) for _ in range(200)]
    samples += [bvlc(npdu(bytes([rng.choice((0x00, 0x08, 0x10, 0x30, 0x38))])
                          + bytes(rng.randrange(256) for _ in range(30)))) for _ in range(300)]
    for sample in samples:
        bacnet(sample)
        bacnet(sample[4:], transport="", src_ip="", dst_ip="")


# --- real captures ------------------------------------------------------------------------------

@pytest.fixture
def bacnet_over_llc() -> Iterator[None]:
    """Map LLC SAP 0x82 to the catalog's "bacnet" for this test, unless the catalog already does.

    BACnet over 802.2 LLC (ISO 8802-2, SAP 0x82) is in the catalog once `Protocol("bacnet", ...)`
    lists llc_saps=(0x82,); until then the decoder labels those frames plain "llc".
    """
    table = protocols.TABLES["llc"]
    before = int(table[0x82])
    table[0x82] = protocols.ID["bacnet"]
    yield
    table[0x82] = before


def who_has_names(name: str) -> dict[str, set[str]]:
    """Object names that tshark reports from Who-Has requests (bacapp.object_name of service 7).

    Who-Has asks "who has the object named X?": X belongs to whichever device answers, not to
    the sender, so the dissector reports no fact for it and the comparison leaves these out.
    In icsnpp-bacnet__bacnet_services.pcap these are the three "relay 108" Who-Has requests
    (from 192.168.0.50, 192.168.0.255 and the BACnet/LLC sender).
    """
    return {"icsnpp-bacnet__bacnet_services.pcap": {"192.168.0.50": {"relay 108"},
                                                   "192.168.0.255": {"relay 108"},
                                                   "(no-ip)": {"relay 108"}}}.get(name, {})


def as_tshark(value: str) -> str:
    """tshark 4.0 shows a DBCS string (character set 1) as UTF-8 of its raw bytes, code page
    octets left out: every non-ASCII byte becomes U+FFFD. The dissector decodes the code page
    (932, Shift-JIS, in icsnpp-bacnet__bacnet_segmented_data.pcap: "温度２", temperature 2)."""
    try:
        return value.encode("cp932").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value


@pytest.mark.parametrize("name", WITH_BACNET)
def test_real_captures_match_tshark(name: str, bacnet_over_llc: None) -> None:
    truth = TRUTH[name]["bacnet"]
    results = run_capture(CAPTURES / name, "bacnet")
    key = {"(no-ip)": ""}
    vendors = facts_by_ip(results, "bacnet_vendor_id")
    for ip, values in truth["vendor_ids_by_src"].items():
        assert {str(v) for v in values} <= vendors.get(key.get(ip, ip), set()), ip
    instances = facts_by_ip(results, "bacnet_device_instance")
    for ip, values in truth["iam_device_instances_by_src"].items():
        assert {str(v) for v in values} <= instances.get(key.get(ip, ip), set()), ip
    names = facts_by_ip(results, "bacnet_object_name")
    skipped = who_has_names(name)
    for ip, values in truth["object_names_by_src"].items():
        ours = names.get(key.get(ip, ip), set())
        expected = set(values) - skipped.get(ip, set())
        assert expected <= ours | {as_tshark(v) for v in ours}, ip
    assert results.errors == {}


def test_segmented_capture_names_are_decoded() -> None:
    names = facts_by_ip(run_capture(CAPTURES / "icsnpp-bacnet__bacnet_segmented_data.pcap", "bacnet"),
                        "bacnet_object_name")
    assert names["10.0.0.2"] == {"温度２", "湿度２"}  # tshark: "���x�Q" for both
