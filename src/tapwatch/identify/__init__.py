"""What a device is: name, vendor, type, class, model, OS and firmware, with the evidence.

    identity = identify(mac, facts, protocols)

For each attribute every source proposes candidates: facts that state the value
directly (`vendor`, `model`, `os`, `firmware`, `device_type` from OT protocols and
others), identification rules (rules/*.yaml plus TAPWATCH_RULES_DIR) and, for the
vendor, the MAC's IEEE registry entry (confidence 0.3). The shown value is the best
candidate: highest confidence, then the most observations, then the longest (most
specific) text. Every candidate stays in `Identity.evidence`, best first, so one can
always answer "why is this a PLC?".

The name is the first available of: DHCP host name, NetBIOS name, mDNS name (without
".local"), LLDP system name, CDP device id, SNMP sysName, DNS name; then the PROFINET
station name and host names from other protocols. The class comes from the type
(taxonomy); a device of unknown type that speaks industrial protocols is OT.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from tapwatch.identify import oui, taxonomy
from tapwatch.identify.ruleset import (
    ENV_RULES_DIR,
    Condition,
    Rule,
    RuleError,
    RuleSet,
    load_rules,
    validate_rules,
)

__all__ = [
    "ENV_RULES_DIR", "Evidence", "FactView", "Identity", "RuleError", "RuleSet", "default_rules",
    "identify", "load_rules", "reset", "validate_rules",
]

OUI_CONFIDENCE = 0.3
# `role` facts of OT dissectors: which side of a protocol the device is on
ROLE_SIDES = {
    "modbus_server": ("modbus", True), "modbus_client": ("modbus", False),
    "cip_target": ("enip", True), "cip_originator": ("enip", False),
    "dnp3_outstation": ("dnp3", True), "dnp3_master": ("dnp3", False),
    "iec104_controlled": ("iec104", True), "iec104_controlling": ("iec104", False),
    "bacnet-router": ("bacnet", True), "bacnet-client": ("bacnet", False),
    "mqtt-broker": ("mqtt", True),
}
# facts that name the product: `model` conditions of rules see them too
MODEL_LIKE = ("product_name", "product_code", "order_number", "cip_product_name", "module")
IDENTITY_FACTS = {"vendor": "vendor", "model": "model", "os": "os", "firmware": "firmware",
                  "device_type": "type"}


@dataclass(frozen=True)
class FactView:
    attribute: str
    value: str
    source: str  # protocol that reported it
    confidence: float
    count: int = 1


@dataclass(frozen=True)
class Evidence:
    value: str
    source: str  # a protocol, "oui", "rule:<id>", "taxonomy" or "protocols"
    confidence: float
    detail: str  # why, e.g. 'rule printer-mdns-ipp: mdns_service "_ipp._tcp.local"'
    count: int = 1


@dataclass
class Identity:
    name: str | None = None
    vendor: str | None = None
    type: str | None = None
    device_class: str | None = None  # "IT" | "IoT" | "OT"
    model: str | None = None
    os: str | None = None
    firmware: str | None = None
    evidence: dict[str, list[Evidence]] = field(default_factory=dict)
    mac_locally_administered: bool = False


# ---------------------------------------------------------------- rule set cache

_lock = threading.Lock()
_default_rules: RuleSet | None = None


def default_rules() -> RuleSet:
    """The process-wide rule set (built-ins plus TAPWATCH_RULES_DIR), loaded on first use."""
    global _default_rules
    if _default_rules is None:
        with _lock:
            if _default_rules is None:
                _default_rules = load_rules()
    return _default_rules


def reset() -> None:
    """Reload rules and IEEE registries on next use (after changing the environment)."""
    global _default_rules
    with _lock:
        _default_rules = None
    oui.reset()


# ---------------------------------------------------------------- matching

class _Item:
    """One value a condition can test: a fact, a protocol, or an identity candidate."""

    __slots__ = ("attribute", "value", "lower", "source", "confidence", "count")

    def __init__(self, attribute: str, value: str, source: str, confidence: float, count: int) -> None:
        self.attribute = attribute
        self.value = value
        self.lower = value.lower()
        self.source = source
        self.confidence = confidence
        self.count = count


_Hit = tuple[_Item, "re.Match[str] | None"]


def _test(cond: Condition, items: list[_Item]) -> list[_Hit]:
    hits: list[_Hit] = []
    test = cond.test
    if cond.min_confidence:
        items = [i for i in items if i.confidence >= cond.min_confidence]
    if cond.sources:
        items = [i for i in items if i.source.lower() in cond.sources]
    if test == "matches":
        assert cond.regex is not None
        search = cond.regex.search
        for item in items:
            m = search(item.value)
            if m is not None:
                hits.append((item, m))
        return hits
    if test == "exists":
        return [(item, None) for item in items]
    values = cond.values
    for item in items:
        text = item.value if cond.case_sensitive else item.lower
        if test == "equals":
            ok = text in values
        elif test == "contains":
            ok = any(v in text for v in values)
        elif test == "startswith":
            ok = text.startswith(values)
        else:
            ok = text.endswith(values)
        if ok:
            hits.append((item, None))
    return hits


def _eval(cond: Condition, ctx: dict[str, list[_Item]]) -> list[_Hit] | None:
    """The hits of a condition that holds (possibly none, for `not`), or None if it fails."""
    kind = cond.kind
    if kind == "test":
        items = ctx.get(cond.attribute)
        if not items:
            return None
        hits = _test(cond, items)
        return hits or None
    if kind == "any":
        found: list[_Hit] | None = None
        for child in cond.children:
            sub = _eval(child, ctx)
            if sub is not None:
                found = (found or []) + sub
        return found
    if kind == "all":
        acc: list[_Hit] = []
        for child in cond.children:
            sub = _eval(child, ctx)
            if sub is None:
                return None
            acc.extend(sub)
        return acc
    # not
    return [] if _eval(cond.children[0], ctx) is None else None


def _quote(item: _Item) -> str:
    value = item.value if len(item.value) <= 120 else item.value[:117] + "..."
    return f'{item.attribute} "{value}"'


def _best_hit(hits: list[_Hit]) -> _Hit:
    return max(hits, key=lambda h: (h[0].confidence, h[0].count))


class _Candidates:
    """Candidate values of one identity attribute, merged by normalized value."""

    __slots__ = ("by_key",)

    def __init__(self) -> None:
        self.by_key: dict[str, list[Evidence]] = {}

    def add(self, key: str, ev: Evidence) -> None:
        self.by_key.setdefault(key, []).append(ev)

    def ranked(self) -> list[list[Evidence]]:
        groups = []
        for evs in self.by_key.values():
            evs.sort(key=lambda e: (-e.confidence, -e.count))
            groups.append(evs)
        groups.sort(key=lambda evs: (-evs[0].confidence, -sum(e.count for e in evs),
                                     -len(evs[0].value), evs[0].value))
        return groups


def _key(value: str) -> str:
    return " ".join(value.lower().split())


def _apply_rule(rule: Rule, ctx: dict[str, list[_Item]], out: dict[str, _Candidates]) -> bool:
    results: list[list[_Hit]] = []
    for cond in rule.conditions:
        hits = _eval(cond, ctx)
        if hits is None:
            return False
        results.append(hits)
    # The capturing condition: the first whose hits carry regex groups.
    capture_at = -1
    if rule.regex_count:
        for i, hits in enumerate(results):
            if any(m is not None and m.re.groups for _, m in hits):
                capture_at = i
                break
    named: dict[str, str] = {}
    if rule.named_groups:
        for hits in results:
            for _, m in hits:
                if m is not None:
                    for k, v in m.groupdict().items():
                        if v and k not in named:
                            named[k] = v
    cited = [_best_hit(h) for i, h in enumerate(results) if h and i != capture_at]
    variants: list[tuple[_Item | None, re.Match[str] | None]]
    if capture_at >= 0:
        variants = [(item, m) for item, m in results[capture_at] if m is not None]
    else:  # a regex without groups may still be referenced as $0
        first = next((m for hits in results for _, m in hits if m is not None), None)
        variants = [(None, first)]
    seen: set[tuple[tuple[str, str], ...]] = set()
    for item, match in variants:
        values: list[tuple[str, str]] = []
        for attr, template in rule.sets.items():
            text = template.render(match, named)
            if not text:
                continue
            if attr == "type":
                type_id = text if template.is_literal else taxonomy.normalize_type(text)
                if type_id is None:
                    continue
                text = type_id
            elif attr == "vendor":
                text = oui.normalize_vendor(text)
            values.append((attr, text))
        signature = tuple(values)
        if not values or signature in seen:
            continue
        seen.add(signature)
        support = ([item] if item is not None else []) + [h[0] for h in cited]
        count = max((s.count for s in support), default=1)
        detail = f"rule {rule.id}: " + "; ".join(_quote(s) for s in support) if support \
            else f"rule {rule.id}"
        for attr, text in values:
            out[attr].add(_key(text), Evidence(text, f"rule:{rule.id}", rule.confidences[attr], detail,
                                               count))
    return True


# ---------------------------------------------------------------- names

_NAME_ORDER = ("netbios_name", "mdns_name", "lldp_system_name", "cdp_device_id", "snmp_sysname",
               "dns_name", "profinet_station_name")
_NAME_LAST = ("fqdn", "ntlm_host")  # after host names from protocols other than DHCP
_NETBIOS_SUFFIX = re.compile(r"\s*<[0-9a-fA-F]{2}>.*$")
_MDNS_INSTANCE = re.compile(r"^(.+?)\._[\w-]+\._(?:tcp|udp)(?:\.|$)", re.IGNORECASE)
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


def _clean_name(attribute: str, value: str) -> str:
    name = value.strip().strip("\x00")
    if attribute == "netbios_name":
        name = _NETBIOS_SUFFIX.sub("", name).strip()
    elif attribute in ("mdns_name", "dns_name", "fqdn"):
        name = name.rstrip(".")
        if name.lower().endswith((".in-addr.arpa", ".ip6.arpa")):
            return ""
        if attribute == "mdns_name":
            instance = _MDNS_INSTANCE.match(name)  # "Luca's iMac._ssh._tcp.local"
            if instance:
                name = instance.group(1)
            elif name.lower().endswith(".local"):
                name = name[:-6]
    if (not name or name.startswith("_") or name.lower() in ("localhost", "(none)", "unknown")
            or _IPV4.match(name)):
        return ""
    return name


def _names(facts_by_attr: dict[str, list[FactView]]) -> list[Evidence]:
    tiers: list[list[FactView]] = []
    hostnames = facts_by_attr.get("hostname", [])
    if hostnames:
        tiers.append([f for f in hostnames if f.source.startswith("dhcp")])
    for attr in _NAME_ORDER:
        if attr in facts_by_attr:
            tiers.append(facts_by_attr[attr])
    if hostnames:
        tiers.append([f for f in hostnames if not f.source.startswith("dhcp")])
    for attr in _NAME_LAST:
        if attr in facts_by_attr:
            tiers.append(facts_by_attr[attr])
    out: list[Evidence] = []
    seen: set[str] = set()
    for tier in tiers:
        for f in sorted(tier, key=lambda f: (-f.confidence, -f.count, f.value)):
            name = _clean_name(f.attribute, f.value)
            if not name or name.lower() in seen:
                continue
            seen.add(name.lower())
            out.append(Evidence(name, f.source, f.confidence, f'{f.attribute} "{f.value}" from {f.source}',
                                f.count))
    return out


# ---------------------------------------------------------------- identify

def identify(mac: str | None, facts: Sequence[FactView], protocols: Sequence[str] = (), *,
             served: Sequence[str] | None = None, rule_set: RuleSet | None = None) -> Identity:
    """The identity of one device from its MAC, its facts and the protocols it speaks.

    `served`, when known, lists the protocols the device answers as a server (a PLC
    serves s7comm, the engineering station only talks it). Without it, rules on `served`
    see `protocols` minus those that `role` facts show the device only uses as a client
    (modbus_client, cip_originator, dnp3_master, ...). `rule_set` defaults to
    default_rules().
    """
    ruleset = rule_set if rule_set is not None else default_rules()
    mac_value = oui.parse_mac(mac)
    local = oui.is_locally_administered(mac_value)
    entry = oui.lookup(mac_value) if mac_value is not None and not local else None

    ctx: dict[str, list[_Item]] = {}
    facts_by_attr: dict[str, list[FactView]] = {}
    for f in facts:
        if not f.value:
            continue
        facts_by_attr.setdefault(f.attribute, []).append(f)
        ctx.setdefault(f.attribute, []).append(
            _Item(f.attribute, f.value, f.source, f.confidence, f.count))
    protos = sorted({p.lower() for p in protocols if p})
    if protos:
        ctx["protocol"] = [_Item("protocol", p, "traffic", 1.0, 1) for p in protos]
    if served is None:  # roles unknown: assume it serves what it speaks, unless a role says otherwise
        sides: dict[str, set[bool]] = {}
        for f in facts_by_attr.get("role", ()):
            role = f.value.lower()
            side = ROLE_SIDES.get(role) or ((role[:-7], False) if role.endswith("_client") else None)
            if side:
                sides.setdefault(side[0], set()).add(side[1])
        served_list = [p for p in protos if sides.get(p, {True}) != {False}]
    else:
        served_list = sorted({p.lower() for p in served if p})
    if served_list:
        ctx["served"] = [_Item("served", p, "traffic", 1.0, 1) for p in served_list]

    out = {attr: _Candidates() for attr in ("vendor", "type", "model", "os", "firmware")}

    # Facts that state an identity value directly.
    for attribute, target in IDENTITY_FACTS.items():
        for f in facts_by_attr.get(attribute, ()):
            value = f.value.strip()
            if target == "vendor":
                value = oui.normalize_vendor(value)
            elif target == "model" and value.startswith("(") and value.endswith(")"):
                value = value[1:-1].strip()  # mDNS TXT product=(HP LaserJet M404)
            elif target == "type":
                type_id = taxonomy.normalize_type(value)
                if type_id is None:
                    continue
                value = type_id
            if value:
                out[target].add(_key(value), Evidence(
                    value, f.source, f.confidence, f'{attribute} "{f.value}" reported by {f.source}',
                    f.count))
    if entry is not None:
        out["vendor"].add(_key(entry.vendor), Evidence(
            entry.vendor, "oui", OUI_CONFIDENCE,
            f'MAC prefix {entry.prefix} ({entry.registry}) is registered to "{entry.organization}"'))

    # Phase 1: rules on facts and protocols.
    keys: set[tuple[str, str | None]] = set()
    for attr, items in ctx.items():
        keys |= ruleset.keys_for(attr, [i.lower for i in items])
    for rule in ruleset.candidates(1, keys):
        _apply_rule(rule, ctx, out)

    # Phase 2: rules that also look at identity values (registry vendor, phase 1 results).
    if ruleset.always[2] or ruleset.index[2]:
        ctx2 = dict(ctx)
        for target, attribute in (("vendor", "vendor"), ("model", "model"), ("os", "os"),
                                  ("firmware", "firmware"), ("type", "device_type")):
            items = list(ctx.get(attribute, ()))
            if attribute == "model":
                for alias in MODEL_LIKE:
                    items.extend(ctx.get(alias, ()))
            present = {(i.lower, i.source) for i in items}
            for evs in out[target].by_key.values():
                for ev in evs:  # every candidate, so that min_confidence sees the strongest
                    if (ev.value.lower(), ev.source) not in present:
                        present.add((ev.value.lower(), ev.source))
                        items.append(_Item(attribute, ev.value, ev.source, ev.confidence, ev.count))
            if target == "vendor" and entry is not None and entry.organization != entry.vendor:
                items.append(_Item("vendor", entry.organization, "oui", OUI_CONFIDENCE, 1))
            if items:
                ctx2[attribute] = items
        keys2 = set(keys)
        for attr in ("vendor", "model", "os", "firmware", "device_type"):
            if attr in ctx2:
                keys2 |= ruleset.keys_for(attr, [i.lower for i in ctx2[attr]])
        for rule in ruleset.candidates(2, keys2):
            _apply_rule(rule, ctx2, out)

    identity = Identity(mac_locally_administered=local)
    evidence: dict[str, list[Evidence]] = {}
    for attr, cands in out.items():
        ranked = cands.ranked()
        if not ranked:
            continue
        setattr(identity, attr, ranked[0][0].value)
        evidence[attr] = [ev for group in ranked for ev in group]

    names = _names(facts_by_attr)
    if names:
        identity.name = names[0].value
        evidence["name"] = names

    if identity.type is not None:
        identity.device_class = taxonomy.class_of(identity.type)
        if identity.device_class is not None:
            best = evidence["type"][0]
            evidence["device_class"] = [Evidence(
                identity.device_class, "taxonomy", best.confidence,
                f"type {identity.type} ({taxonomy.display_name(identity.type)}) is {identity.device_class}")]
    else:
        cls, why = taxonomy.class_from_protocols(set(protos))
        if cls is not None:
            identity.device_class = cls
            evidence["device_class"] = [Evidence(
                cls, "protocols", 0.5, f"type unknown; speaks {', '.join(why)}")]
    identity.evidence = evidence
    return identity
