"""NVD CVE JSON 2.0: the API's responses and the yearly/modified feed files share one shape.

One CVE is one record, keyed by its id with `lastModified` as revision. Its score is the
primary CVSS metric of the newest version the record has (3.1, 3.0, 4.0, then 2.0). Each
configuration (nodes of CPE match criteria joined by AND/OR, e.g. "firmware < 4.5 running on
this hardware") becomes one rule per vendor of its vulnerable criteria; the matcher
evaluates the configuration whole. The record's CISA fields (cisaExploitAdd, …) set the
KEV flag as the catalog would. A CVE that is malformed is reported and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from tapwatch.vulns.feeds.common import (
    BadRecord,
    FeedRecord,
    Problem,
    RuleInfo,
    VulnInfo,
    array,
    digest,
    obj,
    required_cve_id,
    score,
    text,
    timestamp,
)
from tapwatch.vulns.products import vendor_keys

METRICS = ("cvssMetricV31", "cvssMetricV30", "cvssMetricV40", "cvssMetricV2")
BOUNDS = ("versionStartIncluding", "versionStartExcluding", "versionEndIncluding",
          "versionEndExcluding")
_CPE_SPLIT = re.compile(r"(?<!\\):")


def is_nvd(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    if doc.get("format") == "NVD_CVE":
        return True
    vulns = doc.get("vulnerabilities")
    return isinstance(vulns, list) and bool(vulns) and isinstance(vulns[0], dict) and "cve" in vulns[0]


def parse_cpe(criteria: str, location: str) -> dict[str, str]:
    """The fields of a CPE 2.3 formatted string (cpe:2.3:part:vendor:product:version:update:…)."""
    parts = _CPE_SPLIT.split(criteria)
    if len(parts) != 13 or parts[0] != "cpe" or parts[1] != "2.3" or parts[2] not in ("a", "o", "h", "*"):
        raise BadRecord(location, f"not a CPE 2.3 name: {criteria!r}")
    unescape = lambda s: re.sub(r"\\(.)", r"\1", s)  # noqa: E731
    return {"part": parts[2], "vendor": unescape(parts[3]), "product": unescape(parts[4]),
            "version": unescape(parts[5]), "update": unescape(parts[6])}


def _display_versions(match: dict[str, Any]) -> str:
    bounds = [f"{op} {match[k]}" for k, op in zip(BOUNDS, (">=", ">", "<=", "<"), strict=True)
              if match.get(k)]
    if bounds:
        return " and ".join(bounds)
    if match["version"] in ("*", "-", ""):
        return "all versions"
    return match["version"] + (f" {match['update']}" if match["update"] not in ("*", "-", "") else "")


def _configuration(raw: Any, where: str) -> dict[str, Any]:
    config = obj(raw, where)
    nodes = []
    for n, node_raw in enumerate(array(config.get("nodes"), f"{where}.nodes")):
        node = obj(node_raw, f"{where}.nodes[{n}]")
        matches = []
        for m, match_raw in enumerate(array(node.get("cpeMatch"), f"{where}.nodes[{n}].cpeMatch")):
            here = f"{where}.nodes[{n}].cpeMatch[{m}]"
            match = obj(match_raw, here)
            criteria = match.get("criteria")
            if not isinstance(criteria, str):
                raise BadRecord(f"{here}.criteria", "missing CPE match criteria")
            entry: dict[str, Any] = {"vulnerable": bool(match.get("vulnerable")),
                                     **parse_cpe(criteria, f"{here}.criteria")}
            for bound in BOUNDS:
                if match.get(bound) is not None:
                    entry[bound] = text(match[bound], f"{here}.{bound}")
            entry["vendor_keys"] = sorted(vendor_keys(entry["vendor"].replace("_", " ")))
            entry["versions"] = _display_versions(entry)
            matches.append(entry)
        nodes.append({"operator": str(node.get("operator") or "OR").upper(),
                      "negate": bool(node.get("negate")), "matches": matches})
    return {"operator": str(config.get("operator") or "OR").upper(),
            "negate": bool(config.get("negate")), "nodes": nodes}


def _cve(cve: dict[str, Any], where: str) -> tuple[VulnInfo, list[RuleInfo], str | None]:
    cve_id = required_cve_id(cve.get("id"), f"{where}.id")
    description = None
    for i, d in enumerate(array(cve.get("descriptions"), f"{where}.descriptions")):
        d = obj(d, f"{where}.descriptions[{i}]")
        if d.get("lang", "en").startswith("en"):
            description = text(d.get("value"), f"{where}.descriptions[{i}].value")
            break
    metrics = obj(cve.get("metrics") or {}, f"{where}.metrics")
    chosen: tuple[float | None, str | None, str | None] = (None, None, None)
    for name in METRICS:
        entries = array(metrics.get(name), f"{where}.metrics.{name}")
        if not entries:
            continue
        ordered = sorted(enumerate(entries), key=lambda e: (e[1] or {}).get("type") != "Primary")
        i, entry = ordered[0]
        data = obj(obj(entry, f"{where}.metrics.{name}[{i}]").get("cvssData"),
                   f"{where}.metrics.{name}[{i}].cvssData")
        chosen = (score(data.get("baseScore"), f"{where}.metrics.{name}[{i}].cvssData.baseScore"),
                  text(data.get("vectorString"), f"{where}.metrics.{name}[{i}].cvssData.vectorString"),
                  str(data.get("version") or ""))
        break
    cwe = None
    for i, w in enumerate(array(cve.get("weaknesses"), f"{where}.weaknesses")):
        for d in array(obj(w, f"{where}.weaknesses[{i}]").get("description"), "description"):
            if isinstance(d, dict) and str(d.get("value", "")).startswith("CWE-"):
                cwe = str(d["value"])
                break
        if cwe:
            break
    references = []
    for i, r in enumerate(array(cve.get("references"), f"{where}.references")):
        r = obj(r, f"{where}.references[{i}]")
        if isinstance(r.get("url"), str):
            references.append({"url": r["url"], "tags": [str(t) for t in array(r.get("tags"), "tags")]})
    kev = cve.get("cisaExploitAdd") is not None
    info = VulnInfo(
        cve_id=cve_id, title=text(cve.get("cisaVulnerabilityName"), f"{where}.cisaVulnerabilityName", 512),
        description=description, cvss_score=chosen[0], cvss_vector=chosen[1],
        cvss_version=chosen[2] or None, cwe=cwe,
        published=timestamp(cve.get("published"), f"{where}.published"),
        modified=timestamp(cve.get("lastModified"), f"{where}.lastModified"),
        references=references[:20], kev=kev,
        kev_added=text(cve.get("cisaExploitAdd"), f"{where}.cisaExploitAdd", 10),
        kev_due=text(cve.get("cisaActionDue"), f"{where}.cisaActionDue", 10),
        kev_action=text(cve.get("cisaRequiredAction"), f"{where}.cisaRequiredAction", 1024),
    )
    patches = [r for r in references if "Patch" in r["tags"] or "Vendor Advisory" in r["tags"]]
    remediation = ([{"category": "vendor_fix", "details": "See the vendor's advisory or patch.",
                     "url": patches[0]["url"]}] if patches else [])
    rules = []
    for c, raw in enumerate(array(cve.get("configurations"), f"{where}.configurations")):
        config = _configuration(raw, f"{where}.configurations[{c}]")
        vulnerable = [m for n in config["nodes"] for m in n["matches"] if m["vulnerable"]]
        by_vendor: dict[str, list[dict[str, Any]]] = {}
        for m in vulnerable:
            for key in m["vendor_keys"]:
                by_vendor.setdefault(key, []).append(m)
        for key, matches in by_vendor.items():
            rules.append(RuleInfo(
                cve_id=cve_id, vendor=matches[0]["vendor"], vendor_keys=frozenset({key}),
                product=", ".join(dict.fromkeys(m["product"] for m in matches))[:512],
                versions="; ".join(dict.fromkeys(m["versions"] for m in matches))[:512],
                spec={"kind": "cpe", "configuration": config}, remediations=remediation))
    return info, rules, text(cve.get("lastModified"), f"{where}.lastModified")


def parse(doc: Any, path: str) -> Iterator[FeedRecord | Problem]:
    """One record per CVE; a malformed CVE is a Problem and the others are still read."""
    try:
        vulns = array(obj(doc, "$").get("vulnerabilities"), "$.vulnerabilities")
    except BadRecord as e:
        yield Problem(path, e.location, e.message)
        return
    for i, raw in enumerate(vulns):
        where = f"$.vulnerabilities[{i}].cve"
        try:
            item = obj(raw, f"$.vulnerabilities[{i}]")
            cve = obj(item.get("cve"), where)
            info, rules, revision = _cve(cve, where)
        except BadRecord as e:
            label = raw.get("cve", {}).get("id") if isinstance(raw, dict) and isinstance(
                raw.get("cve"), dict) else None
            yield Problem(path, e.location + (f" ({label})" if isinstance(label, str) else ""),
                          e.message)
            continue
        record = FeedRecord("nvd", info.cve_id, revision, info.title, digest(cve))
        record.vulns.append(info)
        record.rules = rules
        yield record
