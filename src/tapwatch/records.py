"""Reading the tables other products export (EDR agent lists, CMDB, Meraki clients).

Shared by plan estimates (plans) and CMDB imports (integrations), so it lives outside both.

CSV (comma, semicolon or tab), JSON (a list, or an object holding one) and JSON Lines are
read into rows of normalised columns, each with the line it came from, so a bad row is
reported as FILE:LINE and the good rows are still used. Column names vary by product
("MAC Address", "macAddress", "mac"), so each field is found through a list of aliases.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_WS = re.compile(r"\s*")
_MAC_HEX = re.compile(r"[0-9a-f]{12}")
WRAPPERS = ("devices", "endpoints", "hosts", "machines", "agents", "clients", "resources", "items",
            "data", "value", "results", "records")


class FileError(ValueError):
    """A file that cannot be read at all (not CSV or JSON, no usable header)."""


@dataclass
class Row:
    line: int
    values: dict[str, str]  # canonical field -> text ('' when absent)


@dataclass
class Table:
    path: str
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "file:line: message"

    def error(self, line: int, message: str) -> None:
        self.errors.append(f"{self.path}:{line}: {message}")


def norm_key(name: str) -> str:
    """A column name folded for matching: products differ in case and punctuation ("MAC Address")."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def canonical_mac(text: str) -> str | None:
    """'00-1A-2B-3C-4D-5E', '001a.2b3c.4d5e', '001A2B3C4D5E' -> '00:1a:2b:3c:4d:5e'; None if not a MAC.

    Exports write MACs in every vendor's style; callers word their own error for a bad one.
    """
    hexed = re.sub(r"[:\-. ]", "", text.strip().lower())
    if not _MAC_HEX.fullmatch(hexed):
        return None
    return ":".join(hexed[i:i + 2] for i in range(0, 12, 2))


def normalize_mac(text: str) -> str:
    """The canonical form of a MAC (see `canonical_mac`); ValueError if it is not one."""
    mac = canonical_mac(text)
    if mac is None:
        raise ValueError(f"malformed MAC address {text.strip()[:40]!r}")
    return mac


def normalize_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip().split("%")[0]))
    except ValueError:
        raise ValueError(f"malformed IP address {text.strip()[:60]!r}") from None


def split_list(text: str) -> list[str]:
    """A cell holding several addresses ('a, b' or 'a;b' or a JSON list rendered as text)."""
    return [p for p in re.split(r"[,;\s\[\]\"']+", text or "") if p]


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _array(text: str, pos: int) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    pos += 1
    while True:
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text) or text[pos] == "]":
            return
        value, end = decoder.raw_decode(text, pos)
        yield pos, value
        pos = _WS.match(text, end).end()  # type: ignore[union-attr]
        if pos < len(text) and text[pos] == ",":
            pos += 1


def _object_list(text: str, pos: int, key: str) -> Iterator[tuple[int, Any]]:
    """The items of `key`'s list inside the object at `pos`, with their positions."""
    decoder = json.JSONDecoder()
    pos += 1
    while True:
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text) or text[pos] == "}":
            return
        name, pos = decoder.raw_decode(text, pos)
        pos = _WS.match(text, pos).end() + 1  # type: ignore[union-attr]  # the ':'
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if name == key:
            yield from _array(text, pos)
            return
        _, pos = decoder.raw_decode(text, pos)
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if pos < len(text) and text[pos] == ",":
            pos += 1


def _json_records(text: str, table: Table) -> Iterator[tuple[int, Any]]:
    try:
        top = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise FileError(f"{table.path}:{e.lineno}: not valid JSON ({e.msg})") from None
        for number, line in enumerate(text.splitlines(), 1):  # JSON Lines
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as err:
                    table.error(number, f"not valid JSON ({err.msg})")
        return
    start = _WS.match(text).end()  # type: ignore[union-attr]
    if isinstance(top, list):
        for pos, value in _array(text, start):
            yield _line(text, pos), value
        return
    if isinstance(top, dict):
        keys = [k for k in WRAPPERS if isinstance(top.get(k), list)]
        keys += [k for k, v in top.items() if isinstance(v, list) and k not in keys]
        if keys:
            for pos, value in _object_list(text, start, keys[0]):
                yield _line(text, pos), value
            return
        yield 1, top
        return
    raise FileError(f"{table.path}:1: JSON holds no list of records")


def _flatten(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(_flatten(v) for v in value)
    return str(value).strip()


def read_table(path: str | Path, aliases: dict[str, tuple[str, ...]]) -> Table:
    """Read `path` into rows of the canonical fields named by `aliases` (field -> column names)."""
    path = Path(path)
    table = Table(str(path))
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise FileError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise FileError(f"{path}: not UTF-8 text (byte {e.start})") from None
    lookup = {norm_key(a): canon for canon, names in aliases.items() for a in (canon, *names)}
    stripped = text.lstrip()
    if path.suffix.lower() in (".json", ".jsonl", ".ndjson") or stripped[:1] in ("[", "{"):
        for line, record in _json_records(text, table):
            if not isinstance(record, dict):
                table.error(line, "a record is not a JSON object")
                continue
            values = {canon: "" for canon in aliases}
            for key, value in record.items():
                canon = lookup.get(norm_key(str(key)))
                if canon and not values[canon]:
                    values[canon] = _flatten(value)
            table.rows.append(Row(line, values))
        return table
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    header = next(reader, None)
    columns = [lookup.get(norm_key(h)) for h in (header or [])]
    if not any(columns):
        raise FileError(f"{path}:1: no known column in the header (expected some of: "
                        f"{', '.join(aliases)})")
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            table.error(reader.line_num, f"{len(cells)} cells but the header has {len(columns)}")
            continue
        values = {canon: "" for canon in aliases}
        for canon, cell in zip(columns, cells, strict=False):
            if canon and not values[canon]:
                values[canon] = cell.strip()
        table.rows.append(Row(reader.line_num, values))
    return table
