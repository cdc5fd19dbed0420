"""What a device is called, and whether an advisory's vendor and product name mean it.

Vendors are compared by key: the identification display name ("Siemens AG" → "Siemens",
"Allen-Bradley" → "Rockwell Automation", CPE "schneider-electric" → "Schneider Electric")
reduced to lower-case letters and digits, so CPE "rockwellautomation" meets "Rockwell
Automation". Advisories that name several vendors ("Red Lion, AutomationDirect") give
one key per name.

Products are compared by tokens. An advisory's product name minus generic words
("family", "series", "firmware", notes in parentheses) must have all its designators
(tokens with a digit: "S7-1200", "525", "1214C") among the device's tokens, and share at
least one word with them; a name without designators must be contained whole. Devices get
tokens from their model, product name and order number facts, and from product families
(families.yaml) for names advisories use but devices never say ("SIMATIC S7-1200").
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from importlib import resources
from pathlib import Path

from tapwatch import yamltext
from tapwatch.identify.oui import normalize_vendor
from tapwatch.vulns.versions import Version, parse_version

STOPWORDS = frozenset({
    "family", "families", "series", "incl", "including", "and", "with", "for", "the", "all",
    "versions", "version", "variants", "variant", "firmware", "software", "devices", "device",
    "cpu", "cpus", "module", "modules", "of", "a", "an", "in", "on", "product", "products",
    "models", "model", "type", "types", "to", "or", "by", "without", "based", "other", "affected",
})
_LEGAL_KEYS = frozenset({"inc", "llc", "ltd", "corp", "corporation", "co", "gmbh", "ag", "sa",
                         "company", "limited", "bv", "nv", "plc", "kg", "se", ""})
_SPLIT = re.compile(r"[\s/,;:()\[\]_+|]+")
_VERSIONISH = re.compile(r"^(?:v\d[\w.]*|\d+\.[\dx.]+|\d+\.x)$")


def vendor_key(name: str | None) -> str:
    """One vendor name as a comparable key ("Siemens AG" → "siemens")."""
    if not name or not name.strip():
        return ""
    display = normalize_vendor(re.sub(r"\([^)]*\)", " ", name).strip(" ,.")) or name
    return re.sub(r"[^a-z0-9]", "", display.lower())


@lru_cache(maxsize=16384)
def vendor_keys(name: str | None) -> frozenset[str]:
    """Every vendor a name may stand for: the whole and each part of a list of vendors."""
    if not name:
        return frozenset()
    parts = [name, *re.split(r",|;|/|&|\band\b", name)]
    return frozenset(k for k in (vendor_key(p) for p in parts) if k not in _LEGAL_KEYS)


def _token(raw: str) -> str:
    return raw.strip(".-'\"*").replace("-", "")


@lru_cache(maxsize=65536)
def name_tokens(text: str) -> frozenset[str]:
    """Tokens of a device's name: lower-case, hyphens dropped ("S7-1200" → "s71200")."""
    return frozenset(t for t in (_token(p) for p in _SPLIT.split(text.lower())) if t)


@lru_cache(maxsize=65536)
def product_tokens(text: str) -> frozenset[str]:
    """Tokens of an advisory's product name, without notes, generic words and versions."""
    text = re.sub(r"\([^)]*\)", " ", text.lower())
    out = set()
    for part in _SPLIT.split(text):
        if _VERSIONISH.match(part.strip(".-")) or part.strip(".-") in STOPWORDS:
            continue
        t = _token(part)
        if t and t not in STOPWORDS:
            out.add(t)
    return frozenset(out)


@lru_cache(maxsize=262144)
def product_matches(product: str, device_tokens: frozenset[str]) -> bool:
    """Whether an advisory's product name names a device with these tokens."""
    wanted = product_tokens(product)
    if not wanted:
        return False
    designators = {t for t in wanted if any(c.isdigit() for c in t)}
    words = wanted - designators
    if not designators:
        return words <= device_tokens
    return designators <= device_tokens and (not words or bool(words & device_tokens))


def model_number(text: str) -> str:
    """Order numbers compare without spaces, in capitals ("6ES7 214-1AG40-0XB0")."""
    return re.sub(r"\s+", "", text).upper()


def model_number_matches(patterns: list[str], numbers: frozenset[str]) -> bool:
    """Whether any of the device's order numbers fits an advisory's (wildcards allowed)."""
    return any(fnmatchcase(n, model_number(p)) for p in patterns for n in numbers)


@dataclass(frozen=True)
class Family:
    vendor_key: str
    pattern: re.Pattern[str]
    names: tuple[str, ...]


def _load_families_file(text: str, where: str) -> list[Family]:
    data = yamltext.load(text) or {}
    out = []
    for i, entry in enumerate(data.get("families") or []):
        try:
            out.append(Family(vendor_key(str(entry["vendor"])),
                              re.compile(str(entry["pattern"]), re.IGNORECASE),
                              tuple(str(n) for n in entry["names"])))
        except (KeyError, TypeError, re.error) as e:
            raise ValueError(f"{where}: families[{i}]: {e}") from e
    return out


@lru_cache(maxsize=1)
def families() -> tuple[Family, ...]:
    """The built-in product families, then those of $TAPWATCH_FAMILIES."""
    text = resources.files("tapwatch.vulns").joinpath("families.yaml").read_text(encoding="utf-8")
    found = _load_families_file(text, "families.yaml")
    extra = os.environ.get("TAPWATCH_FAMILIES")
    if extra:
        found += _load_families_file(Path(extra).read_text(encoding="utf-8"), extra)
    return tuple(found)


@dataclass(frozen=True)
class DeviceProfile:
    """Everything the matcher compares about one device."""

    device_id: int
    vendor_keys: frozenset[str]
    tokens: frozenset[str]
    model_numbers: frozenset[str]
    firmware: Version | None
    firmware_text: str | None


def build_profile(device_id: int, vendor: str | None, firmware: str | None,
                  names: list[str], order_numbers: list[str],
                  vendor_names: Sequence[str] = ()) -> DeviceProfile:
    """A profile from the device's identity and its name-like facts."""
    keys = set(vendor_keys(vendor))
    for v in vendor_names:
        keys |= vendor_keys(v)
    all_names = [n for n in names if n] + [n for n in order_numbers if n]
    tokens: set[str] = set()
    for n in all_names:
        tokens |= name_tokens(n)
    for fam in families():
        if fam.vendor_key in keys and any(fam.pattern.match(n.strip()) for n in all_names):
            for fname in fam.names:
                tokens |= name_tokens(fname)
    return DeviceProfile(device_id, frozenset(keys), frozenset(tokens),
                         frozenset(model_number(n) for n in order_numbers if n),
                         parse_version(firmware), firmware)
