"""CSAF 2.0 security advisories (as CISA publishes its ICS advisories).

One advisory is one record, keyed by `document.tracking.id` with its current release date
as revision. The product tree is walked down to its products: the nearest `vendor` branch
names the vendor, the nearest `product_name` branch the product, and a
`product_version_range` / `product_version` branch the affected versions (a product right
under its name affects every version). Relationships ("firmware installed on device") give
the device's name with the firmware's versions. Each vulnerability's known/first/last
affected products become rules; its remediations are kept per product (product ids and
product groups), its highest CVSS base score is the score. A vulnerability entry that is
malformed is reported and skipped; the rest of the advisory is imported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tapwatch.vulns.feeds.common import (
    CVE_ID,
    BadRecord,
    FeedRecord,
    Problem,
    RuleInfo,
    VulnInfo,
    array,
    digest,
    obj,
    score,
    text,
    timestamp,
)
from tapwatch.vulns.products import vendor_keys
from tapwatch.vulns.versions import parse_range

AFFECTED = ("known_affected", "first_affected", "last_affected")
REMEDIATION_ORDER = {"vendor_fix": 0, "mitigation": 1, "workaround": 2, "no_fix_planned": 3,
                     "none_available": 4}
MAX_DEPTH = 32


def is_csaf(doc: Any) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("document"), dict)
            and "csaf_version" in doc["document"])


@dataclass
class _Product:
    vendor: str
    name: str
    versions: str | None  # None: every version
    model_numbers: list[str]
    cpe: str | None
    other_names: tuple[str, ...] = ()


_NAME_CONSTRAINT = re.compile(r"(?:<=|>=|<|>)\s*v?\d[\w.]*", re.IGNORECASE)


def _versions(product_name: str, versions: str | None) -> str | None:
    """The affected versions; a constraint inside the product name ("S7-1200 CPU family < V4.x")
    counts when the version branch says every version."""
    named = _NAME_CONSTRAINT.search(product_name)
    if named and (versions is None or (r := parse_range(versions)) is not None and r.all_versions):
        return named.group()
    return versions


def _walk(branches: Any, location: str, ctx: dict[str, str], out: dict[str, _Product],
          depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise BadRecord(location, "product tree nested too deeply")
    for i, raw in enumerate(array(branches, location)):
        here = f"{location}[{i}]"
        branch = obj(raw, here)
        category = branch.get("category")
        name = text(branch.get("name"), f"{here}.name") or ""
        inner = dict(ctx)
        if category in ("vendor", "product_name", "product_family"):
            inner[category] = name
        elif category in ("product_version_range", "product_version"):
            inner["versions"] = name
        product = branch.get("product")
        if product is not None:
            p = obj(product, f"{here}.product")
            pid = text(p.get("product_id"), f"{here}.product.product_id")
            if not pid:
                raise BadRecord(f"{here}.product.product_id", "missing")
            helper = obj(p.get("product_identification_helper") or {},
                         f"{here}.product.product_identification_helper")
            numbers = [str(n) for n in array(helper.get("model_numbers"),
                                             f"{here}.product.product_identification_helper.model_numbers")]
            cpe = helper.get("cpe") if isinstance(helper.get("cpe"), str) else None
            product_name = inner.get("product_name") or inner.get("product_family") or \
                text(p.get("name"), f"{here}.product.name") or ""
            out[pid] = _Product(inner.get("vendor", ""), product_name,
                                _versions(product_name, inner.get("versions")), numbers, cpe)
        if "branches" in branch:
            _walk(branch["branches"], f"{here}.branches", inner, out, depth + 1)


def _products(tree: dict[str, Any]) -> tuple[dict[str, _Product], dict[str, list[str]]]:
    products: dict[str, _Product] = {}
    _walk(tree.get("branches"), "$.product_tree.branches", {}, products)
    for i, raw in enumerate(array(tree.get("relationships"), "$.product_tree.relationships")):
        here = f"$.product_tree.relationships[{i}]"
        rel = obj(raw, here)
        full = obj(rel.get("full_product_name"), f"{here}.full_product_name")
        pid = full.get("product_id")
        component = products.get(str(rel.get("product_reference")))
        platform = products.get(str(rel.get("relates_to_product_reference")))
        if not isinstance(pid, str) or component is None or platform is None:
            raise BadRecord(here, "relationship refers to products the tree does not define")
        products[pid] = _Product(platform.vendor or component.vendor, platform.name,
                                 component.versions, platform.model_numbers or component.model_numbers,
                                 platform.cpe or component.cpe, (component.name,))
    groups: dict[str, list[str]] = {}
    for i, raw in enumerate(array(tree.get("product_groups"), "$.product_tree.product_groups")):
        g = obj(raw, f"$.product_tree.product_groups[{i}]")
        groups[str(g.get("group_id"))] = [str(p) for p in array(g.get("product_ids"), "product_ids")]
    return products, groups


def _vulnerability(v: dict[str, Any], where: str, products: dict[str, _Product],
                   groups: dict[str, list[str]], advisory: str, index: int
                   ) -> tuple[VulnInfo, list[RuleInfo]]:
    cve = text(v.get("cve"), f"{where}.cve")
    if cve is not None and not CVE_ID.match(cve):
        raise BadRecord(f"{where}.cve", f"not a CVE id: {cve!r}")
    vuln_id = cve or f"{advisory}#{index + 1}"  # advisory-only vulnerabilities keep a stable id
    best: tuple[float, str | None, str | None] | None = None
    for j, raw in enumerate(array(v.get("scores"), f"{where}.scores")):
        s = obj(raw, f"{where}.scores[{j}]")
        for kind in ("cvss_v3", "cvss_v2"):
            if kind in s:
                c = obj(s[kind], f"{where}.scores[{j}].{kind}")
                value = score(c.get("baseScore"), f"{where}.scores[{j}].{kind}.baseScore")
                if value is not None and (best is None or value > best[0]):
                    best = (value, text(c.get("vectorString"), f"{where}.scores[{j}].{kind}.vectorString"),
                            str(c.get("version") or ("2.0" if kind == "cvss_v2" else "3")))
                break
    summary = None
    for j, raw in enumerate(array(v.get("notes"), f"{where}.notes")):
        note = obj(raw, f"{where}.notes[{j}]")
        if note.get("category") in ("summary", "description") and summary is None:
            summary = text(note.get("text"), f"{where}.notes[{j}].text")
    cwe = v.get("cwe")
    info = VulnInfo(
        cve_id=vuln_id, title=text(v.get("title"), f"{where}.title", 512) or None,
        description=summary,
        cvss_score=best[0] if best else None, cvss_vector=best[1] if best else None,
        cvss_version=best[2] if best else None,
        cwe=str(cwe.get("id")) if isinstance(cwe, dict) and cwe.get("id") else None,
        references=[{"url": r["url"], "tags": [r.get("summary", "")]}
                    for r in array(v.get("references"), f"{where}.references")
                    if isinstance(r, dict) and isinstance(r.get("url"), str)][:20],
    )
    remediations: dict[str, list[dict[str, Any]]] = {}
    for j, raw in enumerate(array(v.get("remediations"), f"{where}.remediations")):
        r = obj(raw, f"{where}.remediations[{j}]")
        entry = {"category": str(r.get("category") or ""),
                 "details": (text(r.get("details"), f"{where}.remediations[{j}].details") or "")[:1000],
                 "url": r.get("url") if isinstance(r.get("url"), str) else None}
        ids = [str(p) for p in array(r.get("product_ids"), f"{where}.remediations[{j}].product_ids")]
        for g in array(r.get("group_ids"), f"{where}.remediations[{j}].group_ids"):
            ids += groups.get(str(g), [])
        for pid in ids or ["*"]:
            remediations.setdefault(pid, []).append(entry)
    status = obj(v.get("product_status") or {}, f"{where}.product_status")
    rules: list[RuleInfo] = []
    seen: set[str] = set()
    for category in AFFECTED:
        for k, pid in enumerate(array(status.get(category), f"{where}.product_status.{category}")):
            pid = str(pid)
            if pid in seen:
                continue
            seen.add(pid)
            product = products.get(pid)
            if product is None:
                raise BadRecord(f"{where}.product_status.{category}[{k}]",
                                f"product id {pid!r} is not in the product tree")
            keys = vendor_keys(product.vendor)
            if not keys:
                continue  # no vendor: nothing a device could be matched on
            rems = sorted(remediations.get(pid, []) + remediations.get("*", []),
                          key=lambda e: REMEDIATION_ORDER.get(e["category"], 9))
            rules.append(RuleInfo(
                cve_id=vuln_id, vendor=product.vendor, vendor_keys=keys, product=product.name,
                versions=product.versions or "all versions",
                spec={"kind": "csaf", "product": product.name,
                      "other_names": list(product.other_names),
                      "model_numbers": product.model_numbers, "cpe": product.cpe,
                      "range": product.versions},
                remediations=rems))
    return info, rules


def parse(doc: Any, path: str) -> Iterator[FeedRecord | Problem]:
    """One record per advisory; malformed vulnerabilities become Problems."""
    try:
        document = obj(doc.get("document"), "$.document")
        tracking = obj(document.get("tracking"), "$.document.tracking")
        advisory = text(tracking.get("id"), "$.document.tracking.id")
        if not advisory:
            raise BadRecord("$.document.tracking.id", "missing")
        revision = timestamp(tracking.get("current_release_date"),
                             "$.document.tracking.current_release_date")
        products, groups = _products(obj(doc.get("product_tree") or {}, "$.product_tree"))
        vulns = array(doc.get("vulnerabilities"), "$.vulnerabilities")
    except BadRecord as e:
        yield Problem(path, e.location, e.message)
        return
    record = FeedRecord("csaf", advisory, revision.isoformat() if revision else None,
                        text(document.get("title"), "$.document.title", 512), digest(doc))
    for i, raw in enumerate(vulns):
        where = f"$.vulnerabilities[{i}]"
        try:
            info, rules = _vulnerability(obj(raw, where), where, products, groups, advisory, i)
        except BadRecord as e:
            yield Problem(path, e.location, e.message)
            continue
        record.vulns.append(info)
        record.rules += rules
    yield record
