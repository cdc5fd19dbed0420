"""The identification engine: IEEE registry vendors, names, candidates and classes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tapwatch.identify import FactView, Identity, identify, oui, taxonomy

IEEE = Path("/usr/share/ieee-data")
needs_ieee = pytest.mark.skipif(
    not (IEEE / "oui.csv").is_file(), reason="Debian's ieee-data package is not installed"
)


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch):
    """Tests change TAPWATCH_OUI_DIR: reload the registry around each one (rules stay cached)."""
    monkeypatch.delenv(oui.ENV_DIR, raising=False)
    oui.reset()
    yield
    oui.reset()


def fact(attribute: str, value: str, source: str, confidence: float = 0.8, count: int = 1) -> FactView:
    return FactView(attribute, value, source, confidence, count)


# ---------------------------------------------------------------- registry lookups

@needs_ieee
def test_oui_ma_l_siemens():
    entry = oui.lookup("00:1b:1b:02:9a:c3")
    assert entry is not None
    assert (entry.prefix, entry.registry) == ("00:1B:1B", "MA-L")
    assert entry.organization == "Siemens AG"  # registered as "Siemens AG," (trailing comma)
    assert entry.vendor == "Siemens"


@needs_ieee
def test_oui_registry_name_and_display_name():
    entry = oui.lookup("00-80-F4-12-34-56")
    assert entry is not None
    assert entry.organization == "TELEMECANIQUE ELECTRIQUE"
    assert entry.vendor == "Schneider Electric"
    hp = oui.lookup("3c:52:82:11:22:33")
    assert hp is not None and hp.organization == "Hewlett Packard" and hp.vendor == "HP"
    cisco = oui.lookup("00:1e:f6:73:59:81")
    assert cisco is not None and cisco.organization == "Cisco Systems, Inc" and cisco.vendor == "Cisco"


@needs_ieee
def test_oui_ma_m_28_bit_beats_the_registration_authority_block():
    entry = oui.lookup("38:fd:fe:3a:bc:de")
    assert entry is not None
    assert (entry.prefix, entry.registry) == ("38:FD:FE:3", "MA-M")
    assert entry.organization == "Siemens AG, PG IE R&D"
    assert entry.vendor == "Siemens"
    neighbour = oui.lookup("38fd.fe7a.bcde")
    assert neighbour is not None and neighbour.registry == "MA-M"
    assert neighbour.organization == "Rademacher Geraete-Elektronik GmbH"
    assert neighbour.vendor == "Rademacher Geraete-Elektronik"


@needs_ieee
def test_oui_ma_s_36_bit():
    entry = oui.lookup("70:b3:d5:e4:0a:bc")
    assert entry is not None
    assert (entry.prefix, entry.registry) == ("70:B3:D5:E4:0", "MA-S")
    assert entry.organization == "Siemens Mobility GmbH - MO TI SPA"
    assert entry.vendor == "Siemens"
    other = oui.lookup("70:b3:d5:e4:7a:bc")
    assert other is not None and other.organization == "DEUTA-WERKE GmbH"


@needs_ieee
def test_registration_authority_blocks_and_private_entries_have_no_vendor():
    # 38:FD:FE is the IEEE's own MA-L; its block F is not assigned in this registry
    assert oui.lookup("38:fd:fe:f0:00:01") is None
    assert oui.lookup("74:1a:e0:9a:bc:de") is None  # MA-M 741AE09 is "Private"


def write_registry(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    header = "Registry,Assignment,Organization Name,Organization Address\n"
    (directory / "oui.csv").write_text(
        header + 'MA-L,ACBBCC,"Example Networks, Inc.",1 Road Town US\n'
        'MA-L,001122,IEEE Registration Authority,445 Hoes Lane\n', encoding="utf-8")
    (directory / "mam.csv").write_text(header + "MA-M,0011225,Middle Things Corp,Somewhere\n",
                                       encoding="utf-8")
    (directory / "oui36.csv").write_text(header + "MA-S,001122567,Small Things GmbH,Berlin DE\n",
                                         encoding="utf-8")


def test_oui_dir_override_and_longest_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_registry(tmp_path / "ieee")
    monkeypatch.setenv(oui.ENV_DIR, str(tmp_path / "ieee"))
    oui.reset()
    assert oui.lookup("ac:bb:cc:00:00:01").vendor == "Example Networks"
    assert oui.lookup("00:11:22:50:00:01").vendor == "Middle Things"  # 28 bits
    small = oui.lookup("00:11:22:56:70:01")  # 36 bits beat 28 bits
    assert (small.prefix, small.registry, small.vendor) == ("00:11:22:56:7", "MA-S", "Small Things")
    assert oui.lookup("00:11:22:99:00:01") is None  # only the registration authority's MA-L
    ident = identify("ac:bb:cc:00:00:01", [])
    assert ident.vendor == "Example Networks"
    assert ident.evidence["vendor"][0].source == "oui"
    assert ident.evidence["vendor"][0].confidence == pytest.approx(0.3)
    assert 'registered to "Example Networks, Inc"' in ident.evidence["vendor"][0].detail


def test_missing_registry_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture):
    monkeypatch.setenv(oui.ENV_DIR, str(tmp_path / "nothing-here"))
    oui.reset()
    with caplog.at_level(logging.WARNING, logger="tapwatch.identify.oui"):
        assert oui.lookup("00:1b:1b:02:9a:c3") is None
        assert oui.lookup("00:80:f4:02:9a:c3") is None
        ident = identify("00:1b:1b:02:9a:c3", [])
    assert ident.vendor is None and "vendor" not in ident.evidence
    warnings = [r for r in caplog.records if "no IEEE registry files" in r.getMessage()]
    assert len(warnings) == 1


def test_locally_administered_macs_are_not_looked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_registry(tmp_path / "ieee")
    (tmp_path / "ieee" / "oui.csv").write_text(
        "Registry,Assignment,Organization Name,Organization Address\nMA-L,AABBCC,Example,x\n"
        "MA-L,A8BBCC,Example Two,x\n", encoding="utf-8")
    monkeypatch.setenv(oui.ENV_DIR, str(tmp_path / "ieee"))
    oui.reset()
    # 0xAA has the locally-administered bit set: a randomized address that only looks registered
    ident = identify("aa:bb:cc:00:00:01", [])
    assert ident.mac_locally_administered is True
    assert ident.vendor is None
    assert oui.lookup("aa:bb:cc:00:00:01") is None
    assert identify("a8:bb:cc:00:00:01", []).vendor == "Example Two"
    assert identify("a8:bb:cc:00:00:01", []).mac_locally_administered is False
    # another fact may still state the vendor of a randomized phone
    phone = identify("da:a1:19:00:00:01", [fact("http_user_agent",
                     "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15", "http")])
    assert phone.mac_locally_administered is True
    assert phone.vendor == "Apple"


def test_mac_parsing():
    assert oui.parse_mac("00:1B:1B:02:9A:C3") == 0x001B1B029AC3
    assert oui.parse_mac("001b.1b02.9ac3") == 0x001B1B029AC3
    assert oui.parse_mac("001b1b029ac3") == 0x001B1B029AC3
    assert oui.parse_mac("") is None and oui.parse_mac(None) is None
    assert oui.parse_mac("00:1b:1b") is None
    assert oui.is_locally_administered("02:00:00:00:00:01")
    assert not oui.is_locally_administered("00:1b:1b:02:9a:c3")
    assert oui.lookup("01:00:5e:00:00:01") is None  # multicast
    assert identify(None, []).mac_locally_administered is False


def test_vendor_display_names():
    assert oui.normalize_vendor("Hewlett Packard") == "HP"
    assert oui.normalize_vendor("Hewlett Packard Enterprise") == "HPE"
    assert oui.normalize_vendor("Cisco Systems, Inc") == "Cisco"
    assert oui.normalize_vendor("Siemens AG,") == "Siemens"
    assert oui.normalize_vendor("Schneider Electric") == "Schneider Electric"
    assert oui.normalize_vendor("TELEMECANIQUE ELECTRIQUE") == "Schneider Electric"
    assert oui.normalize_vendor("Rockwell Automation/Allen-Bradley") == "Rockwell Automation"
    assert oui.normalize_vendor("Routerboard.com") == "MikroTik"
    assert oui.normalize_vendor("AMERICAN POWER CONVERSION CORP") == "APC"
    assert oui.normalize_vendor("Shenzhen Example Technology Co.,Ltd.") == "Shenzhen Example Technology"
    assert oui.normalize_vendor("GREAT LAKES WIDGETS INC") == "Great Lakes Widgets"


# ---------------------------------------------------------------- names

def test_name_order_of_trust():
    facts = [
        fact("profinet_station_name", "pn-io-7", "profinet_dcp"),
        fact("dns_name", "host-12.corp.example.com.", "dns"),
        fact("snmp_sysname", "sw-core-1", "snmp"),
        fact("cdp_device_id", "SW-CORE-1.corp", "cdp"),
        fact("lldp_system_name", "sw-core-1.corp.example.com", "lldp"),
        fact("mdns_name", "Lucas-iMac.local", "mdns"),
        fact("netbios_name", "LUCAS-IMAC<20>", "netbios"),
        fact("hostname", "lucas-imac", "dhcp"),
    ]
    expected = ["lucas-imac", "LUCAS-IMAC", "Lucas-iMac", "sw-core-1.corp.example.com",
                "SW-CORE-1.corp", "sw-core-1", "host-12.corp.example.com", "pn-io-7"]
    ident = identify(None, facts)
    assert ident.name == "lucas-imac"
    assert [e.value for e in ident.evidence["name"]] == ["lucas-imac", "sw-core-1.corp.example.com",
                                                          "SW-CORE-1.corp", "sw-core-1",
                                                          "host-12.corp.example.com", "pn-io-7"]
    # each tier takes over when the ones above it are missing
    for i in range(len(facts)):
        present = facts[: len(facts) - i]
        assert identify(None, present).name == expected[i], present[-1]


def test_name_cleanup_and_non_dhcp_hostnames():
    assert identify(None, [fact("mdns_name", "Living-Room.local.", "mdns")]).name == "Living-Room"
    instance = fact("mdns_name", "Luca\u2019s iMac._ssh._tcp.local", "mdns")
    assert identify(None, [instance]).name == "Luca\u2019s iMac"
    assert identify(None, [fact("mdns_name", "7.2.0.10.in-addr.arpa", "mdns")]).name is None
    assert identify(None, [fact("mdns_name", "_services._dns-sd._udp.local", "mdns")]).name is None
    assert identify(None, [fact("netbios_name", "KW-VLIPC<00>", "netbios")]).name == "KW-VLIPC"
    # a host name from another protocol ranks after the DNS name
    ident = identify(None, [fact("hostname", "from-syslog", "syslog"), fact("dns_name", "a.example", "dns")])
    assert ident.name == "a.example"
    assert identify(None, [fact("hostname", "localhost", "dhcp")]).name is None
    ident = identify(None, [fact("hostname", "old-name", "dhcp", 0.9, 2),
                            fact("hostname", "new-name", "dhcp", 0.9, 40)])
    assert ident.name == "new-name"
    assert ident.evidence["name"][0].detail == 'hostname "new-name" from dhcp'


# ---------------------------------------------------------------- candidates

def test_direct_facts_and_ranking():
    facts = [
        fact("vendor", "Siemens", "s7comm", 0.9),
        fact("model", "6ES7 214-1AG40-0XB0", "s7comm", 0.9),
        fact("firmware", "V4.2.3", "s7comm", 0.9),
        fact("device_type", "PLC", "modbus", 0.6),
    ]
    ident = identify(None, facts, ["s7comm"])
    assert (ident.vendor, ident.type, ident.device_class, ident.model, ident.firmware) == (
        "Siemens", "plc", "OT", "6ES7 214-1AG40-0XB0", "V4.2.3")
    assert ident.evidence["firmware"][0].detail == 'firmware "V4.2.3" reported by s7comm'
    assert {e.source for e in ident.evidence["type"]} >= {"modbus", "rule:ot-siemens-order-number-plc"}
    assert ident.evidence["device_class"][0].value == "OT"


def test_confidence_then_count_then_length():
    two = identify(None, [fact("os", "Linux", "a", 0.5, 1), fact("os", "Linux 5.10", "b", 0.5, 1)])
    assert two.os == "Linux 5.10"  # same confidence and count: the more specific
    counted = identify(None, [fact("os", "Linux", "a", 0.5, 9), fact("os", "Linux 5.10", "b", 0.5, 1)])
    assert counted.os == "Linux"
    confident = identify(None, [fact("os", "Linux", "a", 0.5, 9), fact("os", "Linux 5.10", "b", 0.6, 1)])
    assert confident.os == "Linux 5.10"
    assert [e.value for e in confident.evidence["os"]] == ["Linux 5.10", "Linux"]


def test_vendor_candidates_merge_across_spellings():
    ident = identify(None, [fact("vendor", "Siemens AG", "profinet", 0.4),
                            fact("vendor", "SIEMENS", "s7comm", 0.4)])
    assert ident.vendor == "Siemens"
    assert len({e.value for e in ident.evidence["vendor"]}) == 1


def test_model_in_parentheses():
    ident = identify(None, [fact("model", "(HP LaserJet M404)", "mdns", 0.6)])
    assert ident.model == "HP LaserJet M404"


def test_unknown_device_type_values_are_ignored():
    ident = identify(None, [fact("device_type", "Generic Device", "enip")])
    assert ident.type is None and "type" not in ident.evidence


def test_class_from_protocols_when_the_type_is_unknown():
    ident = identify(None, [], ["dnp3", "tcp"])
    assert ident.type == "rtu"  # by rule: DNP3 served
    ot = identify(None, [], ["hsr", "arp"])
    assert ot.type is None and ot.device_class == "OT"
    assert ot.evidence["device_class"][0].detail == "type unknown; speaks hsr"
    assert identify(None, [], ["http", "dns"]).device_class is None


def test_nothing_known():
    ident = identify(None, [])
    assert ident == Identity(evidence={}, mac_locally_administered=False)


# ---------------------------------------------------------------- taxonomy

def test_taxonomy_classes():
    assert taxonomy.class_of("workstation") == "IT"
    assert taxonomy.class_of("access_point") == "IT"
    assert taxonomy.class_of("printer") == "IoT"
    assert taxonomy.class_of("ip_camera") == "IoT"
    assert taxonomy.class_of("building_controller") == "IoT"
    assert taxonomy.class_of("plc") == "OT"
    assert taxonomy.class_of("engineering_workstation") == "OT"
    assert taxonomy.class_of("unknown") is None
    assert taxonomy.display_name("smart_tv") == "Smart TV / media player"
    assert taxonomy.normalize_type("IP Camera") == "ip_camera"
    assert taxonomy.normalize_type("Programmable Logic Controller") == "plc"
    assert taxonomy.normalize_type("thermostat") == "building_controller"
    assert taxonomy.normalize_type("unknown") is None
    assert taxonomy.normalize_type("toaster") is None
    for type_id, t in taxonomy.TYPES.items():
        assert type_id == t.id and type_id == type_id.lower() and " " not in type_id
