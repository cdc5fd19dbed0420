"""Identification rules: each family on realistic facts, user rule files, and validation.

Fact values are real-world strings; the ones marked "shared capture" appear in
../shared/captures (see GROUND_TRUTH.jsonl there).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tapwatch.identify import (
    FactView,
    Identity,
    RuleError,
    default_rules,
    identify,
    load_rules,
    oui,
    reset,
    validate_rules,
)
from tapwatch.identify.ruleset import parse_rules

IEEE = Path("/usr/share/ieee-data")
needs_ieee = pytest.mark.skipif(
    not (IEEE / "oui.csv").is_file(), reason="Debian's ieee-data package is not installed"
)


@pytest.fixture(autouse=True)
def _default_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TAPWATCH_RULES_DIR", raising=False)
    monkeypatch.delenv(oui.ENV_DIR, raising=False)


def ident(facts: list[tuple], protocols: tuple[str, ...] = (), mac: str | None = None,
          **kwargs) -> Identity:
    views = [FactView(a, v, s, *rest) if rest else FactView(a, v, s, 0.8) for a, v, s, *rest in facts]
    return identify(mac, views, protocols, **kwargs)


def summary(i: Identity) -> tuple:
    return (i.type, i.vendor, i.model, i.os, i.firmware)


# ---------------------------------------------------------------- printers

def test_hp_printer():
    i = ident([
        ("hostname", "NPI1A2B3C", "dhcp"),
        ("dhcp_vendor_class", "Hewlett-Packard JetDirect", "dhcp"),
        ("http_server", "HP HTTP Server; HP LaserJet Pro M404dn - W1A53A; Serial Number: PHBQJ12345; "
                        "Built: Thu Jan 01, 2020 00:00:00", "http"),
        ("mdns_service", "_ipp._tcp.local", "mdns"),
        ("mdns_txt", "ty=HP LaserJet Pro M404dn", "mdns"),
    ], ("ipp", "jetdirect", "mdns", "dhcp"))
    assert summary(i) == ("printer", "HP", "LaserJet Pro M404dn", None, None)
    assert i.device_class == "IoT" and i.name == "NPI1A2B3C"
    best = i.evidence["model"][0]
    assert best.source == "rule:printer-hp-http-server" and best.confidence == pytest.approx(0.9)
    assert best.detail.startswith('rule printer-hp-http-server: http_server "HP HTTP Server; HP LaserJet')
    # the generic TXT rule is kept as evidence, ranked lower
    assert ("HP LaserJet Pro M404dn", "rule:printer-mdns-txt-ty") in [
        (e.value, e.source) for e in i.evidence["model"]]


def test_printer_from_mdns_service_only():
    i = ident([("mdns_service", "_pdl-datastream._tcp.local", "mdns")])
    assert i.type == "printer"
    assert i.evidence["type"][0].detail == (
        'rule printer-mdns-service: mdns_service "_pdl-datastream._tcp.local"')


def test_brother_printer_by_netbios_name():
    # shared capture zeek__wikipedia.pcap: NBNS name BRWC0CB383D1F42<00>
    i = ident([("netbios_name", "BRWC0CB383D1F42<00>", "netbios")])
    assert summary(i) == ("printer", "Brother", None, None, None)
    assert i.name == "BRWC0CB383D1F42"


def test_epson_and_canon_printers():
    epson = ident([("mdns_txt", "ty=EPSON ET-2750 Series", "mdns"),
                   ("mdns_service", "_ipp._tcp.local", "mdns")])
    assert summary(epson) == ("printer", "Epson", "ET-2750", None, None)
    canon = ident([("snmp_sysdescr", "Canon iR-ADV C5535 /P", "snmp")])
    assert summary(canon) == ("printer", "Canon", "iR-ADV C5535", None, None)


def test_ipp_server_with_virata_emweb():
    # shared capture ndpi__ipp.pcap: the IPP server answers "Virata-EmWeb/R6_2_1"
    i = ident([("http_server", "Virata-EmWeb/R6_2_1", "http")], ("ipp", "http"))
    assert i.type == "printer" and i.vendor is None


# ---------------------------------------------------------------- cameras

def test_axis_camera_from_ssdp():
    i = ident([("ssdp_server", "Linux/3.14 UPnP/1.0 AXIS P3245-LV/10.12", "ssdp"),
               ("mdns_service", "_axis-video._tcp.local", "mdns")], ("rtsp", "ssdp", "mdns"))
    assert summary(i) == ("ip_camera", "Axis", "P3245-LV", None, "10.12")


def test_axis_camera_from_dhcp():
    i = ident([("dhcp_vendor_class", "AXIS,Network Camera,M3045-V,9.80.1", "dhcp")])
    assert summary(i) == ("ip_camera", "Axis", "M3045-V", None, "9.80.1")


def test_axis_door_station_is_access_control():
    i = ident([("ssdp_server", "Linux/4.9 UPnP/1.0 AXIS A8207-VE/10.7", "ssdp")])
    assert summary(i) == ("access_control", "Axis", "A8207-VE", None, "10.7")


def test_hikvision_camera_and_recorder():
    cam = ident([("http_server", "App-webs/", "http")], ("rtsp", "http"))
    assert summary(cam)[:2] == ("ip_camera", "Hikvision")
    nvr = ident([("http_server", "DNVRS-Webs", "http")], ("rtsp", "http"))
    assert summary(nvr)[:2] == ("video_recorder", "Hikvision")


@needs_ieee
def test_camera_maker_serving_rtsp():
    oui.reset()
    i = ident([], ("rtsp", "http"), mac="04:03:12:aa:bb:cc")  # Hangzhou Hikvision Digital Technology
    assert (i.type, i.vendor) == ("ip_camera", "Hikvision")
    assert i.evidence["type"][0].source == "rule:camera-vendor-rtsp"
    assert i.evidence["type"][0].detail == 'rule camera-vendor-rtsp: vendor "Hikvision"; served "rtsp"'


# ---------------------------------------------------------------- VoIP

def test_voip_phones_from_user_agents():
    polycom = ident([("sip_user_agent", "PolycomVVX-VVX_411-UA/6.4.2.0", "sip")], ("sip",))
    assert summary(polycom) == ("voip_phone", "Polycom", "VVX 411", None, "6.4.2.0")
    yealink = ident([("sip_user_agent", "Yealink SIP-T46S 66.86.0.15", "sip")])
    assert summary(yealink) == ("voip_phone", "Yealink", "T46S", None, "66.86.0.15")
    cisco = ident([("sip_user_agent", "Cisco-CP8845/12.8.1", "sip")])
    assert summary(cisco) == ("voip_phone", "Cisco", "CP-8845", None, "12.8.1")
    snom = ident([("sip_user_agent", "snomD785/10.1.33.33", "sip")])
    assert summary(snom) == ("voip_phone", "Snom", "D785", None, "10.1.33.33")


def test_cisco_phone_from_cdp_and_avaya_from_dhcp():
    cisco = ident([("cdp_platform", "Cisco IP Phone 7965", "cdp"),
                   ("cdp_device_id", "SEP001122334455", "cdp"),
                   ("cdp_capabilities", "Host Phone Two-port Mac Relay", "cdp")])
    assert summary(cisco) == ("voip_phone", "Cisco", "CP-7965", None, None)
    assert cisco.name == "SEP001122334455"
    avaya = ident([("dhcp_vendor_class", "ccp.avaya.com", "dhcp")])
    assert summary(avaya)[:2] == ("voip_phone", "Avaya")


# ---------------------------------------------------------------- network equipment

def test_cisco_switch_from_cdp():
    # shared capture tcpdump__3560_CDP.pcap
    i = ident([
        ("cdp_device_id", "Switch", "cdp"),
        ("cdp_platform", "cisco WS-C3560G-24PS", "cdp"),
        ("cdp_software_version", "Cisco IOS Software, C3560 Software (C3560-ADVIPSERVICESK9-M), "
                                 "Version 12.2(25)SEB4, RELEASE SOFTWARE (fc1)", "cdp"),
        ("cdp_capabilities", "Switch IGMP", "cdp"),
    ], ("cdp", "stp"))
    assert summary(i) == ("switch", "Cisco", "WS-C3560G-24PS", "Cisco IOS 12.2(25)SEB4", None)
    assert i.device_class == "IT" and i.name == "Switch"


def test_cisco_switch_from_lldp():
    # shared capture tcpdump__LLDP_and_CDP.pcap
    i = ident([
        ("lldp_system_name", "S1.cisco.com", "lldp"),
        ("lldp_system_description", "Cisco IOS Software, C3560 Software (C3560-ADVIPSERVICESK9-M), Version "
         "12.2(44)SE, RELEASE SOFTWARE (fc1)\nCopyright (c) 1986-2008 by Cisco Systems, Inc.\n"
         "Compiled Sat 05-Jan-08 00:15 by weiliu", "lldp"),
    ])
    assert summary(i) == ("switch", "Cisco", None, "Cisco IOS 12.2(44)SE", None)


def test_cisco_router_ap_firewall_platforms():
    isr = ident([("cdp_platform", "cisco ISR4331/K9", "cdp")])
    assert summary(isr)[:3] == ("router", "Cisco", "ISR4331/K9")
    assert summary(ident([("cdp_platform", "cisco AIR-AP2802I-E-K9", "cdp")]))[:3] == (
        "access_point", "Cisco", "AIR-AP2802I-E-K9")
    asa = ident([("snmp_sysdescr", "Cisco Adaptive Security Appliance Version 9.8(2)", "snmp")])
    assert summary(asa) == ("firewall", "Cisco", None, "Cisco ASA 9.8(2)", None)


def test_juniper_switch():
    i = ident([("lldp_system_description", "Juniper Networks, Inc. ex2300-24p Ethernet Switch, kernel JUNOS "
                "18.2R3-S2.9, Build date: 2019-07-19 13:27:30 UTC Copyright (c) 1996-2019 Juniper Networks, "
                "Inc.", "lldp")])
    assert summary(i) == ("switch", "Juniper", "EX2300-24P", "Junos 18.2R3-S2.9", None)


def test_aruba_ap_and_switch():
    ap = ident([("lldp_system_description", "ArubaOS (MODEL: 325), Version 8.6.0.4-8.6.0.4", "lldp"),
                ("lldp_capabilities", "Bridge, WLAN Access Point, Router", "lldp")])
    assert summary(ap) == ("access_point", "Aruba", "AP-325", "ArubaOS 8.6.0.4-8.6.0.4", None)
    sw = ident([("lldp_system_description", "Aruba JL258A 2930F-8G-PoE+-2SFP+ Switch, revision "
                 "WC.16.10.0009, ROM WC.16.01.0008 (/ws/swbuildm/rel_ukiah_qaoff/code/build/"
                 "bom(swbuildm_rel_ukiah_qaoff_rel_ukiah))", "lldp")])
    assert summary(sw) == ("switch", "Aruba", "2930F-8G-PoE+-2SFP+", None, "WC.16.10.0009")


def test_mikrotik_ubiquiti_fortinet_paloalto():
    mt = ident([("lldp_system_description", "MikroTik RouterOS 6.49.7 (long-term) RB4011iGS+", "lldp")])
    assert summary(mt) == ("router", "MikroTik", "RB4011iGS+", "RouterOS 6.49.7", None)
    crs = ident([("lldp_system_description", "MikroTik RouterOS 7.11 (stable) CRS326-24G-2S+", "lldp")])
    assert summary(crs) == ("switch", "MikroTik", "CRS326-24G-2S+", "RouterOS 7.11", None)
    ubnt = ident([("lldp_system_description", "USW-24-PoE, 6.5.59.14777, Linux 3.6.5", "lldp")])
    assert summary(ubnt)[:3] == ("switch", "Ubiquiti", "USW-24-PoE")
    assert ubnt.firmware == "6.5.59.14777"
    forti = ident([("snmp_sysdescr", "FortiGate-60F v7.0.12,build0523,230508 (GA.M)", "snmp")])
    assert summary(forti) == ("firewall", "Fortinet", "FortiGate-60F", "FortiOS 7.0.12", None)
    pan = ident([("snmp_sysdescr", "Palo Alto Networks PA-3220 series firewall", "snmp")])
    assert summary(pan) == ("firewall", "Palo Alto Networks", "PA-3220", "PAN-OS", None)


def test_siemens_scalance_switch():
    # shared capture iti-ics-tools__mb2.pcap
    i = ident([("lldp_system_name", "Switch1", "lldp"),
               ("lldp_system_description",
                "Siemens, SIMATIC NET, SCALANCE X212-2, 6GK5 212-2BB00-2AA3, HW: 7, FW: V4.02", "lldp")],
              ("lldp", "profinet"))
    assert summary(i) == ("switch", "Siemens", "SCALANCE X212-2", None, "V4.02")
    assert i.device_class == "IT"


def test_tplink_switch_from_dhcp():
    # shared capture ndpi__teams.pcap
    i = ident([("hostname", "TL-SG116E", "dhcp"), ("dhcp_vendor_class", "TL-SG116E", "dhcp")])
    assert summary(i) == ("switch", "TP-Link", "TL-SG116E", None, None)


def test_home_routers_from_upnp():
    # shared capture suricata-verify__output-eve-ftp-data_input.pcap
    igd = ident([("ssdp_server", "POSIX, UPnP/1.0 UPnP Stack/1.2.0.0 (BROADCOM INTERNAL)", "ssdp"),
                 ("ssdp_nt", "urn:schemas-upnp-org:device:InternetGatewayDevice:1", "ssdp")])
    assert igd.type == "router"
    # shared capture suricata-verify__ssdp.pcap
    tomato = ident([("ssdp_server", "UPnP/Tomato 1.28.7500 MIPSR2Toastman-RT K26 USB Ext UPnP/1.0 "
                                    "MiniUPnPd/1.6", "ssdp")])
    assert (tomato.type, tomato.os) == ("router", "Tomato 1.28.7500")


# ---------------------------------------------------------------- computers and phones

def test_windows_7_workstation():
    # shared capture ndpi__1kxun.pcap (a host called kevin-PC)
    i = ident([("hostname", "kevin-PC", "dhcp"), ("dhcp_vendor_class", "MSFT 5.0", "dhcp"),
               ("http_user_agent", "Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.22 (KHTML, like Gecko) "
                                   "Chrome/25.0.1364.152 Safari/537.22", "http")])
    assert summary(i) == ("workstation", None, None, "Windows 7", None)
    assert i.device_class == "IT"


def test_windows_10_laptop_and_server():
    laptop = ident([("hostname", "LAPTOP-4F7K2Q9M", "dhcp"), ("dhcp_vendor_class", "MSFT 5.0", "dhcp"),
                    ("http_user_agent", "Microsoft-CryptoAPI/10.0", "http")])
    assert (laptop.type, laptop.os) == ("laptop", "Windows 10/11")
    server = ident([("smb_os", "Windows Server 2019 Standard 17763", "smb"),
                    ("dhcp_vendor_class", "MSFT 5.0", "dhcp")])
    assert (server.type, server.os) == ("server", "Windows Server 2019")
    upnp = ident([("ssdp_server", "Microsoft-Windows/10.0 UPnP/1.0 UPnP-Device-Host/1.0", "ssdp")])
    assert upnp.os == "Windows 10/11"


def test_snmp_enterprise_numbers_pbx_and_dial_search():
    cisco = ident([("snmp_sysobjectid", "1.3.6.1.4.1.9.1.1208", "snmp", 0.9)])
    assert cisco.vendor == "Cisco"
    apc = ident([("snmp_sysobjectid", "1.3.6.1.4.1.318.1.3.27", "snmp", 0.9)])
    assert (apc.type, apc.vendor) == ("ups", "APC")
    pbx = ident([("sip_user_agent", "Asterisk PBX 18.9.0", "sip")], ("sip",))
    assert pbx.type == "server"
    # shared capture iti-ics-tools__melsoft_UDP_unclean_1.pcap: SSDP M-SEARCH USER-AGENT
    chrome = ident([("http_user_agent", "Google Chrome/63.0.3239.84 Windows", "ssdp")])
    assert (chrome.type, chrome.os) == ("workstation", "Windows")


def test_macos_and_macbook():
    i = ident([("hostname", "MacBook-Air", "dhcp"),
               ("http_user_agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                                   "(KHTML, like Gecko) Version/17.1 Safari/605.1.15", "http")])
    assert summary(i) == ("laptop", "Apple", None, "macOS 10.15.7", None)
    imac = ident([("mdns_txt", "model=iMac21,1", "mdns")])
    assert summary(imac) == ("workstation", "Apple", "iMac21,1", "macOS", None)


def test_iphone_and_ipad():
    phone = ident([("hostname", "Lucas-iPhone", "dhcp"),
                   ("http_user_agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/"
                                       "605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                    "http")], mac="c6:2c:03:60:6a:64")
    assert summary(phone) == ("mobile_phone", "Apple", "iPhone", "iOS 17.1", None)
    assert phone.mac_locally_administered  # private Wi-Fi address
    ipad = ident([("http_user_agent", "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15",
                   "http")])
    assert summary(ipad) == ("tablet", "Apple", "iPad", "iPadOS 16.6", None)


def test_android_phone():
    # shared capture ndpi__alexa-app.pcapng: an LG phone running the Alexa app
    i = ident([("hostname", "android-1c1335ec95a27318", "dhcp"),
               ("dhcp_vendor_class", "dhcpcd-5.5.6", "dhcp"),
               ("http_user_agent", "Dalvik/2.1.0 (Linux; U; Android 5.1.1; LGLS751 Build/LMY47V)", "http"),
               ("http_user_agent", "Mozilla/5.0 (Linux; Android 5.1.1; LGLS751 Build/LMY47V; wv) AppleWebKit/"
                                   "537.36 (KHTML, like Gecko) Version/4.0 Chrome/56.0.2924.87 Mobile "
                                   "Safari/537.36", "http")])
    assert summary(i) == ("mobile_phone", None, "LGLS751", "Android 5.1.1", None)
    modern = ident([("dhcp_vendor_class", "android-dhcp-13", "dhcp"),
                    ("http_user_agent", "Mozilla/5.0 (Linux; Android 13; SM-G991B) AppleWebKit/537.36",
                     "http")])
    assert summary(modern) == ("mobile_phone", "Samsung", "SM-G991B", "Android 13", None)


def test_linux_hosts():
    # shared capture tcpdump__dhcp-mud.pcap
    pi = ident([("hostname", "raspberrypi", "dhcp"),
                ("dhcp_vendor_class", "dhcpcd-6.11.5:Linux-4.1.18-v7+:armv7l:BCM2709", "dhcp")])
    assert summary(pi) == (None, "Raspberry Pi", "Raspberry Pi", "Linux 4.1.18-v7+", None)
    # shared capture zeek__snmpwalk-short.pcap
    snmp = ident([("snmp_sysdescr", "Linux ubuntu-512mb-sfo2-01 4.4.0-31-generic #50~14.04.1-Ubuntu SMP Wed "
                                    "Jul 13 01:07:32 UTC 2016 x86_64", "snmp")])
    assert snmp.os == "Linux 4.4.0-31-generic"
    # shared capture tcpdump__lldp_mudurl.pcap
    lldp = ident([("lldp_system_description", "Ubuntu 14.04.5 LTS Linux 3.13.0-106-generic #153-Ubuntu SMP "
                                              "Tue Dec 6 15:45:13 UTC 2016 i686", "lldp")])
    assert (lldp.type, lldp.os) == ("server", "Ubuntu 14.04.5 LTS")
    desktop = ident([("http_user_agent", "Mozilla/5.0 (X11; Linux i686; rv:24.0) Gecko/20100101 Firefox/24.0",
                      "http")])
    assert (desktop.type, desktop.os) == ("workstation", "Linux")


def test_p0f_labels_are_weak_evidence():
    i = ident([("p0f_os", "Windows 7 or 8", "p0f", 0.5)])
    assert i.os == "Windows 7 or 8"
    both = ident([("p0f_os", "Windows 7 or 8", "p0f", 0.5),
                  ("http_user_agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "http")])
    assert both.os == "Windows 10/11"
    assert identify(None, [FactView("p0f_os", "Linux 3.11 and newer", "p0f", 0.5)]).os == "Linux"


# ---------------------------------------------------------------- media, speakers, home

def test_cast_devices():
    chromecast = ident([("mdns_service", "_googlecast._tcp.local", "mdns"),
                        ("mdns_txt", "md=Chromecast Ultra", "mdns")])
    assert summary(chromecast) == ("smart_tv", "Google", "Chromecast Ultra", None, None)
    mini = ident([("mdns_service", "_googlecast._tcp.local", "mdns"),
                  ("mdns_txt", "md=Google Nest Mini", "mdns")])
    assert summary(mini) == ("smart_speaker", "Google", "Google Nest Mini", None, None)


def test_sonos_roku_echo():
    sonos = ident([("ssdp_server", "Linux UPnP/1.0 Sonos/70.3-35220 (ZPS12)", "ssdp")])
    assert summary(sonos) == ("smart_speaker", "Sonos", "ZPS12", None, "70.3-35220")
    roku = ident([("ssdp_server", "Roku/9.4.0 UPnP/1.0 Roku/9.4.0", "ssdp"), ("ssdp_nt", "roku:ecp", "ssdp")])
    assert summary(roku) == ("smart_tv", "Roku", None, "Roku OS 9.4.0", None)
    echo = ident([("http_user_agent", "Dalvik/2.1.0 (Linux; U; Android 5.1.1; AEOBC Build/LVY48F)", "http")])
    assert summary(echo)[:3] == ("smart_speaker", "Amazon", "AEOBC")
    assert echo.device_class == "IoT"


def test_thermostats_and_smart_home():
    ecobee = ident([("hostname", "ecobee-Main-Floor", "dhcp")])
    assert (ecobee.type, ecobee.vendor, ecobee.device_class) == ("building_controller", "ecobee", "IoT")
    hap = ident([("mdns_service", "_hap._tcp.local", "mdns"), ("mdns_txt", "ci=9", "mdns"),
                 ("mdns_txt", "md=T6 Pro", "mdns")])
    assert (hap.type, hap.model) == ("building_controller", "T6 Pro")
    shelly = ident([("hostname", "shelly1pm-A4CF12F45A4C", "dhcp")])
    assert summary(shelly)[:3] == ("iot_device", "Shelly", "Shelly 1pm")
    hue = ident([("mdns_service", "_hue._tcp.local", "mdns")])
    assert summary(hue)[:3] == ("iot_gateway", "Philips", "Hue Bridge")


@needs_ieee
def test_nest_thermostat_by_registry_vendor():
    oui.reset()
    i = ident([], (), mac="18:b4:30:12:34:56")  # Nest Labs Inc.
    assert (i.type, i.vendor) == ("building_controller", "Nest")


# ---------------------------------------------------------------- NAS and UPS

def test_nas():
    syno = ident([("ssdp_server", "Synology/DSM/192.168.1.10", "ssdp"),
                  ("mdns_txt", "vendor=Synology", "mdns"),
                  ("mdns_txt", "model=DS918+", "mdns"), ("mdns_service", "_http._tcp.local", "mdns")])
    assert summary(syno) == ("nas", "Synology", "DS918+", "DSM", None)
    qnap = ident([("mdns_service", "_qdiscover._tcp.local", "mdns"),
                  ("mdns_txt", "displayModel=TS-453D", "mdns"),
                  ("mdns_txt", "fwVer=5.0.1", "mdns")])
    assert summary(qnap) == ("nas", "QNAP", "TS-453D", None, "5.0.1")


def test_apc_ups():
    i = ident([("snmp_sysdescr", "APC Web/SNMP Management Card (MB:v4.1.0 PF:v6.5.6 PN:apc_hw05_aos_656.bin "
                                 "AF1:v6.5.6 AN1:apc_hw05_sumx_656.bin MN:AP9630 HR:05 SN: ZA1234567890 "
                                 "MD:04/01/2014) (Embedded PowerNET SNMP Agent SW v2.2 compatible)", "snmp")])
    assert summary(i) == ("ups", "APC", "AP9630", None, "v6.5.6")
    assert i.device_class == "IoT"


# ---------------------------------------------------------------- OT

def test_siemens_plc_from_s7_identity():
    # shared capture icsnpp-s7comm__s7ident.pcap (SZL module name) on a Siemens MAC prefix
    i = ident([("model", "CPU 315-2 PN/DP", "s7comm", 0.9), ("serial", "S C-C2UR28922012", "s7comm", 0.9)],
              ("s7comm",), mac="00:1b:1b:02:9a:c3")
    assert (i.type, i.vendor, i.model, i.device_class) == ("plc", "Siemens", "CPU 315-2 PN/DP", "OT")
    assert i.evidence["type"][0].source == "rule:ot-siemens-cpu-name"


def test_siemens_plc_from_vendor_and_order_number():
    i = ident([("vendor", "Siemens", "s7comm", 0.9), ("model", "6ES7 214-1AG40-0XB0", "s7comm", 0.9),
               ("firmware", "V4.2.3", "s7comm", 0.9)], ("s7comm", "profinet"))
    assert summary(i) == ("plc", "Siemens", "6ES7 214-1AG40-0XB0", None, "V4.2.3")


@needs_ieee
def test_plc_from_registry_vendor_and_served_protocol():
    oui.reset()
    i = ident([], ("s7comm", "cotp"), mac="00:1b:1b:02:9a:c3", served=["s7comm"])
    assert (i.type, i.vendor) == ("plc", "Siemens")
    assert i.evidence["type"][0].detail == 'rule ot-siemens-s7-vendor: served "s7comm"; vendor "Siemens"'
    # the same device only talking S7 (a client) is not called a PLC by the served rules
    client = ident([], ("s7comm",), mac="00:1b:1b:02:9a:c3", served=[])
    assert client.type is None and client.device_class == "OT"


def test_rockwell_controllogix():
    # shared capture iti-ics-tools__EIP-IPAddressChangeAttempt.pcap (CIP identity)
    i = ident([("vendor", "Rockwell Automation/Allen-Bradley", "enip", 0.9),
               ("model", "1756-L61/B LOGIX5561", "enip", 0.9)], ("enip",))
    assert summary(i)[:3] == ("plc", "Rockwell Automation", "1756-L61/B LOGIX5561")
    enbt = ident([("vendor", "Rockwell Automation/Allen-Bradley", "enip", 0.9),
                  ("model", "1756-ENBT/A", "enip", 0.9)], ("enip",))
    assert enbt.type == "plc"


def test_schneider_modicon():
    i = ident([("vendor", "Schneider Electric", "modbus", 0.9), ("model", "BMX P34 2020", "modbus", 0.9),
               ("firmware", "v2.4", "modbus", 0.9)], ("modbus",))
    assert summary(i) == ("plc", "Schneider Electric", "BMX P34 2020", None, "v2.4")


def test_mitsubishi_omron_beckhoff():
    melsec = ident([("model", "Q03UDECPU", "melsec", 0.9)], ("melsec",))
    assert summary(melsec)[:2] == ("plc", "Mitsubishi Electric")
    omron = ident([("model", "CJ2M-CPU33", "fins", 0.9)], ("fins",))
    assert summary(omron)[:2] == ("plc", "Omron")
    # shared capture iti-ics-tools__addroute.pcapng: a Beckhoff CX announcing itself over UPnP
    cx = ident([("ssdp_server", "Microsoft-WinCE/6.00 UPnP/1.0 UPnP-Device-Host/1.0", "ssdp"),
                ("ssdp_nt", "urn:beckhoff.com:service:cxconfig:1", "ssdp")], ("ssdp", "ads"))
    assert summary(cx) == ("plc", "Beckhoff", None, "Windows CE 6.00", None)


def test_engineering_workstation_and_hmi():
    # a Windows computer that talks S7 to controllers is an HMI / SCADA station ...
    station = ident([("hostname", "DESKTOP-2AEFM7G", "dhcp"), ("dhcp_vendor_class", "MSFT 5.0", "dhcp")],
                    ("s7comm", "dhcp", "netbios-ns"))
    assert (station.type, station.os, station.device_class) == ("hmi", "Windows", "OT")
    detail = station.evidence["type"][0].detail
    assert detail == 'rule ot-windows-industrial-client: protocol "s7comm"; os "Windows"'
    # ... and one seen programming them (a behaviour fact) is an engineering workstation
    ews = ident([("hostname", "DESKTOP-2AEFM7G", "dhcp"), ("dhcp_vendor_class", "MSFT 5.0", "dhcp"),
                 ("role", "s7comm_client", "behaviour", 0.5),
                 ("device_type", "engineering_workstation", "behaviour", 0.7)], ("s7comm", "dhcp"),
                served=["netbios-ssn"])
    assert (ews.type, ews.device_class) == ("engineering_workstation", "OT")
    hmi = ident([("http_user_agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "http")],
                ("modbus", "http"))
    assert (hmi.type, hmi.device_class) == ("hmi", "OT")
    software = ident([("http_user_agent", "TIA Portal V17 Update Client", "http")])
    assert software.type == "engineering_workstation"
    panel = ident([("netbios_name", "PANELPC02", "nbns")])
    assert panel.type == "hmi"
    # a Modbus server that p0f guesses to be Windows stays a controller
    drive = ident([("role", "modbus_server", "modbus", 0.7), ("p0f_os", "Windows 7 or 8", "p0f", 0.5)],
                  ("modbus",), mac=None)
    assert drive.type == "plc"


def test_windows_server_from_smb():
    # shared capture iti-ics-tools__mb2.pcap (host IAS01)
    i = ident([("smb_os", "Windows Server (R) 2008 Standard 6002 Service Pack 2", "smb"),
               ("smb_native_lanman", "Windows Server (R) 2008 Standard 6.0", "smb"),
               ("os_version", "6.0.6002", "smb", 0.7)])
    assert (i.type, i.os) == ("server", "Windows Server 2008")
    xp = ident([("smb_os", "Windows 5.1", "smb"), ("os_version", "5.1.2600", "smb", 0.7)])
    assert xp.os == "Windows XP"
    samba = ident([("smb_os", "Windows 6.1", "smb"), ("smb_native_lanman", "Samba 4.9.5-Debian", "smb"),
                   ("os_version", "6.1.0", "smb", 0.7)])
    assert samba.os is None


def test_telecontrol_and_substation():
    assert ident([], ("dnp3",), served=["dnp3"]).type == "rtu"
    assert ident([], ("iec104",)).type == "rtu"
    assert ident([], ("goose", "sv")).type == "ied"
    sel = ident([("model", "SEL-751", "dnp3", 0.9)], ("dnp3",))
    assert summary(sel)[:2] == ("ied", "Schweitzer Engineering Laboratories")


def test_facts_as_the_ot_dissectors_state_them():
    # s7comm: the port-102 side answered in S7, with SZL module and component records
    plc = ident([("s7_protocol", "s7comm", "s7comm", 0.9), ("vendor", "Siemens", "s7comm", 0.8),
                 ("device_type", "plc", "s7comm", 0.7),
                 ("order_number", "6ES7 315-2EH14-0AB0", "s7comm", 0.9),
                 ("model", "CPU 315-2 PN/DP", "s7comm", 0.9), ("firmware", "V3.2.6", "s7comm", 0.9)],
                ("s7comm", "cotp"))
    assert summary(plc) == ("plc", "Siemens", "CPU 315-2 PN/DP", None, "V3.2.6")
    details = [e.detail.split(": ", 1)[-1] for e in plc.evidence["type"]]
    assert 'order_number "6ES7 315-2EH14-0AB0"' in details
    # Modbus device identification: ProductCode object, roles from the request/response direction
    modicon = ident([("vendor", "Schneider Electric", "modbus", 0.9),
                     ("product_code", "BMX P34 2020", "modbus", 0.9), ("firmware", "v2.4", "modbus", 0.9),
                     ("role", "modbus_server", "modbus", 0.7)], ("modbus",))
    assert summary(modicon) == ("plc", "Schneider Electric", None, None, "v2.4")
    assert modicon.evidence["type"][0].source == "rule:ot-schneider-plc-model"
    # PROFINET DCP: station name, type of station and role
    io = ident([("profinet_station_name", "versamax-pns11", "profinet_dcp", 0.9),
                ("model", "IC200PNS001", "profinet_dcp", 0.8),
                ("profinet_role", "IO-Device", "profinet_dcp")],
               ("profinet",))
    assert (io.name, io.type, io.vendor, io.device_class) == ("versamax-pns11", "plc", "GE", "OT")
    controller = ident([("profinet_role", "IO-Controller", "profinet_dcp")], ("profinet",))
    assert controller.type == "plc"
    scalance = ident([("profinet_station_name", "siemens-x208-switch", "profinet_dcp", 0.9),
                      ("model", "SCALANCE X-200", "profinet_dcp", 0.8),
                      ("profinet_role", "IO-Device", "profinet_dcp")], ("profinet", "lldp"))
    assert (scalance.type, scalance.vendor) == ("switch", "Siemens")


def test_client_roles_are_not_served():
    client = ident([("role", "modbus_client", "modbus", 0.7)], ("modbus",))
    assert client.type is None and client.device_class == "OT"
    server = ident([("role", "modbus_server", "modbus", 0.7)], ("modbus",))
    assert server.type == "plc"
    master = ident([("role", "dnp3_master", "dnp3", 0.7), ("dhcp_vendor_class", "MSFT 5.0", "dhcp")],
                   ("dnp3",))
    assert (master.type, master.device_class) == ("hmi", "OT")
    # the PROFINET CM client is the IO controller, whatever a polling heuristic says
    controller = ident([("role", "profinet-cm_client", "behaviour", 0.5),
                        ("device_type", "hmi", "behaviour", 0.45)], ("profinet-cm",), served=[])
    assert controller.type == "plc"
    outstation = ident([("role", "dnp3_outstation", "dnp3", 0.7)], ("dnp3",))
    assert outstation.type == "rtu"
    assert outstation.evidence["type"][0].source == "rule:ot-role-outstation"


def test_modbus_only_device():
    i = ident([], ("modbus",), served=["modbus"])
    assert (i.type, i.device_class) == ("plc", "OT")
    assert i.evidence["type"][0].confidence == pytest.approx(0.4)


# ---------------------------------------------------------------- building, access, medical

def test_building_controllers():
    bacnet = ident([], ("bacnet",))
    assert (bacnet.type, bacnet.device_class) == ("building_controller", "IoT")
    jci = ident([("vendor", "Johnson Controls, Inc.", "bacnet", 0.8), ("model", "NAE5510", "bacnet", 0.8)],
                ("bacnet",))
    assert (jci.type, jci.vendor) == ("building_controller", "Johnson Controls")
    assert jci.evidence["type"][0].confidence == pytest.approx(0.8)
    jace = ident([("http_server", "Niagara Web Server/3.8.38", "http")])
    assert summary(jace) == ("building_controller", "Tridium", None, None, "Niagara 3.8.38")


def test_access_control_and_medical():
    # shared capture iot-dataset__schlage-lock-01.pcap
    lock = ident([("hostname", "Schlage", "dhcp")])
    assert (lock.type, lock.vendor, lock.device_class) == ("access_control", "Schlage", "IoT")
    monitor = ident([("vendor", "Philips Medical Systems", "hl7", 0.7)])
    assert (monitor.type, monitor.device_class) == ("medical_device", "IoT")


# ---------------------------------------------------------------- rule files

def test_builtin_rules_load_and_cover_every_family():
    rules = default_rules()
    assert not rules.errors
    files = {Path(r.path).name for r in rules.rules}
    assert files == {"printers.yaml", "cameras.yaml", "voip.yaml", "network.yaml", "computers.yaml",
                     "media_home.yaml", "storage_power.yaml", "ot.yaml", "building.yaml"}
    assert len(rules) > 250
    assert len({r.id for r in rules.rules}) == len(rules)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


USER_RULES = """\
rules:
  - id: acme-sensor
    description: ACME vibration sensors
    when:
      - http_server: {matches: '^ACME-VS/(\\d+\\.\\d+) \\((\\w+)\\)'}
    set: {type: iot_device, vendor: ACME, firmware: '$1', model: 'VS $2'}
    confidence: 0.9
  - id: printer-mdns-service
    description: in this plant, IPP is only spoken by label printers
    when:
      - mdns_service: {matches: '(?:^|\\.)_ipp\\._tcp\\b'}
    set: {type: printer, vendor: Zebra}
    confidence: 0.65
  - id: os-p0f-linux
    enabled: false
"""


def test_user_rules_add_replace_and_disable(tmp_path: Path):
    write(tmp_path / "rules" / "site.yaml", USER_RULES)
    rules = load_rules(tmp_path / "rules")
    assert not rules.errors
    acme = ident([("http_server", "ACME-VS/2.1 (X200)", "http")], rule_set=rules)
    assert summary(acme) == ("iot_device", "ACME", "VS X200", None, "2.1")
    printer = ident([("mdns_service", "_ipp._tcp.local", "mdns")], rule_set=rules)
    assert (printer.type, printer.vendor) == ("printer", "Zebra")
    assert printer.evidence["vendor"][0].source == "rule:printer-mdns-service"
    assert rules.by_id["printer-mdns-service"].path.endswith("site.yaml")
    assert "os-p0f-linux" not in rules.by_id
    assert ident([("p0f_os", "Linux 3.11 and newer", "p0f")], rule_set=rules).os is None
    # the built-in set is untouched
    assert ident([("mdns_service", "_ipp._tcp.local", "mdns")]).vendor is None


def test_rules_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write(tmp_path / "rules" / "site.yaml", USER_RULES)
    monkeypatch.setenv("TAPWATCH_RULES_DIR", str(tmp_path / "rules"))
    reset()
    try:
        i = identify(None, [FactView("http_server", "ACME-VS/2.1 (X200)", "http", 0.7)])
        assert (i.vendor, i.model) == ("ACME", "VS X200")
    finally:
        monkeypatch.delenv("TAPWATCH_RULES_DIR")
        reset()
    assert identify(None, [FactView("http_server", "ACME-VS/2.1 (X200)", "http", 0.7)]).vendor is None


def test_broken_user_file_is_logged_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    write(tmp_path / "rules" / "a-good.yaml", USER_RULES)
    write(tmp_path / "rules" / "b-broken.yaml", """\
rules:
  - id: fine-rule
    when: [{hostname: {startswith: fine}}]
    set: {type: server}
    confidence: 0.5
  - id: bad-regex
    when: [{http_server: {matches: 'Apache/(2\\.4'}}]
    set: {type: server}
    confidence: 0.5
""")
    with caplog.at_level(logging.ERROR, logger="tapwatch.identify.ruleset"):
        rules = load_rules(tmp_path / "rules")
    assert len(rules.errors) == 1
    message = str(rules.errors[0])
    assert "b-broken.yaml" in message and "'bad-regex'" in message and "bad regular expression" in message
    assert any("b-broken.yaml" in r.getMessage() for r in caplog.records)
    # the whole broken file is skipped, the good one is used, analysis goes on
    assert "fine-rule" not in rules.by_id and "acme-sensor" in rules.by_id
    assert ident([("hostname", "fine-1", "dhcp")], rule_set=rules).type is None


def test_broken_rules_dir_never_breaks_analysis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write(tmp_path / "rules" / "broken.yaml",
          "rules:\n  - id: oops\n    when: [{hostname: {matches: '('}}]\n")
    monkeypatch.setenv("TAPWATCH_RULES_DIR", str(tmp_path / "rules"))
    reset()
    try:
        i = identify(None, [FactView("dhcp_vendor_class", "MSFT 5.0", "dhcp", 0.8)])
        assert i.os == "Windows"  # the built-in rules still apply
        assert [e.rule_id for e in default_rules().errors] == ["oops"]
    finally:
        monkeypatch.delenv("TAPWATCH_RULES_DIR")
        reset()


def test_missing_user_directory_is_an_error_not_a_crash(tmp_path: Path):
    rules = load_rules(tmp_path / "nope")
    assert len(rules.errors) == 1 and "does not exist" in str(rules.errors[0])
    assert len(rules) == len(default_rules())


def one_rule(rule_id: str, when: str = "[{hostname: a}]", set_: str = "{type: printer}",
             confidence: str = "0.5", extra: str = "") -> str:
    """A rule file with one rule; pass '' to leave a key out."""
    lines = ["rules:", f"  - id: {rule_id}"]
    for key, value in (("when", when), ("set", set_), ("confidence", confidence)):
        if value:
            lines.append(f"    {key}: {value}")
    if extra:
        lines.append(f"    {extra}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "rule_id", "fragment"), [
    (one_rule("x1", when="[{bogus_attr: a}]"), "x1", "unknown attribute 'bogus_attr'"),
    (one_rule("x2", set_="{type: toaster}"), "x2", "unknown device type 'toaster'"),
    (one_rule("x3", confidence="1.5"), "x3", "confidence must be a number above 0 and at most 1"),
    (one_rule("x4", when="[{hostname: {matches: '^(a)'}}]", set_="{model: '$2'}"), "x4", "refers to group 2"),
    (one_rule("x5", set_="{colour: red}"), "x5", "cannot set 'colour'"),
    (one_rule("x6", when="[{hostname: {resembles: a}}]"), "x6", "unknown test 'resembles'"),
    (one_rule("x7", when=""), "x7", "needs at least one condition"),
    (one_rule("x8", extra="colour: red"), "x8", "unknown key 'colour'"),
    (one_rule("x9", when="[{hostname: a, netbios_name: b}]"), "x9", "a condition is a mapping with one key"),
    (one_rule("dup") + one_rule("dup").split("\n", 1)[1], "dup", "used twice"),
    (one_rule("x10", set_="{model: '${nope}'}"), "x10", "no regular expression names"),
    (one_rule("x11", set_="{model: 'a $ b'}"), "x11", "neither $N"),
    (one_rule("x12", when="[{hostname: {matches: '(a)'}}]", set_="{model: '${1|shout}'}"), "x12",
     "unknown filter 'shout'"),
    (one_rule("x13", set_="{type: printer, model: b}", confidence="{type: 0.5}"), "x13", "needs 'default'"),
])
def test_validation_errors_name_the_file_and_rule(tmp_path: Path, text: str, rule_id: str, fragment: str):
    path = write(tmp_path / "site.yaml", text)
    errors = validate_rules(path)
    assert len(errors) == 1
    message = str(errors[0])
    assert message.startswith(f"{path}: rule '{rule_id}': "), message
    assert fragment in message, message
    assert errors[0].rule_id == rule_id and errors[0].path == str(path)


def test_file_level_validation_errors(tmp_path: Path):
    bad_yaml = write(tmp_path / "d" / "a.yaml", "rules:\n  - id: [unclosed\n")
    not_a_list = write(tmp_path / "d" / "b.yaml", "rules: {id: x}\n")
    no_id = write(tmp_path / "d" / "c.yaml", "rules:\n  - when: [{hostname: a}]\n")
    write(tmp_path / "d" / "ok.yaml", "rules: []\n")
    errors = {Path(e.path).name: str(e) for e in validate_rules(tmp_path / "d")}
    assert set(errors) == {"a.yaml", "b.yaml", "c.yaml"}
    assert errors["a.yaml"].startswith(f"{bad_yaml}: not valid YAML")
    assert errors["b.yaml"] == f"{not_a_list}: 'rules' must be a list of rules"
    assert errors["c.yaml"].startswith(f"{no_id}: rule #1 needs an id")
    with pytest.raises(RuleError):
        parse_rules(one_rule("z", set_="{}"), "x.yaml")


def test_rule_language_features(tmp_path: Path):
    text = """\
rules:
  - id: named-and-filters
    when:
      - http_user_agent: {matches: 'Gadget/(?P<ver>\\d+_\\d+) \\((?P<model>\\w+)\\)'}
      - not: {hostname: {startswith: test-}}
      - any:
          - protocol: mqtt
          - served: coap
    set: {type: iot_device, os: 'GadgetOS ${ver|dots}', model: '${model|upper}'}
    confidence: {default: 0.8, type: 0.6}
  - id: case-sensitive
    when: [{hostname: {contains: LAB, case_sensitive: true}}]
    set: {type: server}
    confidence: 0.55
  - id: exists-and-all
    when:
      - all:
          - snmp_sysname: {exists: true}
          - snmp_sysdescr: {endswith: ' v9'}
    set: {vendor: Example}
    confidence: 0.5
"""
    write(tmp_path / "r" / "x.yaml", text)
    rules = load_rules(tmp_path / "r", builtin=False)
    ua = ("http_user_agent", "Gadget/3_14 (gx9)", "http")
    i = ident([ua], ("mqtt",), rule_set=rules)
    assert (i.type, i.os, i.model) == ("iot_device", "GadgetOS 3.14", "GX9")
    assert i.evidence["type"][0].confidence == pytest.approx(0.6)
    assert i.evidence["os"][0].confidence == pytest.approx(0.8)
    assert ident([ua], ("http",), rule_set=rules).type is None  # neither mqtt nor coap
    assert ident([ua, ("hostname", "test-1", "dhcp")], ("mqtt",), rule_set=rules).type is None
    assert ident([("hostname", "srv-LAB-1", "dhcp")], rule_set=rules).type == "server"
    assert ident([("hostname", "srv-lab-1", "dhcp")], rule_set=rules).type is None
    snmp = [("snmp_sysname", "x", "snmp"), ("snmp_sysdescr", "Example OS V9", "snmp")]
    assert ident(snmp, rule_set=rules).vendor == "Example"
    # two User-Agents with different versions give two candidates
    two = ident([ua, ("http_user_agent", "Gadget/3_15 (gx9)", "http", 0.8, 5)], ("mqtt",), rule_set=rules)
    assert [e.value for e in two.evidence["os"]] == ["GadgetOS 3.15", "GadgetOS 3.14"]
