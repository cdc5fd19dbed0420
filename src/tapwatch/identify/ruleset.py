"""Identification rules: YAML files that map evidence to vendor, type, model, OS and firmware.

A rule file is a mapping with a `rules:` list (a bare list works too). One rule::

    - id: printer-hp-http-server            # unique; a user rule with the same id replaces it
      description: HP printers name themselves in the Server header
      when:                                 # every condition must hold
        - http_server: {matches: '^HP HTTP Server; (?:HP )?(?P<model>[^;]+?) - '}
      any:                                  # optional: at least one of these must hold
        - protocol: ipp
        - protocol: jetdirect
      set: {type: printer, vendor: HP, model: '${model}'}
      confidence: 0.85                      # or per attribute: {default: 0.85, type: 0.6}

A condition names one fact attribute (see tapwatch.dissect.base.ATTRIBUTES), or
`protocol` (any protocol the device speaks), or `served` (a protocol it answers as a
server; the same as `protocol` when the caller does not know roles). Identity attributes
(`vendor`, `model`, `os`, `firmware`, `device_type`) also see the MAC's registry vendor
and what the rules without identity conditions concluded, so a rule can say "a Siemens
device that serves s7comm is a PLC"; `model` also sees product_name, product_code,
order_number, cip_product_name and module facts. Its test is one of

    attr: value                  # equals (case-insensitive)
    attr: [a, b]                 # equals one of them
    attr: {equals | contains | startswith | endswith: value or [values]}
    attr: {matches: 'regex'}     # re.search, compiled once
    attr: {exists: true}
    attr: {contains: X, case_sensitive: true}
    attr: {matches: '^Windows', min_confidence: 0.5}   # ignore weaker values
    attr: {startswith: '6.1.', source: [smb, ntlm]}    # only values these protocols reported

and conditions combine with `{any: [...]}`, `{all: [...]}` and `{not: condition}`.

In `set`, `$1`..`$9` (or `${12}`) are the groups of the first regex condition that
matched, `${name}` a named group of any matched regex, `$0` the whole match and `$$` a
dollar sign. Filters: `${1|dots}` (underscores to dots), `spaces` (underscores to
spaces), `upper`, `lower`, `title`. A value that renders empty is not set. When several
facts match the capturing condition (two User-Agents), each one gives a result.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tapwatch import cache, yamltext
from tapwatch.dissect.base import ATTRIBUTES
from tapwatch.identify import taxonomy

log = logging.getLogger(__name__)

ENV_RULES_DIR = "TAPWATCH_RULES_DIR"
IDENTITY_ATTRIBUTES = frozenset({"vendor", "model", "os", "firmware", "device_type"})
TRAFFIC_ATTRIBUTES = frozenset({"protocol", "served"})
CONDITION_ATTRIBUTES = ATTRIBUTES | TRAFFIC_ATTRIBUTES
SETTABLE = ("type", "vendor", "model", "os", "firmware")
TESTS = ("equals", "contains", "startswith", "endswith", "matches", "exists")
RULE_KEYS = frozenset({"id", "description", "when", "any", "set", "confidence", "enabled"})
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_FILTERS = {
    "dots": lambda s: s.replace("_", "."),
    "spaces": lambda s: s.replace("_", " "),
    "upper": str.upper,
    "lower": str.lower,
    "title": str.title,
}


class RuleError(ValueError):
    """A rule file that cannot be used; the message names the file and the rule."""

    def __init__(self, path: str | Path, rule_id: str | None, message: str) -> None:
        self.path = str(path)
        self.rule_id = rule_id
        self.message = message
        where = f"{self.path}: rule {rule_id!r}" if rule_id else self.path
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------- compiled form

class Regex:
    """A compiled `matches` pattern that pickles as its source and compiles again only
    when first used, so a cached rule set loads without compiling 700 patterns."""

    __slots__ = ("pattern", "flags", "_compiled")

    def __init__(self, pattern: str, flags: int) -> None:
        self.pattern, self.flags = pattern, flags
        self._compiled: re.Pattern[str] | None = None

    @property
    def compiled(self) -> re.Pattern[str]:
        if self._compiled is None:
            self._compiled = re.compile(self.pattern, self.flags)
        return self._compiled

    def search(self, text: str) -> re.Match[str] | None:
        return self.compiled.search(text)

    def __getstate__(self) -> tuple[str, int]:
        return self.pattern, self.flags

    def __setstate__(self, state: tuple[str, int]) -> None:
        self.pattern, self.flags = state
        self._compiled = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regex) and (self.pattern, self.flags) == (other.pattern, other.flags)

    def __hash__(self) -> int:
        return hash((self.pattern, self.flags))


@dataclass(frozen=True, slots=True)
class Condition:
    kind: str  # "test", "any", "all", "not"
    attribute: str = ""
    test: str = ""
    values: tuple[str, ...] = ()  # lower-cased unless case_sensitive
    regex: Regex | None = None
    case_sensitive: bool = False
    children: tuple[Condition, ...] = ()
    min_confidence: float = 0.0  # only values at least this confident count
    sources: frozenset[str] = frozenset()  # only values reported by these protocols (empty: any)

    def attributes(self) -> Iterator[str]:
        if self.kind == "test":
            yield self.attribute
        for child in self.children:
            yield from child.attributes()


@dataclass(frozen=True, slots=True)
class Template:
    """A `set` value: literal text and group references."""

    source: str
    parts: tuple[str | tuple[str, tuple[str, ...]], ...]  # literal, or (group, filters)
    is_literal: bool = False  # no group references

    def render(self, match: re.Match[str] | None, named: dict[str, str]) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            group, filters = part
            text = ""
            if group.isdigit():
                if match is not None and int(group) <= match.re.groups:
                    text = match.group(int(group)) or ""
            elif match is not None and group in match.re.groupindex:
                text = match.group(group) or named.get(group, "")
            else:
                text = named.get(group, "")
            for name in filters:
                text = _FILTERS[name](text)
            out.append(text)
        return " ".join("".join(out).split())


@dataclass(slots=True)
class Rule:
    id: str
    conditions: tuple[Condition, ...]
    sets: dict[str, Template]
    confidence: float
    path: str
    description: str = ""
    confidences: dict[str, float] = field(default_factory=dict)  # per attribute set
    enabled: bool = True
    phase: int = 1  # 2 when a condition looks at identity attributes
    index_keys: frozenset[tuple[str, str | None]] | None = None  # None: evaluate always
    regex_count: int = 0
    named_groups: frozenset[str] = field(default_factory=frozenset)


# ---------------------------------------------------------------- compiling

_REF = re.compile(r"\$(?:(\$)|(\d)|\{(\w+)((?:\|\w+)*)\})")


def _compile_template(text: Any, err: Any) -> Template:
    if not isinstance(text, str | int | float) or isinstance(text, bool):
        raise err("set values must be strings")
    source = str(text)
    parts: list[str | tuple[str, tuple[str, ...]]] = []
    pos = 0
    for m in _REF.finditer(source):
        literal = source[pos:m.start()]
        if "$" in literal:
            raise err(f"a '$' in {source!r} is neither $N, ${{name}} nor $$")
        if literal:
            parts.append(literal)
        if m.group(1):
            parts.append("$")
        elif m.group(2):
            parts.append((m.group(2), ()))
        else:
            filters = tuple(f for f in m.group(4).split("|") if f)
            for name in filters:
                if name not in _FILTERS:
                    raise err(f"unknown filter {name!r} in {source!r} (known: {', '.join(_FILTERS)})")
            parts.append((m.group(3), filters))
        pos = m.end()
    tail = source[pos:]
    if "$" in tail:
        raise err(f"a '$' in {source!r} is neither $N, ${{name}} nor $$")
    if tail:
        parts.append(tail)
    return Template(source, tuple(parts), all(isinstance(p, str) for p in parts))


def _as_values(raw: Any, err: Any, what: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise err(f"{what} needs a value")
    out = []
    for item in items:
        if isinstance(item, bool) or item is None or isinstance(item, dict | list):
            raise err(f"{what} values must be strings, not {item!r}")
        out.append(str(item))
    return tuple(out)


def _compile_condition(raw: Any, err: Any) -> Condition:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise err(f"a condition is a mapping with one key (an attribute, any, all or not), not {raw!r}")
    (key, spec), = raw.items()
    key = str(key)
    if key in ("any", "all"):
        if not isinstance(spec, list) or not spec:
            raise err(f"'{key}' needs a non-empty list of conditions")
        return Condition(key, children=tuple(_compile_condition(c, err) for c in spec))
    if key == "not":
        return Condition("not", children=(_compile_condition(spec, err),))
    if key not in CONDITION_ATTRIBUTES:
        raise err(f"unknown attribute {key!r} in a condition (fact attributes are listed in "
                  "tapwatch.dissect.base.ATTRIBUTES; also protocol, served)")
    case_sensitive = False
    min_confidence = 0.0
    sources: frozenset[str] = frozenset()
    if isinstance(spec, dict):
        spec = dict(spec)
        cs = spec.pop("case_sensitive", False)
        if not isinstance(cs, bool):
            raise err(f"case_sensitive of {key!r} must be true or false")
        case_sensitive = cs
        mc = spec.pop("min_confidence", 0.0)
        if isinstance(mc, bool) or not isinstance(mc, int | float) or not 0 <= mc <= 1:
            raise err(f"min_confidence of {key!r} must be a number from 0 to 1")
        min_confidence = float(mc)
        src = spec.pop("source", None)
        if src is not None:
            sources = frozenset(v.lower() for v in _as_values(src, err, f"source of {key!r}"))
        tests = [t for t in spec if t in TESTS]
        unknown = [t for t in spec if t not in TESTS]
        if unknown:
            raise err(f"unknown test {unknown[0]!r} for {key!r} (known: {', '.join(TESTS)})")
        if len(tests) != 1:
            raise err(f"condition on {key!r} needs exactly one test of {', '.join(TESTS)}")
        test, value = tests[0], spec[tests[0]]
    else:
        test, value = "equals", spec
    if test == "exists":
        if value is not True:
            raise err(f"'exists' of {key!r} must be true (use not: for absence)")
        return Condition("test", key, "exists", min_confidence=min_confidence, sources=sources)
    if test == "matches":
        if not isinstance(value, str) or not value:
            raise err(f"'matches' of {key!r} needs one regular expression")
        regex = Regex(value, 0 if case_sensitive else re.IGNORECASE)
        try:
            regex.compiled  # noqa: B018 - compiling is the check
        except re.error as exc:
            raise err(f"bad regular expression for {key!r}: {value!r}: {exc}") from None
        return Condition("test", key, "matches", (value,), regex, case_sensitive,
                         min_confidence=min_confidence, sources=sources)
    values = _as_values(value, err, f"'{test}' of {key!r}")
    if not case_sensitive:
        values = tuple(v.lower() for v in values)
    return Condition("test", key, test, values, None, case_sensitive, min_confidence=min_confidence,
                     sources=sources)


def _regexes(conds: Iterable[Condition]) -> Iterator[re.Pattern[str]]:
    for c in conds:
        if c.regex is not None:
            yield c.regex.compiled
        yield from _regexes(c.children)


def _required_literals(pattern: Regex) -> frozenset[str] | None:
    """Lower-case strings one of which every match contains, or None when there is none.

    Used only to pick which rules to try for a device (a necessary condition), so any
    failure to analyse a pattern just means "always try it".
    """
    try:
        c = importlib.import_module("re._constants")
        p = importlib.import_module("re._parser")

        def walk(items: Any) -> frozenset[str] | None:
            best: frozenset[str] | None = None
            best_score = 0
            run: list[str] = []

            def consider(cand: frozenset[str] | None) -> None:
                nonlocal best, best_score
                if cand:
                    score = min(len(x) for x in cand)
                    if score > best_score:
                        best, best_score = cand, score

            for op, av in items:
                if op is c.LITERAL:
                    run.append(chr(av).lower())
                    continue
                if run:
                    consider(frozenset({"".join(run)}))
                    run = []
                if op is c.SUBPATTERN:
                    consider(walk(av[-1]))
                elif op is c.ATOMIC_GROUP:
                    consider(walk(av))
                elif op is c.BRANCH:
                    alternatives = [walk(alt) for alt in av[1]]
                    if all(alternatives):
                        consider(frozenset().union(*alternatives))  # type: ignore[arg-type]
                elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
                    if av[0] >= 1:
                        consider(walk(av[2]))
            if run:
                consider(frozenset({"".join(run)}))
            return best

        return walk(p.parse(pattern.pattern, pattern.flags))
    except Exception:  # noqa: BLE001 - a private parser: any surprise means "no filter"
        return None


_Keys = frozenset[tuple[str, str | None]]


def _keys_of(cond: Condition) -> tuple[_Keys, int] | None:
    """Index keys one of which a device must have for this condition to hold, and how
    selective they are; None when the condition cannot be indexed.

    Keys are (attribute, value) for `equals`, (attribute, "~literal") when a value must
    contain a literal, and (attribute, None) when the attribute only has to be present.
    """
    if cond.kind == "test":
        if cond.test == "equals":
            return frozenset((cond.attribute, v.lower()) for v in cond.values), 1000
        literals: frozenset[str] | None = None
        if cond.test in ("contains", "startswith", "endswith"):
            literals = frozenset(v.lower() for v in cond.values)
        elif cond.test == "matches" and cond.regex is not None:
            literals = _required_literals(cond.regex)
        if literals and all(literals):
            return (frozenset((cond.attribute, "~" + lit) for lit in literals),
                    min(len(lit) for lit in literals))
        return frozenset({(cond.attribute, None)}), 0
    if cond.kind == "any":
        keys: set[tuple[str, str | None]] = set()
        score = 1000
        for child in cond.children:
            sub = _keys_of(child)
            if sub is None:
                return None
            keys |= sub[0]
            score = min(score, sub[1])
        return frozenset(keys), score
    if cond.kind == "all":
        return _best_keys(cond.children)
    return None


def _best_keys(conds: Iterable[Condition]) -> tuple[_Keys, int] | None:
    best: tuple[_Keys, int] | None = None
    for cond in conds:
        found = _keys_of(cond)
        if found is not None and (best is None or found[1] > best[1]):
            best = found
    return best


def compile_rule(raw: Any, path: str | Path, position: int) -> Rule:
    """One rule from its YAML mapping; raises RuleError."""
    if not isinstance(raw, dict):
        raise RuleError(path, None, f"rule #{position} is not a mapping")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        raise RuleError(path, None, f"rule #{position} needs an id of letters, digits and . _ : - "
                        f"(got {rule_id!r})")

    def err(message: str) -> RuleError:
        return RuleError(path, rule_id, message)

    unknown = sorted(set(raw) - RULE_KEYS)
    if unknown:
        raise err(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(RULE_KEYS))})")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise err("enabled must be true or false")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise err("description must be text")
    if not enabled and set(raw) <= {"id", "enabled", "description"}:
        return Rule(rule_id, (), {}, 0.0, str(path), description, enabled=False)

    when = raw.get("when") or []
    if isinstance(when, dict):
        when = [when]
    if not isinstance(when, list):
        raise err("'when' must be a list of conditions")
    conditions = [_compile_condition(c, err) for c in when]
    if "any" in raw:
        alts = raw["any"]
        if not isinstance(alts, list) or not alts:
            raise err("'any' must be a non-empty list of conditions")
        conditions.append(Condition("any", children=tuple(_compile_condition(c, err) for c in alts)))
    if not conditions:
        raise err("needs at least one condition in 'when' or 'any'")

    sets_raw = raw.get("set")
    if not isinstance(sets_raw, dict) or not sets_raw:
        raise err(f"'set' must be a mapping of some of {', '.join(SETTABLE)}")
    sets: dict[str, Template] = {}
    for key, value in sets_raw.items():
        if key not in SETTABLE:
            raise err(f"cannot set {key!r} (settable: {', '.join(SETTABLE)})")
        sets[key] = _compile_template(value, err)
    if "type" in sets and sets["type"].is_literal:
        type_id = taxonomy.normalize_type(sets["type"].source)
        if type_id is None:
            raise err(f"unknown device type {sets['type'].source!r} (known: {', '.join(taxonomy.TYPES)})")
        sets["type"] = Template(type_id, (type_id,), True)

    def number(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise err(f"{what} must be a number above 0 and at most 1 (got {value!r})")
        return float(value)

    raw_confidence = raw.get("confidence")
    per_attribute: dict[str, float] = {}
    if isinstance(raw_confidence, dict):
        for key, value in raw_confidence.items():
            if key != "default" and key not in sets:
                raise err(f"confidence for {key!r}, which the rule does not set")
            per_attribute[str(key)] = number(value, f"confidence of {key!r}")
        if "default" not in per_attribute and set(per_attribute) != set(sets):
            raise err("a confidence mapping needs 'default' or a value for every attribute set")
        confidence = per_attribute.pop("default", max(per_attribute.values()))
    else:
        confidence = number(raw_confidence, "confidence")

    regexes = list(_regexes(conditions))
    max_groups = max((r.groups for r in regexes), default=0)
    named = frozenset(name for r in regexes for name in r.groupindex)
    for key, template in sets.items():
        for part in template.parts:
            if isinstance(part, str):
                continue
            group = part[0]
            if group.isdigit():
                if not regexes:
                    raise err(f"set {key}: {template.source!r} refers to ${group} but no condition "
                              "uses 'matches'")
                if int(group) > max_groups:
                    raise err(f"set {key}: {template.source!r} refers to group {group}, but the "
                              f"regular expressions have at most {max_groups}")
            elif group not in named:
                raise err(f"set {key}: {template.source!r} refers to ${{{group}}}, which no "
                          "regular expression names")

    attributes = {a for c in conditions for a in c.attributes()}
    return Rule(
        id=rule_id, conditions=tuple(conditions), sets=sets, confidence=confidence,
        confidences={attr: per_attribute.get(attr, confidence) for attr in sets},
        path=str(path), description=description, enabled=enabled,
        phase=2 if attributes & IDENTITY_ATTRIBUTES else 1,
        index_keys=keys[0] if (keys := _best_keys(conditions)) else None,
        regex_count=len(regexes), named_groups=named,
    )


def parse_rules(text: str, path: str | Path) -> list[Rule]:
    """The rules of one file's text; raises RuleError naming the file and the rule."""
    try:
        data = yamltext.load(text)
    except yaml.YAMLError as exc:
        raise RuleError(path, None, f"not valid YAML: {exc}") from None
    if data is None:
        return []
    if isinstance(data, dict):
        extra = sorted(set(data) - {"rules"})
        if extra:
            raise RuleError(path, None, f"unknown top-level key {extra[0]!r} (a rule file has 'rules:')")
        data = data.get("rules") or []
    if not isinstance(data, list):
        raise RuleError(path, None, "'rules' must be a list of rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for position, raw in enumerate(data, 1):
        rule = compile_rule(raw, path, position)
        if rule.id in seen:
            raise RuleError(path, rule.id, "the id is used twice in this file")
        seen.add(rule.id)
        rules.append(rule)
    return rules


def load_rule_file(path: str | Path) -> list[Rule]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(path, None, f"cannot read: {exc}") from None
    return parse_rules(text, path)


def _rule_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


def validate_rules(path: str | Path) -> list[RuleError]:
    """Every error of a rule file or of each file of a directory (for a `rules check` command)."""
    path = Path(path)
    files = _rule_files(path) if path.is_dir() else [path]
    errors: list[RuleError] = []
    for file in files:
        try:
            load_rule_file(file)
        except RuleError as exc:
            errors.append(exc)
    return errors


# ---------------------------------------------------------------- rule sets

class RuleSet:
    """Rules in evaluation order, indexed by the attribute (and value) they need."""

    def __init__(self, rules: Iterable[Rule], errors: Iterable[RuleError] = ()) -> None:
        self.rules = [r for r in rules if r.enabled]
        self.errors = list(errors)
        self.by_id = {r.id: r for r in self.rules}
        self.index: dict[int, dict[tuple[str, str | None], list[int]]] = {1: {}, 2: {}}
        self.always: dict[int, list[int]] = {1: [], 2: []}
        literals: dict[str, set[str]] = {}
        for i, rule in enumerate(self.rules):
            if rule.index_keys is None:
                self.always[rule.phase].append(i)
            else:
                for key in rule.index_keys:
                    self.index[rule.phase].setdefault(key, []).append(i)
                    attribute, value = key
                    if value is not None and value.startswith("~"):
                        literals.setdefault(attribute, set()).add(value[1:])
        # attribute -> literals that some rule needs in a value of that attribute
        self.literals: dict[str, tuple[str, ...]] = {a: tuple(sorted(v)) for a, v in literals.items()}

    def keys_for(self, attribute: str, lowers: Iterable[str]) -> set[tuple[str, str | None]]:
        """The index keys a device has through these (lower-cased) values of one attribute."""
        values = list(lowers)
        keys: set[tuple[str, str | None]] = {(attribute, None)}
        keys.update((attribute, v) for v in values)
        literals = self.literals.get(attribute)
        if literals:
            joined = "\x00".join(values)  # a literal never contains NUL: no false joins
            keys.update((attribute, "~" + lit) for lit in literals if lit in joined)
        return keys

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, phase: int, keys: Iterable[tuple[str, str | None]]) -> list[Rule]:
        """The rules of a phase that may hold for a device with these index keys, in order."""
        index = self.index[phase]
        picked = set(self.always[phase])
        for key in keys:
            hit = index.get(key)
            if hit:
                picked.update(hit)
        return [self.rules[i] for i in sorted(picked)]


def builtin_rule_files() -> list[tuple[str, str]]:
    """(name, text) of the rule files shipped with tapwatch, by name."""
    folder = resources.files("tapwatch.identify").joinpath("rules")
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith((".yaml", ".yml")) and entry.is_file():
            out.append((entry.name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def _builtin_rules() -> list[Rule]:
    """The shipped rules, compiled, from the cache when neither they nor this module changed."""
    files = builtin_rule_files()
    key = cache.key_of([cache.file_stamp(Path(__file__))] + [p for f in files for p in f])
    rules = cache.load("rules", key)
    if isinstance(rules, list):
        return rules
    rules = [r for name, text in files for r in parse_rules(text, f"tapwatch/identify/rules/{name}")]
    cache.store("rules", key, rules)
    return rules


def load_rules(user_dir: str | Path | None = None, *, builtin: bool = True,
               use_env: bool = True) -> RuleSet:
    """The built-in rules, then the user's (TAPWATCH_RULES_DIR or `user_dir`).

    A built-in file that does not compile raises RuleError (a bug in tapwatch). A broken
    user file is logged and skipped as a whole; its error is kept in RuleSet.errors. A
    user rule with the id of an earlier rule replaces it; `{id: ..., enabled: false}`
    switches one off.
    """
    ordered: dict[str, Rule] = {}
    if builtin:
        for rule in _builtin_rules():
            if rule.id in ordered:
                raise RuleError(rule.path, rule.id, f"the id is also used in {ordered[rule.id].path}")
            ordered[rule.id] = rule
    errors: list[RuleError] = []
    if user_dir is None and use_env:
        user_dir = os.environ.get(ENV_RULES_DIR) or None
    if user_dir is not None:
        directory = Path(user_dir)
        if not directory.is_dir():
            errors.append(RuleError(directory, None, "the rules directory does not exist"))
            log.error("identification rules: %s", errors[-1])
        else:
            for file in _rule_files(directory):
                try:
                    rules = load_rule_file(file)
                except RuleError as exc:
                    errors.append(exc)
                    log.error("identification rules: skipping %s", exc)
                    continue
                for rule in rules:
                    if rule.id in ordered:
                        log.info("identification rule %r of %s replaces the one in %s",
                                 rule.id, file, ordered[rule.id].path)
                        ordered.pop(rule.id)
                    ordered[rule.id] = rule
    return RuleSet(ordered.values(), errors)
