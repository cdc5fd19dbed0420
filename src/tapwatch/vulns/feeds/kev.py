"""CISA Known Exploited Vulnerabilities catalog (the JSON file of cisagov/kev-data).

Each entry is one record keyed by its CVE id (dateAdded is its revision): it flags the CVE as
exploited in the wild, with the date it was added, the federal due date, the required
action (which becomes the remediation when no advisory gives one) and whether ransomware
campaigns use it. The catalog's vendor/product names are too coarse to match devices on
("Siemens", "SIMATIC"), so KEV adds no product rules: advisories and NVD do the matching.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tapwatch.vulns.feeds.common import (
    BadRecord,
    FeedRecord,
    Problem,
    VulnInfo,
    array,
    digest,
    obj,
    required_cve_id,
    text,
)


def is_kev(doc: Any) -> bool:
    return isinstance(doc, dict) and "catalogVersion" in doc and "vulnerabilities" in doc


def parse(doc: Any, path: str) -> Iterator[FeedRecord | Problem]:
    try:
        entries = array(doc.get("vulnerabilities"), "$.vulnerabilities")
    except BadRecord as e:
        yield Problem(path, e.location, e.message)
        return
    for i, raw in enumerate(entries):
        where = f"$.vulnerabilities[{i}]"
        try:
            entry = obj(raw, where)
            cve_id = required_cve_id(entry.get("cveID"), f"{where}.cveID")
            added = text(entry.get("dateAdded"), f"{where}.dateAdded", 10)
            info = VulnInfo(
                cve_id=cve_id, title=text(entry.get("vulnerabilityName"), f"{where}.vulnerabilityName", 512),
                description=text(entry.get("shortDescription"), f"{where}.shortDescription"),
                kev=True, kev_added=added, kev_due=text(entry.get("dueDate"), f"{where}.dueDate", 10),
                kev_action=text(entry.get("requiredAction"), f"{where}.requiredAction", 1024),
                kev_ransomware=text(entry.get("knownRansomwareCampaignUse"),
                                    f"{where}.knownRansomwareCampaignUse", 16),
            )
        except BadRecord as e:
            yield Problem(path, e.location, e.message)
            continue
        record = FeedRecord("kev", cve_id, added, info.title, digest(entry))
        record.vulns.append(info)
        yield record
