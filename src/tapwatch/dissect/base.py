"""What a dissector sees (Packet), what it says (Evidence), and how it declares its interest.

A dissector is one class in one module of this package, decorated with @register. It
names the ports, ethertypes or catalog protocols it wants; the selector sends it only
those packets (new payloads only, and only the first segments of each TCP flow). It
reports what the packet says about the devices as facts — the value exactly as seen on
the wire — and what was done as events. It must never raise on bad input: it reports
`out.error(...)` instead (and any exception that escapes is counted the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Side = Literal["src", "dst"]

# The fact vocabulary. Identification rules refer to these names; add new ones here.
ATTRIBUTES = frozenset({
    # names
    "hostname", "fqdn", "netbios_name", "netbios_domain", "mdns_name", "dns_name",
    "lldp_system_name", "cdp_device_id", "snmp_sysname", "ntlm_host", "ntlm_domain",
    # DHCP
    "dhcp_vendor_class", "dhcp_parameter_list", "dhcp_client_id", "dhcp_user_class",
    "dhcpv6_vendor_class", "dhcpv6_duid",
    # service discovery
    "mdns_service", "mdns_txt", "ssdp_server", "ssdp_usn", "ssdp_nt", "ssdp_location",
    "netbios_browser_server",
    # layer 2 neighbours
    "lldp_system_description", "lldp_chassis_id", "lldp_port_id", "lldp_capabilities",
    "lldp_management_ip", "cdp_platform", "cdp_software_version", "cdp_capabilities",
    "cdp_port_id",
    # applications
    "http_user_agent", "http_host", "http_server", "sip_user_agent", "sip_server",
    "tls_sni", "ja3", "ja4", "tls_certificate_subject", "snmp_sysdescr", "snmp_sysobjectid",
    "snmp_community", "smb_os", "smb_native_lanman", "p0f_signature", "p0f_os",
    # identity values (from any protocol that states them)
    "vendor", "model", "os", "os_version", "firmware", "serial", "device_type",
    "hardware_version", "product_code", "product_name", "module", "order_number", "plc_mode",
    "rack_slot", "role",
    # industrial addressing and identity as each protocol states it
    "modbus_unit_id", "s7_protocol", "enip_vendor_id", "enip_device_type", "cip_product_name",
    "dnp3_address", "bacnet_device_instance", "bacnet_vendor_id", "bacnet_object_name",
    "iec104_common_address", "opcua_endpoint_url", "opcua_application_uri",
    "opcua_product_uri", "opcua_application_name", "opcua_security_policy",
    "opcua_security_mode", "profinet_station_name", "profinet_vendor_id", "profinet_device_id",
    "profinet_role", "mqtt_client_id", "mqtt_topic", "mqtt_username_present",
    "mqtt_password_cleartext", "coap_uri", "hart_device",
})

# What can be done to a device (issue "Speak OT"): the event vocabulary.
EVENT_TYPES = frozenset({
    "program_upload", "program_download", "plc_stop", "plc_start", "mode_change",
    "firmware_update", "config_write", "cold_restart", "warm_restart", "device_reset",
    "register_write", "point_operate", "time_set", "file_transfer",
})

# What detection needs to see but the inventory does not keep (issue "Learn what is
# normal"): signals live for one analysis and feed the alert engines.
SIGNAL_TYPES = frozenset({
    "function",  # an industrial request's function code / service: protocol, code, name
    "illegal_function",  # a function code the protocol does not define: protocol, code
    "arp_request",  # who-has: target (ip)
    "arp_claim",  # is-at / announcement: ip, mac
    "login",  # an authentication attempt: service, outcome ("success" / "failure"), user
    "eicar",  # the EICAR anti-virus test string in cleartext
    "domain",  # a name the sender looked up or connected to: name, how (dns, http, tls)
})


@dataclass(slots=True)
class Packet:
    """One selected packet, decoded down to its payload."""

    number: int  # 1-based packet number in the capture file
    ts_ns: int
    src_mac: str  # "aa:bb:cc:dd:ee:ff", or "" when the link type has none
    dst_mac: str
    src_ip: str  # "" for layer-2 frames
    dst_ip: str
    transport: str  # "tcp", "udp", or "" (layer 2 / other IP protocols)
    sport: int
    dport: int
    tcp_flags: int
    ttl: int
    ethertype: int
    protocol: str  # the catalog's name for this packet ("dhcp", "lldp", "https", …)
    payload: bytes  # L4 payload; for layer-2 protocols, the bytes after Ethernet/LLC
    l3: bytes  # from the IP header to the end of the captured data ("" without IP)


class Evidence:
    """Collects what dissectors report about one packet's source and destination."""

    def __init__(self) -> None:
        self.facts: list[tuple[Side, str, str, float]] = []
        self.mac_facts: list[tuple[str, str, str, float]] = []
        self.events: list[tuple[Side, str, dict[str, Any]]] = []
        self.errors: list[tuple[Side, str]] = []
        self.signals: list[tuple[Side, str, dict[str, Any]]] = []

    def fact(self, attribute: str, value: str | int, *, confidence: float = 0.5,
             about: Side = "src") -> None:
        """`about` says whose attribute this is: the packet's sender or its receiver."""
        if attribute not in ATTRIBUTES:
            raise ValueError(f"unknown fact attribute {attribute!r} (see dissect.base.ATTRIBUTES)")
        text = value if isinstance(value, str) else str(value)
        text = text.strip().replace("\x00", "")
        if text:
            self.facts.append((about, attribute, text[:1024], confidence))

    def fact_for_mac(self, mac: str, attribute: str, value: str | int, *,
                     confidence: float = 0.5) -> None:
        """A fact about a host named by MAC inside the payload (e.g. a DHCP client behind a relay)."""
        before = len(self.facts)
        self.fact(attribute, value, confidence=confidence)
        if len(self.facts) > before:
            _, attr, text, conf = self.facts.pop()
            self.mac_facts.append((mac.lower(), attr, text, conf))

    def event(self, kind: str, *, about: Side = "src", **details: Any) -> None:
        """Something done by the packet's sender to its receiver (about="src": the actor)."""
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event type {kind!r} (see dissect.base.EVENT_TYPES)")
        self.events.append((about, kind, details))

    def error(self, reason: str, *, about: Side = "src") -> None:
        self.errors.append((about, reason))

    def signal(self, kind: str, *, about: Side = "src", **details: Any) -> None:
        """An observation for the detection engines (about="src": the sender did it)."""
        if kind not in SIGNAL_TYPES:
            raise ValueError(f"unknown signal type {kind!r} (see dissect.base.SIGNAL_TYPES)")
        self.signals.append((about, kind, details))

    def replay(self, other: Evidence) -> None:
        """Report again what `other` recorded (a dissector's remembered answer to a message
        it has parsed before); event and signal details are copied, not shared."""
        self.facts.extend(other.facts)
        self.mac_facts.extend(other.mac_facts)
        self.events.extend((about, kind, dict(details)) for about, kind, details in other.events)
        self.errors.extend(other.errors)
        self.signals.extend((about, kind, dict(details)) for about, kind, details in other.signals)

    def clear(self) -> None:
        self.facts.clear()
        self.mac_facts.clear()
        self.events.clear()
        self.errors.clear()
        self.signals.clear()


class Dissector:
    """Base class: declare interest, implement dissect()."""

    name: ClassVar[str]  # source protocol recorded with every fact
    tcp_ports: ClassVar[frozenset[int]] = frozenset()
    udp_ports: ClassVar[frozenset[int]] = frozenset()
    ethertypes: ClassVar[frozenset[int]] = frozenset()
    protocols: ClassVar[frozenset[str]] = frozenset()  # catalog names, e.g. "cdp", "stp"
    tcp_syn: ClassVar[bool] = False  # also wants TCP SYN / SYN-ACK segments (no payload)
    # every new TCP payload on its ports, not only each flow's first segments (for protocols
    # whose operations run through the whole session, e.g. industrial ones)
    tcp_all_segments: ClassVar[bool] = False
    # payload byte ranges (offset, length) that change in every message without saying
    # anything new (transaction ids, sequence numbers): ignored when the selector decides
    # whether a payload was seen before, so a repeated poll is dissected once; a range
    # (offset, length, at, value) applies only when payload[at] == value, and a length of
    # -1 runs to the end of the message (up to 6 ranges, within the first 64 bytes)
    novelty_ignore: ClassVar[tuple[tuple[int, ...], ...]] = ()
    # when one segment may carry several messages: (offset of each message's big-endian
    # 16-bit length, bytes it has beyond that length, offset of a 16-bit field that is zero
    # in every message or -1); the novelty_ignore ranges then apply to each message
    novelty_frames: ClassVar[tuple[int, int, int] | None] = None
    # the ranges apply to UDP datagrams only (over TCP the same bytes are something else)
    novelty_udp_only: ClassVar[bool] = False
    # heuristic: TCP payloads on any port that start with one of these 4-byte prefixes
    tcp_prefixes: ClassVar[frozenset[bytes]] = frozenset()

    def dissect(self, pkt: Packet, out: Evidence) -> None:
        raise NotImplementedError
