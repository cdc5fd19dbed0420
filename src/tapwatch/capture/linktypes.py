"""Link-layer header types (tcpdump.org LINKTYPE_ values) the decoder understands."""

ETHERNET = 1
RAW_BSD12 = 12  # DLT_RAW on most BSDs
RAW_BSD14 = 14  # DLT_RAW on OpenBSD
NULL = 0  # BSD loopback, AF value in host byte order
RAW = 101
IEEE802_11 = 105
LOOP = 108  # OpenBSD loopback, AF value in network byte order
LINUX_SLL = 113
IEEE802_11_RADIOTAP = 127
IPV4 = 228
IPV6 = 229
LINUX_SLL2 = 276

SUPPORTED = {
    ETHERNET: "Ethernet",
    NULL: "BSD loopback",
    RAW_BSD12: "raw IP",
    RAW_BSD14: "raw IP",
    RAW: "raw IP",
    IEEE802_11: "802.11",
    LOOP: "OpenBSD loopback",
    LINUX_SLL: "Linux cooked v1",
    IEEE802_11_RADIOTAP: "802.11 radiotap",
    IPV4: "raw IPv4",
    IPV6: "raw IPv6",
    LINUX_SLL2: "Linux cooked v2",
}

KNOWN_UNSUPPORTED = {
    6: "Token Ring",
    9: "PPP",
    10: "FDDI",
    50: "PPP-HDLC",
    104: "Cisco HDLC",
    107: "Frame Relay",
    119: "Prism 802.11",
    143: "DOCSIS",
    163: "AVS 802.11",
    187: "Bluetooth HCI H4",
    189: "USB Linux",
    195: "IEEE 802.15.4",
    201: "Bluetooth HCI H4 with pseudo-header",
    220: "USB Linux mmapped",
    249: "USBPcap",
    251: "Bluetooth LE LL",
    253: "Netlink",
}


def describe(linktype: int) -> str:
    """A human name for a link type, for messages."""
    if linktype in SUPPORTED:
        return f"{SUPPORTED[linktype]} ({linktype})"
    if 147 <= linktype <= 162:
        return f"USER{linktype - 147} ({linktype})"
    return f"{KNOWN_UNSUPPORTED.get(linktype, 'link type')} ({linktype})"
