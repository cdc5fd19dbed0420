"""SMB dissector: NetBIOS session names, SMB1 Native OS/LAN Manager, NTLMSSP names and versions.

NTLMSSP messages are built with scapy's NTLM layer; the SMB1/SMB2/NetBIOS framing around them
is built here with struct, following [MS-CIFS], [MS-SMB], [MS-SMB2] and RFC 1002.
"""

from __future__ import annotations

import random
import struct

import pytest
from scapy.layers.ntlm import (
    AV_PAIR,
    NTLM_AUTHENTICATE_V2,
    NTLM_CHALLENGE,
    NTLM_NEGOTIATE,
    NTLMv2_RESPONSE,
)

from dissect_helpers import dissect_one, facts_by_ip, packet, run_capture
from inventory_helpers import CAPTURES

SPNEGO_PREFIX = bytes.fromhex("a18201223082011ea0030a0101a10c060a2b06010401823702020aa2820109048201")
UNICODE = 0x8000
REPLY = 0x80


def nbss(msg: bytes, kind: int = 0) -> bytes:
    return bytes([kind]) + len(msg).to_bytes(3, "big") + msg


def nb_name(name: str, suffix: int) -> bytes:
    raw = name.ljust(15).encode() + bytes([suffix])
    return b"\x20" + bytes(c for b in raw for c in (0x41 + (b >> 4), 0x41 + (b & 15))) + b"\x00"


def smb1(words: bytes, data: bytes, *, flags: int = 0x18, flags2: int = 0xC807) -> bytes:
    header = b"\xffSMB" + b"\x73" + bytes(4) + bytes([flags]) + struct.pack("<H", flags2) + bytes(20)
    return header + bytes([len(words) // 2]) + words + struct.pack("<H", len(data)) + data


def utf16z(*strings: str) -> bytes:
    return b"".join(s.encode("utf-16-le") + b"\x00\x00" for s in strings)


def smb1_setup_request(blob: bytes, *strings: str) -> bytes:
    """Session Setup AndX request, extended security (WordCount 12), Unicode strings."""
    words = struct.pack("<BBHHHHIHII", 0xFF, 0, 0, 4356, 50, 0, 0, len(blob), 0, 0x8000_00D4)
    pad = b"\x00" if (32 + 1 + len(words) + 2 + len(blob)) % 2 else b""
    return smb1(words, blob + pad + utf16z(*strings))


def smb1_setup_response(blob: bytes, *strings: str) -> bytes:
    """Session Setup AndX response, extended security (WordCount 4), Unicode strings."""
    words = struct.pack("<BBHHH", 0xFF, 0, 0, 0, len(blob))
    pad = b"\x00" if (32 + 1 + len(words) + 2 + len(blob)) % 2 else b""
    return smb1(words, blob + pad + utf16z(*strings), flags=0x98)


def smb2(command: int, body: bytes, *, reply: bool = False, next_command: int = 0) -> bytes:
    return (b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ", 64, 1, 0, command, 1, int(reply), next_command,
                                     1, 0, 0, 0x1000) + bytes(16) + body)


def smb2_setup_request(blob: bytes) -> bytes:
    return smb2(1, struct.pack("<HBBIIHHQ", 25, 0, 1, 1, 0, 64 + 24, len(blob), 0) + blob)


def smb2_setup_response(blob: bytes) -> bytes:
    return smb2(1, struct.pack("<HHHH", 9, 0, 64 + 8, len(blob)) + blob, reply=True)


def negotiate() -> bytes:
    return bytes(NTLM_NEGOTIATE(
        NegotiateFlags="NEGOTIATE_UNICODE+NEGOTIATE_VERSION+NEGOTIATE_OEM_DOMAIN_SUPPLIED"
                       "+NEGOTIATE_OEM_WORKSTATION_SUPPLIED",
        ProductMajorVersion=10, ProductMinorVersion=0, ProductBuild=19041,
        DomainName="CORP", WorkstationName="HMI-07"))


def challenge() -> bytes:
    return bytes(NTLM_CHALLENGE(
        NegotiateFlags="NEGOTIATE_UNICODE+NEGOTIATE_VERSION+TARGET_TYPE_DOMAIN+NEGOTIATE_TARGET_INFO",
        ServerChallenge=b"12345678", TargetName="CORP",
        ProductMajorVersion=6, ProductMinorVersion=3, ProductBuild=9600,
        TargetInfo=[AV_PAIR(AvId="MsvAvNbDomainName", Value="CORP"),
                    AV_PAIR(AvId="MsvAvNbComputerName", Value="HIST01"),
                    AV_PAIR(AvId="MsvAvDnsComputerName", Value="hist01.corp.example"),
                    AV_PAIR(AvId="MsvAvTimestamp", Value=0),
                    AV_PAIR(AvId="MsvAvEOL")]))


def authenticate(flags: str = "NEGOTIATE_UNICODE+NEGOTIATE_VERSION") -> bytes:
    return bytes(NTLM_AUTHENTICATE_V2(
        NegotiateFlags=flags, ProductMajorVersion=10, ProductMinorVersion=0, ProductBuild=19045,
        DomainName="CORP", UserName="operator", Workstation="HMI-07",
        LmChallengeResponse=b"\x00" * 24,
        NtChallengeResponse=NTLMv2_RESPONSE(
            NTProofStr=b"P" * 16, TimeStamp=0, ChallengeFromClient=b"c" * 8,
            AvPairs=[AV_PAIR(AvId="MsvAvNbComputerName", Value="HIST01"),
                     AV_PAIR(AvId="MsvAvNbDomainName", Value="CORP"),
                     AV_PAIR(AvId="MsvAvEOL")]),
        EncryptedRandomSessionKey=b"k" * 16))


def to_server(payload: bytes, port: int = 445):
    return packet(payload, transport="tcp", sport=49700, dport=port, src_ip="10.0.0.7", dst_ip="10.0.0.5")


def to_client(payload: bytes, port: int = 445):
    return packet(payload, transport="tcp", sport=port, dport=49700, src_ip="10.0.0.5", dst_ip="10.0.0.7")


def test_netbios_session_request_names_both_ends() -> None:
    ev = dissect_one("smb", to_server(nbss(nb_name("HIST01", 0x20) + nb_name("HMI-07", 0x00), 0x81), 139))
    assert ev.errors == []
    assert sorted(ev.facts) == [("dst", "netbios_name", "HIST01", 0.6),
                                ("src", "netbios_name", "HMI-07", 0.7)]
    ev = dissect_one("smb", to_server(nbss(nb_name("*SMBSERVER", 0x20) + nb_name("HMI-07", 0), 0x81), 139))
    assert ev.facts == [("src", "netbios_name", "HMI-07", 0.7)]  # the wildcard is nobody's name
    ev = dissect_one("smb", to_server(nbss(nb_name("CORP", 0x1D) + nb_name("HMI-07", 0x03), 0x81), 139))
    assert ev.facts == [] and ev.errors == []  # a browser name and a messenger name: not computers


def test_smb1_negotiate_from_the_client() -> None:
    msg = smb1_setup_request(SPNEGO_PREFIX + negotiate(), "Windows 10 Pro 19041", "Windows 10 Pro 6.3")
    ev = dissect_one("smb", to_server(nbss(msg)))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "ntlm_domain", "CORP", 0.7),
        ("src", "ntlm_host", "HMI-07", 0.8),
        ("src", "os_version", "10.0.19041", 0.7),
        ("src", "smb_os", "Windows 10 Pro 19041", 0.8),
        ("src", "smb_native_lanman", "Windows 10 Pro 6.3", 0.8),
    ])


def test_smb1_challenge_from_the_server() -> None:
    msg = smb1_setup_response(SPNEGO_PREFIX + challenge(), "Windows Server 2012 R2 9600",
                              "Windows Server 2012 R2 6.3", "CORP")
    ev = dissect_one("smb", to_client(nbss(msg)))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "ntlm_domain", "CORP", 0.7),  # TargetName (domain type) and MsvAvNbDomainName
        ("src", "ntlm_domain", "CORP", 0.7),
        ("src", "ntlm_host", "HIST01", 0.8),
        ("src", "fqdn", "hist01.corp.example", 0.7),
        ("src", "os_version", "6.3.9600", 0.7),
        ("src", "smb_os", "Windows Server 2012 R2 9600", 0.8),
        ("src", "smb_native_lanman", "Windows Server 2012 R2 6.3", 0.8),
    ])


def test_smb1_without_extended_security_and_oem_strings() -> None:
    """WordCount 13 request: passwords, AccountName, PrimaryDomain, then Native OS and LAN Manager."""
    words = struct.pack("<BBHHHHIHHII", 0xFF, 0, 0, 4356, 50, 0, 0, 24, 0, 0, 0xD4)
    data = b"L" * 24 + b"guest\x00WORKGROUP\x00Unix\x00Samba 3.0.37\x00"
    ev = dissect_one("smb", to_server(nbss(smb1(words, data, flags2=0x0001)), 139))
    assert ev.errors == []
    assert sorted(ev.facts) == [("src", "smb_native_lanman", "Samba 3.0.37", 0.8),
                                ("src", "smb_os", "Unix", 0.8)]
    reply = smb1(struct.pack("<BBHH", 0xFF, 0, 0, 1), b"Unix\x00Samba 3.0.37\x00WORKGROUP\x00",
                 flags=REPLY, flags2=0x0001)
    ev = dissect_one("smb", to_client(nbss(reply), 139))
    assert sorted(ev.facts) == [("src", "smb_native_lanman", "Samba 3.0.37", 0.8),
                                ("src", "smb_os", "Unix", 0.8)]


def test_smb2_authenticate_names_client_and_server() -> None:
    ev = dissect_one("smb", to_server(nbss(smb2_setup_request(SPNEGO_PREFIX + authenticate()))))
    assert ev.errors == []
    assert sorted(ev.facts) == sorted([
        ("src", "ntlm_domain", "CORP", 0.7),
        ("src", "ntlm_host", "HMI-07", 0.8),
        ("src", "os_version", "10.0.19045", 0.7),
        # the NTLMv2 response repeats the server's AV pairs: facts about the receiver
        ("dst", "ntlm_host", "HIST01", 0.8),
        ("dst", "ntlm_domain", "CORP", 0.7),
    ])


def test_oem_authenticate_and_version_absent() -> None:
    ev = dissect_one("smb", to_server(nbss(smb2_setup_request(authenticate(flags="NEGOTIATE_OEM")))))
    facts = {(attribute, value) for about, attribute, value, _ in ev.facts if about == "src"}
    assert ("ntlm_host", "HMI-07") in facts and ("ntlm_domain", "CORP") in facts  # bytes as UTF-8
    assert not [f for f in ev.facts if f[1] == "os_version"]


def test_smb2_challenge_and_several_messages_per_segment() -> None:
    echo = smb2(13, struct.pack("<HH", 4, 0), reply=True)
    segment = nbss(echo) + nbss(smb2_setup_response(SPNEGO_PREFIX + challenge())) + nbss(b"", 0x85)
    ev = dissect_one("smb", to_client(segment))
    assert ev.errors == []
    assert ("src", "ntlm_host", "HIST01", 0.8) in ev.facts
    assert ("src", "fqdn", "hist01.corp.example", 0.7) in ev.facts


def test_smb2_compounded_requests() -> None:
    first = smb2(1, struct.pack("<HBBIIHHQ", 25, 0, 1, 1, 0, 88, 0, 0), next_command=88)
    ev = dissect_one("smb", to_server(nbss(first + smb2_setup_request(negotiate()))))
    assert ev.errors == [] and ("src", "ntlm_host", "HMI-07", 0.8) in ev.facts


def test_segment_ends_and_other_data_are_silent() -> None:
    whole = nbss(smb2_setup_request(SPNEGO_PREFIX + authenticate()))
    for cut in (10, 70, 100, 150, len(whole) - 20):  # the message continues in the next segment
        ev = dissect_one("smb", to_server(whole[:cut]))
        assert ev.errors == [], cut
    for payload in (b"\x00\x00\x10\x00" + b"A" * 100, b"GET / HTTP/1.1\r\n\r\n", b"\x17\x03\x03\x00\x10"):
        ev = dissect_one("smb", to_server(payload))
        assert ev.errors == [] and ev.facts == [], payload


@pytest.mark.parametrize("payload, reason", [
    (nbss(b"\xffSMB\x73" + bytes(20)), "SMB1 header"),
    (nbss(smb1(struct.pack("<BBHHH", 0xFF, 0, 0, 0, 200), b"x" * 10, flags=REPLY)), "security blob"),
    (nbss(smb1(struct.pack("<BBHH", 0xFF, 0, 0, 1), b"", flags=REPLY)[:-2] + b"\x50\x00"), "ByteCount"),
    (nbss(b"\xfeSMB" + struct.pack("<H", 32) + bytes(58)), "StructureSize"),
    (nbss(smb2_setup_request(b"NTLMSSP\x00\x02\x00\x00\x00" + bytes(20))), "CHALLENGE shorter"),
    (nbss(smb2_setup_request(authenticate()[:60])), "AUTHENTICATE shorter"),
    (nbss(smb2_setup_request(b"NTLMSSP\x00\x03" + bytes(19) + b"\xff\x00\x00\x00\x40" + bytes(39))),
     "beyond the message"),
    (nbss(b"\x20" + b"A" * 32 + b"\x00" + b"\x20" + b"Z" * 32 + b"\x00", 0x81), "NetBIOS name"),
])
def test_malformed_complete_messages_are_errors(payload: bytes, reason: str) -> None:
    ev = dissect_one("smb", to_server(payload))
    assert len(ev.errors) == 1 and reason in ev.errors[0][1], ev.errors


def test_truncated_and_random_payloads_never_raise() -> None:
    valid = [nbss(smb1_setup_request(SPNEGO_PREFIX + negotiate(), "Windows 10", "Windows 10 6.3")),
             nbss(smb1_setup_response(SPNEGO_PREFIX + challenge(), "Windows", "LM", "CORP")),
             nbss(smb2_setup_request(SPNEGO_PREFIX + authenticate())),
             nbss(nb_name("HIST01", 0x20) + nb_name("HMI-07", 0x00), 0x81)]
    rng = random.Random(445)
    payloads = [v[:i] for v in valid for i in range(len(v))]
    payloads += [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]
    for v in valid:  # mutations inside the structure, and bad NetBIOS lengths around it
        for _ in range(150):
            mutated = bytearray(v)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            payloads.append(bytes(mutated))
            payloads.append(b"\x00" + rng.randbytes(3) + v[4:])
    for payload in payloads:
        dissect_one("smb", to_server(payload))
        dissect_one("smb", to_client(payload, 139))


# Values verified with tshark 4.0 on each capture:
#   tshark -r FILE -Y 'ntlmssp or smb.native_os or nbss.type == 0x81' -T fields -e ip.src
#     -e nbss.calling_name -e nbss.called_name -e smb.native_os -e smb.native_lanman
#     -e ntlmssp.auth.hostname -e ntlmssp.auth.domain
#     -e ntlmssp.challenge.target_info.nb_computer_name -e ntlmssp.challenge.target_info.nb_domain_name
#     -e ntlmssp.challenge.target_info.dns_computer_name -e ntlmssp.ntlmv2_response.nb_computer_name
#     -e ntlmssp.version.major -e ntlmssp.version.minor -e ntlmssp.version.build_number
# netbios_name: nbss.calling_name of the sender, nbss.called_name of the receiver (without the
# <xx> suffix tshark appends); ntlm_host/ntlm_domain: ntlmssp.auth.hostname/.domain of the
# client, target_info nb_computer_name/nb_domain_name of the server (ntlmssp.auth.domain "NULL"
# is tshark's rendering of an empty field: no fact); fqdn: target_info.dns_computer_name;
# os_version: ntlmssp.version.major.minor.build_number of the sender; smb_os/smb_native_lanman:
# smb.native_os/smb.native_lanman (Windows Server 2003 clients send an empty native_lanman).
EXPECTED = {
    "suricata-verify__smb2-ntlmssp-negotiateflags_input.pcap": {
        "netbios_name": {"192.168.199.1": {"SCV"}, "192.168.199.133": {"DESKTOP-V1FA0UQ"}},
        "ntlm_host": {"192.168.199.1": {"SCV"}, "192.168.199.132": {"DESKTOP-2AEFM7G"},
                      "192.168.199.133": {"DESKTOP-V1FA0UQ"}},
        "ntlm_domain": {"192.168.199.1": {"SCV"}, "192.168.199.132": {"DESKTOP-2AEFM7G"},
                        "192.168.199.133": {"DESKTOP-V1FA0UQ"}},
        "fqdn": {"192.168.199.1": {"SCV"}, "192.168.199.133": {"DESKTOP-V1FA0UQ"}},
        "os_version": {"192.168.199.1": {"6.3.9600"}, "192.168.199.132": {"10.0.10586"},
                       "192.168.199.133": {"10.0.10586"}},
        "smb_os": {"192.168.199.1": {"Windows 8.1 9600"}},
        "smb_native_lanman": {"192.168.199.1": {"Windows 8.1 6.3"}},
    },
    "iti-ics-tools__EIP-IPAddressChangeAttempt.pcap": {
        "netbios_name": {"192.168.10.105": {"DBLICENSESERVER"}, "192.168.10.21": {"WIN2K3LAB021"},
                         "192.168.10.22": {"WIN2K3LAB022"}, "192.168.10.24": {"WIN2K3LAB024"}},
        "ntlm_host": {"192.168.10.105": {"DBLICENSESERVER"}, "192.168.10.21": {"WIN2K3LAB021"},
                      "192.168.10.22": {"WIN2K3LAB022"}, "192.168.10.24": {"WIN2K3LAB024"}},
        "ntlm_domain": {"192.168.10.105": {"DBLICENSESERVER"}},
        "fqdn": {"192.168.10.105": {"DBLicenseServer"}},
        "os_version": {"192.168.10.105": {"5.1.2600"}, "192.168.10.21": {"5.2.3790"},
                       "192.168.10.22": {"5.2.3790"}, "192.168.10.24": {"5.2.3790"}},
        "smb_os": {"192.168.10.105": {"Windows 5.1"},
                   "192.168.10.21": {"Windows Server 2003 R2 3790 Service Pack 2"},
                   "192.168.10.22": {"Windows Server 2003 R2 3790 Service Pack 2"},
                   "192.168.10.24": {"Windows Server 2003 R2 3790 Service Pack 2"}},
        "smb_native_lanman": {"192.168.10.105": {"Windows 2000 LAN Manager"}},
    },
    "iti-ics-tools__Sample_File_MMS_and_GOOSE.pcap": {
        "netbios_name": {"172.16.0.101": {"DEMO"}, "172.16.0.122": {"SAS1"}},
        "ntlm_host": {"172.16.0.101": {"DEMO"}, "172.16.0.122": {"SAS1"}},
        "ntlm_domain": {"172.16.0.101": {"DEMO"}, "172.16.0.122": {"SAS1"}},
        "fqdn": {"172.16.0.122": {"sas1"}},
        # the server's CHALLENGE does not negotiate NTLMSSP_NEGOTIATE_VERSION (flags 0xa08a8205)
        "os_version": {"172.16.0.101": {"5.2.3790"}},
        "smb_os": {"172.16.0.101": {"Windows Server 2003 R2 3790 Service Pack 2"},
                   "172.16.0.122": {"Windows 5.0"}},
        "smb_native_lanman": {"172.16.0.122": {"Windows 2000 LAN Manager"}},
    },
    "iti-ics-tools__mb2.pcap": {
        "netbios_name": {"141.81.0.10": {"IAS01"}, "141.81.0.182": {"PANELPC02"}},
        "ntlm_host": {"141.81.0.10": {"IAS01"}, "141.81.0.182": {"PANELPC02"}},
        # tshark also shows ntlmssp.auth.domain "PANELPC02" for 141.81.0.182, in frame 3721: the
        # second AUTHENTICATE of its connection, the 7th client segment with payload. The selector
        # hands dissectors the first 4 segments of each TCP direction only, so it is not seen.
        # (The DESKPC10 / IAS01 NTLMSSP of frames 5049-5051 is DCE/RPC on TCP 135, not SMB.)
        "ntlm_domain": {"141.81.0.10": {"IAS01"}},
        "fqdn": {"141.81.0.10": {"IAS01"}},
        "os_version": {"141.81.0.10": {"6.0.6002"}, "141.81.0.182": {"5.1.2600"}},
        "smb_os": {"141.81.0.10": {"Windows Server (R) 2008 Standard 6002 Service Pack 2"},
                   "141.81.0.182": {"Windows 2002 Service Pack 3 2600"}},
        "smb_native_lanman": {"141.81.0.10": {"Windows Server (R) 2008 Standard 6.0"},
                              "141.81.0.182": {"Windows 2002 5.1"}},
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_captures_match_tshark(name: str) -> None:
    results = run_capture(CAPTURES / name, "smb")
    assert not results.errors
    for attribute, expected in EXPECTED[name].items():
        assert dict(facts_by_ip(results, attribute)) == expected, attribute


@pytest.mark.parametrize("name", ["iti-ics-tools__hart_ip.pcap", "ndpi__1kxun.pcap",
                                  "icsnpp-profinet-io-cm__profinet_io_cm_mixed_1.pcap"])
def test_captures_without_ntlmssp_give_nothing(name: str) -> None:
    results = run_capture(CAPTURES / name, "smb")
    assert not results.errors and not results.facts
