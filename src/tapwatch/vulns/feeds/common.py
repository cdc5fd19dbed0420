"""What every feed parser produces: records with their vulnerabilities and affected products.

Parsers never raise on bad content: a record they cannot read becomes a `Problem` naming
the file and the JSON location (`$.vulnerabilities[3].cve.id`), and the other records of
the same file are still produced.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CVE_ID = re.compile(r"^CVE-\d{4}-\d{4,}$")


class BadRecord(Exception):
    """Raised inside a parser for one record; `location` says where in the document."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


@dataclass(frozen=True)
class Problem:
    path: str
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.location}: {self.message}"


@dataclass
class VulnInfo:
    """What one feed says about one vulnerability; None means "this feed does not say"."""

    cve_id: str
    title: str | None = None
    description: str | None = None
    cvss_score: float | None = None
    cvss_vector: str | None = None
    cvss_version: str | None = None
    cwe: str | None = None
    published: datetime | None = None
    modified: datetime | None = None
    references: list[dict[str, Any]] = field(default_factory=list)
    kev: bool = False
    kev_added: str | None = None
    kev_due: str | None = None
    kev_action: str | None = None
    kev_ransomware: str | None = None


@dataclass
class RuleInfo:
    """One affected product of one vulnerability."""

    cve_id: str
    vendor: str
    vendor_keys: frozenset[str]
    product: str
    versions: str
    spec: dict[str, Any]
    remediations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FeedRecord:
    source: str  # nvd, csaf, kev
    key: str
    revision: str | None
    title: str | None
    digest: str
    vulns: list[VulnInfo] = field(default_factory=list)
    rules: list[RuleInfo] = field(default_factory=list)


def digest(obj: Any) -> str:
    """A stable fingerprint of a JSON value (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def timestamp(value: Any, location: str) -> datetime | None:
    """An ISO 8601 time as naive UTC (the store's convention); bad text is a BadRecord."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRecord(location, f"expected a date-time string, found {type(value).__name__}")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRecord(location, f"not an ISO 8601 date-time: {value!r}") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


def text(value: Any, location: str, limit: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRecord(location, f"expected a string, found {type(value).__name__}")
    value = value.strip()
    return value[:limit] if limit else value


def required_cve_id(value: Any, location: str) -> str:
    """A required CVE id: KEV and NVD key their records by it, so a record without one is unusable."""
    found = text(value, location)
    if not found or not CVE_ID.match(found):
        raise BadRecord(location, f"missing or not a CVE id: {value!r}")
    return found


def score(value: Any, location: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
        raise BadRecord(location, f"CVSS base score must be a number from 0 to 10, found {value!r}")
    return float(value)


def obj(value: Any, location: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRecord(location, f"expected an object, found {type(value).__name__}")
    return value


def array(value: Any, location: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRecord(location, f"expected an array, found {type(value).__name__}")
    return value
