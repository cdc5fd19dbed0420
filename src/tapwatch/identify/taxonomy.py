"""Device types: stable ids, display names and the class (IT / IoT / OT) each belongs to.

The classes follow the usual split of agentless OT/IoT monitors: IT is what an endpoint
agent or the network team manages (computers, phones, network gear, storage), IoT is
embedded equipment of the office and the building (printers, cameras, phones, media,
building automation, access control, medical, UPS), OT is industrial control.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

IT, IOT, OT = "IT", "IoT", "OT"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class DeviceType:
    id: str  # lower case, underscores: "ip_camera"
    name: str  # for people: "IP camera"
    device_class: str | None  # "IT", "IoT", "OT", or None for "unknown"


_TYPES = (
    # IT
    DeviceType("workstation", "Workstation", IT),
    DeviceType("laptop", "Laptop", IT),
    DeviceType("server", "Server", IT),
    DeviceType("mobile_phone", "Mobile phone", IT),
    DeviceType("tablet", "Tablet", IT),
    DeviceType("switch", "Switch", IT),
    DeviceType("router", "Router", IT),
    DeviceType("firewall", "Firewall", IT),
    DeviceType("access_point", "Access point", IT),
    DeviceType("nas", "NAS", IT),
    # IoT
    DeviceType("printer", "Printer", IOT),
    DeviceType("ip_camera", "IP camera", IOT),
    DeviceType("video_recorder", "Video recorder (NVR/DVR)", IOT),
    DeviceType("voip_phone", "VoIP phone", IOT),
    DeviceType("smart_tv", "Smart TV / media player", IOT),
    DeviceType("smart_speaker", "Smart speaker", IOT),
    DeviceType("building_controller", "Thermostat / building controller", IOT),
    DeviceType("access_control", "Badge reader / access control", IOT),
    DeviceType("medical_device", "Medical device", IOT),
    DeviceType("iot_gateway", "IoT gateway", IOT),
    DeviceType("iot_device", "IoT device", IOT),
    DeviceType("ups", "UPS", IOT),
    # OT
    DeviceType("plc", "PLC", OT),
    DeviceType("hmi", "HMI", OT),
    DeviceType("rtu", "RTU", OT),
    DeviceType("engineering_workstation", "Engineering workstation", OT),
    DeviceType("historian", "Historian", OT),
    DeviceType("ied", "IED", OT),
    DeviceType("dcs_controller", "DCS controller", OT),
    DeviceType("drive", "Drive / motion controller", OT),
    # neither
    DeviceType(UNKNOWN, "Unknown", None),
)

TYPES: dict[str, DeviceType] = {t.id: t for t in _TYPES}

# Other spellings seen in `device_type` facts (CIP device profiles, vendor wording…).
_ALIASES = {
    "desktop": "workstation", "pc": "workstation", "computer": "workstation",
    "notebook": "laptop",
    "phone": "mobile_phone", "smartphone": "mobile_phone", "mobile": "mobile_phone",
    "ethernet switch": "switch", "bridge": "switch", "managed switch": "switch",
    "gateway": "router", "wireless access point": "access_point", "ap": "access_point",
    "wlan access point": "access_point", "security appliance": "firewall",
    "storage": "nas", "network attached storage": "nas",
    "mfp": "printer", "multifunction printer": "printer", "print server": "printer",
    "camera": "ip_camera", "network camera": "ip_camera", "ipcam": "ip_camera",
    "nvr": "video_recorder", "dvr": "video_recorder",
    "ip phone": "voip_phone", "telephone": "voip_phone", "sip phone": "voip_phone",
    "media player": "smart_tv", "tv": "smart_tv", "streaming device": "smart_tv",
    "speaker": "smart_speaker",
    "thermostat": "building_controller", "bms": "building_controller",
    "building automation controller": "building_controller", "hvac controller": "building_controller",
    "badge reader": "access_control", "door controller": "access_control", "smart lock": "access_control",
    "uninterruptible power supply": "ups",
    "programmable logic controller": "plc", "controller": "plc",
    "communications adapter": "plc",  # CIP 0x0C: the Ethernet module of a PLC chassis
    "human-machine interface": "hmi", "human machine interface": "hmi", "operator panel": "hmi",
    "remote terminal unit": "rtu",
    "engineering station": "engineering_workstation", "ews": "engineering_workstation",
    "intelligent electronic device": "ied", "protection relay": "ied", "relay": "ied",
    "dcs": "dcs_controller",
}


def _key(text: str) -> str:
    return re.sub(r"[\s_\-/]+", " ", text.strip().lower())


_LOOKUP: dict[str, str] = {}
for _t in _TYPES:
    _LOOKUP[_key(_t.id)] = _t.id
    _LOOKUP[_key(_t.name)] = _t.id
for _alias, _id in _ALIASES.items():
    _LOOKUP[_key(_alias)] = _id


@lru_cache(maxsize=4096)
def normalize_type(text: str | None) -> str | None:
    """The type id for an id, a display name or a known alias; None when unknown."""
    if not text:
        return None
    found = _LOOKUP.get(_key(text))
    return None if found == UNKNOWN else found


def get(type_id: str | None) -> DeviceType | None:
    return TYPES.get(type_id) if type_id else None


def class_of(type_id: str | None) -> str | None:
    t = get(type_id)
    return t.device_class if t else None


def display_name(type_id: str | None) -> str | None:
    t = get(type_id)
    return t.name if t else None


# Protocols that make a device of unknown type part of the OT (or building/IoT) world.
INDUSTRIAL_PROTOCOLS = frozenset({
    "modbus", "s7comm", "enip", "cip-io", "dnp3", "iec104", "opcua", "profinet", "profinet-cm",
    "goose", "gse", "sv", "ethercat", "powerlink", "sercos3", "melsec", "fins", "omron-fins",
    "hart-ip", "ads", "bsap", "synchrophasor", "codesys", "ge-srtp", "iccp", "foundation-fieldbus",
    "emerson-roc", "mrp", "hsr", "prp",
})
BUILDING_PROTOCOLS = frozenset({"bacnet", "knxnet-ip"})


def class_from_protocols(protocols: set[str] | frozenset[str]) -> tuple[str | None, list[str]]:
    """(class, the protocols that decided it) for a device whose type is unknown."""
    ot = sorted(p for p in protocols if p in INDUSTRIAL_PROTOCOLS)
    if ot:
        return OT, ot
    bms = sorted(p for p in protocols if p in BUILDING_PROTOCOLS)
    if bms:
        return IOT, bms
    return None, []


# Purdue model level each type usually sits at: 1 basic control, 2 supervisory control,
# 3 site operations, 4 enterprise (IT and office IoT). An inference people may correct.
PURDUE_LEVEL = {
    "plc": 1, "rtu": 1, "ied": 1, "dcs_controller": 1, "building_controller": 1, "drive": 1,
    "hmi": 2, "engineering_workstation": 2,
    "historian": 3,
}


def purdue_level(type_id: str | None) -> int | None:
    t = get(type_id)
    if t is None or t.id == UNKNOWN:
        return None
    if t.id in PURDUE_LEVEL:
        return PURDUE_LEVEL[t.id]
    return 4 if t.device_class in (IT, IOT) else None
