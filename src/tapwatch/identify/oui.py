"""Vendor of a MAC address from the IEEE registries, and display names for organisations.

The registries are Debian's ieee-data files, read at run time (never shipped with
tapwatch): oui.csv (MA-L, 24-bit prefixes), mam.csv (MA-M, 28-bit), oui36.csv (MA-S,
36-bit) and, when present, iab.csv (the older 36-bit IAB blocks). They are loaded once
per process into sorted tables of integer prefixes; the longest prefix wins.
TAPWATCH_OUI_DIR points at another directory with files of the same names.

Locally administered addresses (randomized phone MACs, VMs, containers) have no
registered owner and are never looked up.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from tapwatch import cache, yamltext

log = logging.getLogger(__name__)

DEFAULT_DIR = "/usr/share/ieee-data"
ENV_DIR = "TAPWATCH_OUI_DIR"

# (file name, registry, prefix bits); the first file for a prefix length wins.
_FILES = (
    ("oui.csv", "MA-L", 24),
    ("mam.csv", "MA-M", 28),
    ("oui36.csv", "MA-S", 36),
    ("iab.csv", "IAB", 36),
)
# Registry names that say nothing about who made the device.
_NO_VENDOR = frozenset({"private", "ieee registration authority"})


@dataclass(frozen=True)
class OuiEntry:
    prefix: str  # "00:1B:1B", "38:FD:FE:3", "70:B3:D5:E4:0"
    registry: str  # "MA-L", "MA-M", "MA-S" or "IAB"
    organization: str  # as registered, trimmed: "Siemens AG"
    vendor: str  # display name: "Siemens"


_REGISTRIES = tuple(dict.fromkeys(registry for _, registry, _ in _FILES))


class _Registry:
    """The assignments of one prefix length, sorted, as a few arrays and one string: it
    loads from the cache ten times faster than a dict of 30,000 tuples."""

    def __init__(self, table: dict[int, tuple[str, str]]) -> None:
        items = sorted(table.items())
        self.prefixes = np.array([prefix for prefix, _ in items], dtype=np.int64)
        self.registries = np.array([_REGISTRIES.index(r) for _, (r, _o) in items], dtype=np.int8)
        names = [organization for _, (_r, organization) in items]
        self.ends = np.cumsum([len(n) for n in names], dtype=np.int64)
        self.names = "".join(names)

    def get(self, prefix: int) -> tuple[str, str] | None:
        """(registry, organization) of this prefix, or None."""
        i = int(np.searchsorted(self.prefixes, prefix))
        if i == len(self.prefixes) or self.prefixes[i] != prefix:
            return None
        start = int(self.ends[i - 1]) if i else 0
        return _REGISTRIES[self.registries[i]], self.names[start : int(self.ends[i])]


class _Tables:
    def __init__(self) -> None:
        self.by_bits: dict[int, _Registry] = {}
        self.entries: dict[tuple[int, int], OuiEntry | None] = {}  # (bits, prefix) -> entry
        self.loaded = False
        self.directory: Path | None = None


_tables = _Tables()
_lock = threading.Lock()
_HEX = re.compile(r"[0-9a-fA-F]")


def parse_mac(mac: str | None) -> int | None:
    """48-bit integer of "00:1b:1b:..", "00-1B-1B-..", "001b.1b..", "001b1b.."; None if not a MAC."""
    if not mac:
        return None
    digits = "".join(_HEX.findall(mac))
    if len(digits) != 12 or len(mac) > 17:
        return None
    return int(digits, 16)


def is_locally_administered(mac: str | int | None) -> bool:
    value = parse_mac(mac) if isinstance(mac, str) or mac is None else mac
    return value is not None and bool((value >> 40) & 0x02)


def is_multicast(mac: str | int | None) -> bool:
    value = parse_mac(mac) if isinstance(mac, str) or mac is None else mac
    return value is not None and bool((value >> 40) & 0x01)


def clean_organization(name: str) -> str:
    """The registered name without stray punctuation and spacing ("Siemens AG," → "Siemens AG")."""
    return " ".join(name.split()).strip(" ,;.\"'")


def _load_locked() -> None:
    directory = Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)
    key = cache.key_of([cache.file_stamp(Path(__file__))]
                       + [cache.file_stamp(directory / f) for f, _, _ in _FILES])
    tables = _Tables()
    tables.directory = directory
    by_bits = cache.load("oui", key)
    if isinstance(by_bits, dict):
        tables.by_bits = by_bits
    else:
        tables.by_bits = {bits: _Registry(table) for bits, table in _read_registries(directory).items()}
        cache.store("oui", key, tables.by_bits)
    tables.loaded = True
    global _tables
    _tables = tables


def _read_registries(directory: Path) -> dict[int, dict[int, tuple[str, str]]]:
    by_bits: dict[int, dict[int, tuple[str, str]]] = {24: {}, 28: {}, 36: {}}
    found = 0
    for filename, registry, bits in _FILES:
        path = directory / filename
        if not path.is_file():
            continue
        found += 1
        table = by_bits[bits]
        digits = bits // 4
        try:
            with path.open(newline="", encoding="utf-8", errors="replace") as fh:
                reader = csv.reader(fh)
                for row in reader:
                    if len(row) < 3 or len(row[1]) != digits:
                        continue  # header, or a line that is not an assignment
                    try:
                        prefix = int(row[1], 16)
                    except ValueError:
                        continue
                    if prefix not in table:
                        table[prefix] = (registry, clean_organization(row[2]))
        except OSError as exc:
            log.warning("cannot read the IEEE registry file %s: %s", path, exc)
    if not found:
        log.warning("no IEEE registry files (oui.csv, mam.csv, oui36.csv) in %s: MAC vendors stay "
                    "unknown (install Debian's ieee-data package or set %s)", directory, ENV_DIR)
    return by_bits


def _ensure_loaded() -> _Tables:
    if not _tables.loaded:
        with _lock:
            if not _tables.loaded:
                _load_locked()
    return _tables


def _format_prefix(value: int, bits: int) -> str:
    digits = f"{value:0{bits // 4}X}"
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


def lookup(mac: str | int | None) -> OuiEntry | None:
    """The registry entry with the longest prefix that covers this MAC, or None.

    None as well for locally administered and multicast addresses, and when the
    registry files are missing.
    """
    value = parse_mac(mac) if isinstance(mac, str) or mac is None else mac
    if value is None or (value >> 40) & 0x03:
        return None
    tables = _ensure_loaded()
    for bits in (36, 28, 24):
        prefix = value >> (48 - bits)
        hit = tables.by_bits[bits].get(prefix)
        if hit is not None:
            key = (bits, prefix)
            if key not in tables.entries:
                registry, organization = hit
                tables.entries[key] = None if organization.lower() in _NO_VENDOR else OuiEntry(
                    _format_prefix(prefix, bits), registry, organization, normalize_vendor(organization))
            return tables.entries[key]
    return None


# ---------------------------------------------------------------- display names

_LEGAL = re.compile(
    r"[\s,.]+(?:inc|incorporated|corp|corporation|co|company|ltd|limited|llc|l\.l\.c|gmbh|ag|"
    r"s\.?a|s\.?p\.?a|b\.?v|n\.?v|ab|oy|a/?s|kg|kgaa|plc|pty|pte|s\.?r\.?l|sas|k\.?k|"
    r"gmbh\s*&\s*co\.?\s*kg|international|holdings?)\.?$",
    re.IGNORECASE,
)


def _load_vendor_table() -> list[tuple[re.Pattern[str], str]]:
    text = resources.files("tapwatch.identify").joinpath("vendors.yaml").read_text(encoding="utf-8")
    data = yamltext.load(text) or {}
    table: list[tuple[re.Pattern[str], str]] = []
    for display, patterns in (data.get("vendors") or {}).items():
        for pattern in patterns if isinstance(patterns, list) else [patterns]:
            table.append((re.compile(str(pattern), re.IGNORECASE), str(display)))
    return table


_vendor_table: list[tuple[re.Pattern[str], str]] | None = None


@lru_cache(maxsize=8192)
def normalize_vendor(name: str) -> str:
    """A short display name for an organisation: "Hewlett Packard" → "HP", "Siemens AG," → "Siemens".

    Names in the table (vendors.yaml) get their display name; others lose legal suffixes
    ("Co., Ltd.", "Inc.", "GmbH"…), and all-capital names get capitalised words.
    """
    global _vendor_table
    if _vendor_table is None:
        _vendor_table = _load_vendor_table()
    cleaned = clean_organization(name)
    for pattern, display in _vendor_table:
        if pattern.match(cleaned):
            return display
    short = cleaned
    while True:
        stripped = _LEGAL.sub("", short).strip(" ,.&")
        if stripped == short or not stripped:
            break
        short = stripped
    if short.isupper() and " " in short:
        short = " ".join(w if len(w) <= 3 else w.capitalize() for w in short.split())
    return short or cleaned


def reset() -> None:
    """Forget the loaded registries and display names (tests change TAPWATCH_OUI_DIR)."""
    global _tables, _vendor_table
    with _lock:
        _tables = _Tables()
        _vendor_table = None
    normalize_vendor.cache_clear()
