"""Which devices the imported vulnerabilities affect, and how sure we are.

Devices are compared with the rules of their vendor only. A CSAF product matches by order
number when both sides have one, else by name (see products.py); an NVD configuration
matches when its nodes are satisfied the way its AND/OR/negate say. The firmware is then
checked against the affected versions, and the match gets a confidence:

* ``firmware``: the device's firmware was compared with the affected range and is in it;
* ``model``: only the model matched, because the firmware is unknown, the advisory says
  every version is affected, or its version text could not be read (`version_check` says
  which).

A device whose known firmware lies outside every affected range is not listed. The matches
are stored in device_vulnerabilities (first seen kept) and refreshed before every read,
so they follow both new feeds and changed identities.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session

from tapwatch.store.db import sessions
from tapwatch.store.inventory import chunks, iso
from tapwatch.store.models import Address, Device, Fact
from tapwatch.store.vuln_models import DeviceVulnerability, Vulnerability, VulnRule
from tapwatch.vulns.importer import utcnow
from tapwatch.vulns.products import (
    DeviceProfile,
    build_profile,
    model_number_matches,
    product_matches,
)
from tapwatch.vulns.versions import ALL, VersionRange, bounds_range, parse_range

NAME_FACTS = ("model", "product_name", "cip_product_name")
CHECK_RANK = {"in_range": 3, "all_versions": 2, "range_unparsed": 1, "firmware_unknown": 0}
REMEDIATION_LIMIT = 2048


def severity(score: float | None) -> str:
    """The CVSS v3 qualitative rating of a base score."""
    if score is None:
        return "unknown"
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else "none"


def confidence_of(check: str) -> str:
    return "firmware" if check == "in_range" else "model"


def version_check(rng: VersionRange | None, profile: DeviceProfile) -> str | None:
    """How the device's firmware relates to an affected range; None: not affected."""
    if rng is None:
        return "range_unparsed"
    if rng.all_versions:
        return "all_versions"
    if profile.firmware is None:
        return "firmware_unknown"
    return "in_range" if rng.contains(profile.firmware) else None


def _cpe_entry(m: dict[str, Any], profile: DeviceProfile) -> str | None:
    if not set(m.get("vendor_keys") or ()) & profile.vendor_keys:
        return None
    if not product_matches(str(m.get("product", "")).replace("_", " "), profile.tokens):
        return None
    if m.get("part") == "h":
        return "all_versions"  # hardware: matching the model is all there is
    bounds = [m.get(b) for b in ("versionStartIncluding", "versionStartExcluding",
                                 "versionEndIncluding", "versionEndExcluding")]
    version, upd = str(m.get("version", "*")), str(m.get("update", "*"))
    if any(bounds):
        rng = bounds_range(*bounds)
    elif version in ("*", "-", ""):
        rng = ALL
    else:
        rng = bounds_range(exact=version + (f" {upd}" if upd not in ("*", "-", "") else ""))
    return version_check(rng, profile)


def _node(node: dict[str, Any], profile: DeviceProfile) -> tuple[bool, str | None]:
    """(satisfied, best check of a vulnerable criterion that matched)."""
    matches = node.get("matches") or []
    results = [(m, _cpe_entry(m, profile)) for m in matches]
    hits = [(m, r) for m, r in results if r is not None]
    satisfied = (len(hits) == len(results) and bool(results)) if node.get("operator") == "AND" \
        else bool(hits)
    if node.get("negate"):
        return not satisfied, None
    best = max((r for m, r in hits if m.get("vulnerable")), key=CHECK_RANK.__getitem__, default=None)
    return satisfied, best


def evaluate_cpe(config: dict[str, Any], profile: DeviceProfile) -> str | None:
    nodes = [_node(n, profile) for n in config.get("nodes") or []]
    if not nodes:
        return None
    satisfied = all(s for s, _ in nodes) if config.get("operator") == "AND" else any(s for s, _ in nodes)
    if config.get("negate"):
        satisfied = not satisfied
    if not satisfied:
        return None
    return max((b for s, b in nodes if s and b), key=CHECK_RANK.__getitem__, default=None)


def evaluate_csaf(spec: dict[str, Any], profile: DeviceProfile) -> str | None:
    numbers = spec.get("model_numbers") or []
    if numbers and profile.model_numbers:
        if not model_number_matches(numbers, profile.model_numbers):
            return None  # both sides name the exact part, and it is another one
    else:
        names = [spec.get("product") or "", *(spec.get("other_names") or [])]
        cpe = spec.get("cpe")
        if isinstance(cpe, str) and cpe.count(":") >= 4:
            names.append(cpe.split(":")[4].replace("_", " "))
        if not any(n and product_matches(n, profile.tokens) for n in names):
            return None
    text = spec.get("range")
    return version_check(ALL if text is None else parse_range(text), profile)


def evaluate(spec: dict[str, Any], profile: DeviceProfile) -> str | None:
    if spec.get("kind") == "cpe":
        return evaluate_cpe(spec.get("configuration") or {}, profile)
    return evaluate_csaf(spec, profile)


def device_profiles(session: Session, device_ids: Iterable[int] | None = None) -> list[DeviceProfile]:
    """Profiles of the devices (all of them by default) from identity and name facts."""
    q = select(Device.id, Device.vendor, Device.firmware, Device.model)
    if device_ids is not None:
        q = q.where(Device.id.in_(sorted(set(device_ids))))
    devices = list(session.execute(q))
    facts: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for part in chunks([d.id for d in devices]):
        fq = (select(Address.device_id, Fact.attribute, Fact.value)
              .join(Fact, (Fact.mac == Address.mac) & (Fact.ip == Address.ip))
              .where(Address.device_id.in_(part),
                     Fact.attribute.in_((*NAME_FACTS, "order_number", "vendor"))))
        for device_id, attribute, value in session.execute(fq):
            if device_id is not None:
                facts[device_id][attribute].append(value)
    out = []
    for d in devices:
        f = facts.get(d.id, {})
        names = [d.model or ""] + [v for a in NAME_FACTS for v in f.get(a, [])]
        out.append(build_profile(d.id, d.vendor, d.firmware, names, f.get("order_number", []),
                                 f.get("vendor", [])))
    return out


@dataclass
class Match:
    device_id: int
    vulnerability_id: int
    check: str
    source: str
    product: str
    versions: str
    remediations: list[dict[str, Any]]


def find_matches(session: Session, profiles: list[DeviceProfile]) -> list[Match]:
    """The best match per device and vulnerability, over every rule of the devices' vendors."""
    keys = sorted({k for p in profiles for k in p.vendor_keys})
    rules: dict[str, list[VulnRule]] = defaultdict(list)
    for part in chunks(keys):
        for rule in session.scalars(select(VulnRule).where(VulnRule.vendor_key.in_(part))):
            rules[rule.vendor_key].append(rule)
    best: dict[tuple[int, int], Match] = {}
    for profile in profiles:
        seen: set[int] = set()
        for key in sorted(profile.vendor_keys):
            for rule in rules.get(key, ()):
                if rule.id in seen:
                    continue
                seen.add(rule.id)
                check = evaluate(rule.spec or {}, profile)
                if check is None:
                    continue
                pair = (profile.device_id, rule.vulnerability_id)
                found = Match(profile.device_id, rule.vulnerability_id, check, rule.source,
                              rule.product, rule.versions, list(rule.remediations or []))
                old = best.get(pair)
                if old is None or _better(found, old):
                    if old is not None and not found.remediations:
                        found.remediations = old.remediations
                    best[pair] = found
                elif not old.remediations and found.remediations:
                    old.remediations = found.remediations
    return list(best.values())


def _better(a: Match, b: Match) -> bool:
    """Firmware-checked beats model-only; at equal footing an advisory (with remediation) wins."""
    return (CHECK_RANK[a.check], a.source == "csaf") > (CHECK_RANK[b.check], b.source == "csaf")


def remediation_text(remediations: list[dict[str, Any]], kev_action: str | None) -> str | None:
    """The first remediation an advisory gives (vendor fix first), else KEV's required action."""
    for r in remediations:
        details = str(r.get("details") or "").strip()
        url = r.get("url")
        if details or url:
            text = details + (f" ({url})" if url else "")
            return text[:REMEDIATION_LIMIT]
    return kev_action[:REMEDIATION_LIMIT] if kev_action else None


@contextmanager
def refreshed(engine: Engine) -> Iterator[Session]:
    """A read session over matches recomputed just now.

    Matches are derived data, stale as soon as feeds or devices change: whatever reports them
    refreshes first, committed in its own transaction, then reads.
    """
    with sessions(engine).begin() as s:
        refresh(s)
    with sessions(engine)() as s:
        yield s


def refresh(session: Session) -> int:
    """Recompute every device's matches and store them; returns how many there are."""
    now = utcnow()
    matches = find_matches(session, device_profiles(session))
    kev_actions = dict(session.execute(select(Vulnerability.id, Vulnerability.kev_action)
                                       .where(Vulnerability.kev.is_(True))).all())
    stored = {(r.device_id, r.vulnerability_id): r.id for r in session.execute(
        select(DeviceVulnerability.device_id, DeviceVulnerability.vulnerability_id,
               DeviceVulnerability.id))}
    wanted = {(m.device_id, m.vulnerability_id): m for m in matches}
    stale = [stored[k] for k in stored if k not in wanted]
    for part in chunks(stale):
        session.execute(delete(DeviceVulnerability).where(DeviceVulnerability.id.in_(part)))

    def values(m: Match) -> dict[str, Any]:
        return {"confidence": confidence_of(m.check), "version_check": m.check, "source": m.source,
                "product": m.product[:512], "versions": m.versions[:512],
                "remediation": remediation_text(m.remediations, kev_actions.get(m.vulnerability_id)),
                "last_matched": now}

    new = [{"device_id": m.device_id, "vulnerability_id": m.vulnerability_id, "first_matched": now,
            **values(m)} for k, m in wanted.items() if k not in stored]
    if new:
        session.execute(insert(DeviceVulnerability), new)
    for k, m in wanted.items():
        if k in stored:
            session.execute(update(DeviceVulnerability).where(DeviceVulnerability.id == stored[k])
                            .values(**values(m)))
    return len(wanted)


def list_matches(session: Session, device_id: int | None = None) -> list[dict[str, Any]]:
    """Stored matches joined with their device and CVE, worst first per device."""
    q = (select(DeviceVulnerability, Device, Vulnerability)
         .join(Device, Device.id == DeviceVulnerability.device_id)
         .join(Vulnerability, Vulnerability.id == DeviceVulnerability.vulnerability_id))
    if device_id is not None:
        q = q.where(DeviceVulnerability.device_id == device_id)
    rows = [match_json(dv, d, v) for dv, d, v in session.execute(q)]
    rows.sort(key=lambda r: (r["device_id"], not r["kev"], -(r["cvss_score"] or 0), r["cve"]))
    return rows


def match_json(dv: DeviceVulnerability, d: Device, v: Vulnerability) -> dict[str, Any]:
    return {
        "device_id": d.id, "device_ip": d.ip, "device_name": d.name, "vendor": d.vendor,
        "model": d.model, "firmware": d.firmware, "cve": v.cve_id, "title": v.title,
        "cvss_score": v.cvss_score, "cvss_vector": v.cvss_vector, "cvss_version": v.cvss_version,
        "severity": severity(v.cvss_score), "kev": v.kev, "kev_due": v.kev_due,
        "kev_ransomware": v.kev_ransomware, "confidence": dv.confidence,
        "version_check": dv.version_check, "source": dv.source, "product": dv.product,
        "affected_versions": dv.versions, "remediation": dv.remediation,
        "first_matched": iso(dv.first_matched),
    }
