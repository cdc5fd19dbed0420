"""Firmware versions and affected-version ranges, as vendors and advisories write them.

`packaging.version` only understands PEP 440, and firmware is not PEP 440: `V4.2.3`,
`FW 20.11`, `2.1.0.18`, `V17 Update 5`, `6.9.2 CU01`, `3.44W`. A version here is its
numeric release (compared number by number, `4.2` == `4.2.0`) followed by qualifiers:
pre-release words (alpha, beta, rc) sort before the bare release, everything else
(SP, Update, Hotfix, a letter suffix) after it.

Ranges come as `vers:` specifiers (`vers:all/>=V4.5.0|<V4.5.2`, sometimes without the
`|`), NVD start/end bounds, or CISA's free text (`All versions < V2.1`, `>= V5.0 and
< V6.4`, `V8.3.0.1, V8.6.0 and V8.7.0`, `prior to 3.0`). Text with words we cannot read
(`All versions with Function State (FS) < 11`) is not guessed at: `parse_range` returns
None and the matcher says it could only match the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache, total_ordering

PRE_RELEASE = frozenset({"alpha", "a", "beta", "b", "rc", "pre", "preview", "dev"})
_PREFIX = re.compile(
    r"^(?:firmware|version|release|ver|rev|fw|sw|v|r(?=\d))[\s_.:-]*", re.IGNORECASE
)
_RELEASE = re.compile(r"^(\d+(?:[._]\d+)*)(.*)$", re.DOTALL)
_TAIL_TOKEN = re.compile(r"[a-z]+|\d+")
_RELEASE_WIDTH = 12


@total_ordering
@dataclass(frozen=True)
class Version:
    """A parsed firmware version; compare with <, ==; `text` keeps what was written."""

    release: tuple[int, ...]
    tail: tuple[tuple[int, str, int], ...]  # (rank, word, number); rank -1 pre, +1 post
    text: str

    def _key(self) -> tuple[tuple[int, ...], tuple[tuple[int, str, int], ...]]:
        release = self.release + (0,) * max(0, _RELEASE_WIDTH - len(self.release))
        return release, self.tail or ((0, "", 0),)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=65536)
def parse_version(text: str | None) -> Version | None:
    """A Version from firmware text, or None when it holds no version number."""
    if not text:
        return None
    raw = text.strip()
    rest = raw
    for _ in range(3):  # "Version V4.4", "FW_V2.1"
        stripped = _PREFIX.sub("", rest, count=1)
        if stripped == rest:
            break
        rest = stripped
    m = _RELEASE.match(rest)
    if not m:
        return None
    release = tuple(int(p) for p in re.split(r"[._]", m.group(1)))
    tokens = _TAIL_TOKEN.findall(m.group(2).lower())
    tail: list[tuple[int, str, int]] = []
    i = 0
    while i < len(tokens):
        word, number = "", 0
        if tokens[i].isdigit():
            number = int(tokens[i])
            i += 1
        else:
            word = tokens[i]
            i += 1
            if i < len(tokens) and tokens[i].isdigit():
                number = int(tokens[i])
                i += 1
        if word == "x" and number == 0:  # "2.001.x": a wildcard, not a qualifier
            continue
        tail.append((-1 if word in PRE_RELEASE else 1, word, number))
    return Version(release, tuple(tail), raw)


@dataclass(frozen=True)
class Interval:
    low: Version | None = None
    low_inclusive: bool = True
    high: Version | None = None
    high_inclusive: bool = False

    def contains(self, v: Version) -> bool:
        if self.low is not None and (v < self.low or (v == self.low and not self.low_inclusive)):
            return False
        if self.high is not None and (v > self.high or (v == self.high and not self.high_inclusive)):
            return False
        return True


@dataclass(frozen=True)
class VersionRange:
    """A union of intervals; no intervals at all means "every version"."""

    intervals: tuple[Interval, ...]
    text: str

    @property
    def all_versions(self) -> bool:
        return not self.intervals

    def contains(self, v: Version) -> bool:
        return self.all_versions or any(i.contains(v) for i in self.intervals)


ALL = VersionRange((), "all versions")

_VERSION = (
    r"(?:(?:version|firmware|fw|v|r(?=\d))[\s_]*)?\d+(?:[._]\d+)*(?:\(\d+\))?[a-z0-9]*(?:[._-][a-z]*\d+[a-z0-9]*)*"
    r"(?:\s*(?:sp|service\s+pack|update|upd|hotfix|hf|cu|patch|build)\s*\d+)*"
)
_LEXER = re.compile(
    rf"(?P<op>>=|<=|=>|=<|==|!=|<|>|=)|(?P<version>{_VERSION})|(?P<word>[a-z]+)|(?P<sep>[,;|&+])"
    r"|(?P<dash>\s-\s)|(?P<space>\s+)|(?P<other>.)",
    re.IGNORECASE,
)
_PHRASES = (  # free text to operators, longest first
    (re.compile(r"\bup\s+to\s+and\s+including\b"), "<="),
    (re.compile(r"\b(?:prior\s+to|before|earlier\s+than|older\s+than|lower\s+than|below)\b"), "<"),
    (re.compile(r"\bup\s+to\b"), "<="),
    (re.compile(r"\b(?:and|or)\s+(?:earlier|prior|older|lower|below|before)\b"), " @le "),
    (re.compile(r"\b(?:and|or)\s+(?:later|newer|higher|above|after|greater)\b"), " @ge "),
    (re.compile(r"\bthrough\b"), " - "),
)
_NOISE = frozenset({"all", "versions", "version", "and", "or", "firmware", "fw", "only", "to",
                    "from", "is", "are", "the", "affected", "including", "included", "inclusive",
                    "x", "v", "of", "released", "release", "releases", "any", "software"})


@lru_cache(maxsize=65536)
def parse_range(text: str | None) -> VersionRange | None:
    """The versions an advisory says are affected, or None when the text cannot be read."""
    if text is None:
        return None
    raw = text.strip()
    body = raw
    if body.lower().startswith("vers:"):
        _, _, body = body[5:].partition("/")
        if body.strip() in ("*", ""):
            return ALL
    # notes in parentheses go ("(incl. SIPLUS variants)"); "15.2(6)E2" keeps its "(6)"
    body = re.sub(r"\([^)]*[a-z]{2}[^)]*\)", " ", body.lower().replace("_", " "))
    for pattern, replacement in _PHRASES:
        body = pattern.sub(replacement, body)
    body = body.replace("@le", "\x01").replace("@ge", "\x02")
    if body.strip() in ("*", "all", "all versions", "any", "any version"):
        return ALL
    constraints: list[tuple[str, Version]] = []
    op: str | None = None
    pending_dash = False
    for m in _LEXER.finditer(body):
        kind = m.lastgroup
        value = m.group()
        if kind == "op":
            op = {"=>": ">=", "=<": "<=", "==": "="}.get(value, value)
        elif kind == "version":
            v = parse_version(value)
            if v is None:
                return None
            if pending_dash and constraints and constraints[-1][0] == "=":
                constraints[-1] = (">=", constraints[-1][1])
                constraints.append(("<=", v))
                pending_dash = False
            else:
                constraints.append((op or "=", v))
            op = None
        elif kind == "other" and value == "\x01" and constraints:
            constraints[-1] = ("<=", constraints[-1][1])
        elif kind == "other" and value == "\x02" and constraints:
            constraints[-1] = (">=", constraints[-1][1])
        elif kind == "dash":
            pending_dash = True
        elif kind == "word" and value not in _NOISE:
            return None  # words we do not understand: do not guess
        elif kind == "other" and value not in ".:*'\"":
            return None
    if op == "!=" or any(o == "!=" for o, _ in constraints):
        return None
    if not constraints:
        return ALL if re.search(r"\ball\b|\*", body) else None
    return VersionRange(_intervals(constraints), raw)


def _intervals(constraints: list[tuple[str, Version]]) -> tuple[Interval, ...]:
    """Pair lower and upper bounds in version order (the vers algorithm, forgiving of order)."""
    out: list[Interval] = []
    low: tuple[Version, bool] | None = None
    for op, v in sorted(constraints, key=lambda c: (c[1], c[0] not in (">", ">="))):
        if op in (">", ">="):
            if low is not None:
                out.append(Interval(low[0], low[1], None))
            low = (v, op == ">=")
        elif op in ("<", "<="):
            out.append(Interval(low[0] if low else None, low[1] if low else True, v, op == "<="))
            low = None
        else:
            if low is not None:
                out.append(Interval(low[0], low[1], None))
                low = None
            out.append(Interval(v, True, v, True))
    if low is not None:
        out.append(Interval(low[0], low[1], None))
    return tuple(out)


def bounds_range(start_incl: str | None = None, start_excl: str | None = None,
                 end_incl: str | None = None, end_excl: str | None = None,
                 exact: str | None = None) -> VersionRange | None:
    """A range from NVD-style bounds (or one exact version); None if a bound is unreadable."""
    text_parts: list[str] = []
    if exact is not None:
        v = parse_version(exact)
        return VersionRange((Interval(v, True, v, True),), exact) if v else None
    low = high = None
    low_incl, high_incl = True, False
    for value, incl, is_low in ((start_incl, True, True), (start_excl, False, True),
                                (end_incl, True, False), (end_excl, False, False)):
        if not value:
            continue
        v = parse_version(value)
        if v is None:
            return None
        if is_low:
            low, low_incl = v, incl
            text_parts.append(f"{'>=' if incl else '>'} {value}")
        else:
            high, high_incl = v, incl
            text_parts.append(f"{'<=' if incl else '<'} {value}")
    if low is None and high is None:
        return ALL
    return VersionRange((Interval(low, low_incl, high, high_incl),), " and ".join(text_parts))
