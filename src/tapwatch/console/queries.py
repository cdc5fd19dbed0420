"""Reading the inventory for the console: filtered, sorted and paged, shared by API and pages.

Every filter value is bound as a parameter (never pasted into SQL), and every sort key and
group-by column comes from a fixed table, so hostile query strings can only fail validation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Select, func, literal, or_, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from tapwatch.store.alert_models import Alert
from tapwatch.store.models import Device

MAX_PAGE_SIZE = 500
CSV_MAX_ROWS = 30_000

SORTS: dict[str, Any] = {
    "id": Device.id, "ip": Device.ip, "mac": Device.mac, "name": Device.name, "type": Device.type,
    "class": Device.device_class, "vendor": Device.vendor, "site": Device.site,
    "zone": Device.zone, "purdue_level": Device.purdue_level, "first_seen": Device.first_seen,
    "last_seen": Device.last_seen, "packets": Device.packets_sent + Device.packets_received,
    "importance": Device.importance,
}
# sort keys that are never NULL: ordering them "NULLS LAST" changes nothing, and leaving it
# out lets PostgreSQL walk their index backwards for a descending sort instead of sorting
NOT_NULL_SORTS = frozenset({"id", "first_seen", "last_seen", "packets", "importance"})
GROUPS: dict[str, Any] = {
    "type": Device.type, "class": Device.device_class, "vendor": Device.vendor,
    "site": Device.site, "zone": Device.zone, "purdue_level": Device.purdue_level,
    "authorized": Device.authorized,
}


class QueryError(ValueError):
    """A filter, sort or page the console cannot honour; the message names it."""


@dataclass
class DeviceFilter:
    """The inventory filters, as both the API query string and the inventory page use them."""

    q: str | None = None  # free text: name, IP, MAC, vendor, model
    type: str | None = None
    device_class: str | None = None  # IT, IoT, OT, or "none"
    vendor: str | None = None
    site: str | None = None
    zone: str | None = None
    authorized: bool | None = None
    new: bool | None = None
    seen_after: datetime | None = None  # last activity on or after
    seen_before: datetime | None = None  # last activity before (finds inactive devices)

    def conditions(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.q:
            like = f"%{_escape_like(self.q.strip())}%"
            out.append(or_(*(ContainsText(col, like) for col in (
                Device.name, Device.ip, Device.mac, Device.vendor, Device.model, Device.os))))
        for value, col in ((self.type, Device.type), (self.vendor, Device.vendor),
                           (self.site, Device.site), (self.zone, Device.zone)):
            if value:
                out.append(col.is_(None) if value == "none" else col == value)
        if self.device_class:
            out.append(Device.device_class.is_(None) if self.device_class == "none"
                       else Device.device_class == self.device_class)
        if self.authorized is not None:
            out.append(Device.authorized.is_(self.authorized))
        if self.new is not None:
            out.append(Device.is_new.is_(self.new))
        if self.seen_after:
            out.append(Device.last_seen >= self.seen_after)
        if self.seen_before:
            out.append(Device.last_seen < self.seen_before)
        return out

    def as_params(self) -> dict[str, str]:
        """The filter as query-string parameters (for links: paging, export, group-by)."""
        names = {"device_class": "class"}
        out: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or v == "":
                continue
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, datetime):
                v = v.date().isoformat() if v.time() == datetime.min.time() else v.isoformat()
            out[names.get(f.name, f.name)] = str(v)
        return out


class ContainsText(ColumnElement[bool]):
    """`column ILIKE pattern` (escape character backslash), written the fastest exact way.

    PostgreSQL's ILIKE lowers the pattern again for every row; `lower(column) LIKE
    lower(pattern)` is what it computes, with the pattern lowered once. SQLite's LIKE already
    ignores ASCII case, the only case its lower() folds, so plain LIKE gives the same rows
    as lower() on both sides without lowering every value.
    """

    type = Boolean()
    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("pattern", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: Any, pattern: str) -> None:
        self.column = column
        self.pattern = literal(pattern)


@compiles(ContainsText)
def _contains_default(element: ContainsText, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.ilike(element.pattern, escape="\\"), **kw)


@compiles(ContainsText, "postgresql")
def _contains_postgresql(element: ContainsText, compiler: SQLCompiler, **kw: Any) -> str:
    expr = func.lower(element.column).like(func.lower(element.pattern), escape="\\")
    return compiler.process(expr, **kw)


@compiles(ContainsText, "sqlite")
def _contains_sqlite(element: ContainsText, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.like(element.pattern, escape="\\"), **kw)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def parse_bool(name: str, value: str | None) -> bool | None:
    if value in (None, "", "any"):
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise QueryError(f"{name} must be true or false, not {value[:40]!r}")


def parse_time(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name} must be an ISO date or time, not {value[:40]!r}") from None
    return dt if dt.tzinfo is None else dt.astimezone(UTC).replace(tzinfo=None)


def _text(name: str, value: str | None, limit: int = 255) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > limit:
        raise QueryError(f"{name} is longer than {limit} characters")
    return value


def make_filter(params: dict[str, str | None]) -> DeviceFilter:
    """A DeviceFilter from query parameters, refusing bad values by name."""
    return DeviceFilter(
        q=_text("q", params.get("q")), type=_text("type", params.get("type"), 64),
        device_class=_check_class(params.get("class")), vendor=_text("vendor", params.get("vendor")),
        site=_text("site", params.get("site")), zone=_text("zone", params.get("zone")),
        authorized=parse_bool("authorized", params.get("authorized")),
        new=parse_bool("new", params.get("new")),
        seen_after=parse_time("seen_after", params.get("seen_after")),
        seen_before=parse_time("seen_before", params.get("seen_before")),
    )


def _check_class(value: str | None) -> str | None:
    if not value:
        return None
    if value not in ("IT", "IoT", "OT", "none"):
        raise QueryError(f"class must be IT, IoT, OT or none, not {value[:40]!r}")
    return value


def _base(flt: DeviceFilter) -> Select[Any]:
    return select(Device).where(*flt.conditions())


def order(sort: str, direction: str) -> list[Any]:
    if sort not in SORTS:
        raise QueryError(f"unknown sort {sort[:40]!r} (one of {', '.join(SORTS)})")
    if direction not in ("asc", "desc"):
        raise QueryError("order must be asc or desc")
    col = SORTS[sort]
    first = col.desc() if direction == "desc" else col.asc()
    return [first if sort in NOT_NULL_SORTS else first.nulls_last(), Device.id]


def page_rows(session: Session, model: Any, conds: list[Any], order_by: list[Any], page: int,
              page_size: int) -> tuple[int, list[Any]]:
    """(total matching `conds`, the rows of this page in `order_by` order).

    Every paged list (devices, alerts, events, connections, audit) counts and slices alike,
    so the total always describes the same filter as the page. A page that is not full (and
    not past the end) already tells the total; only otherwise does the COUNT, which reads
    every matching row, run.
    """
    offset = (page - 1) * page_size
    q = select(model).where(*conds).order_by(*order_by).offset(offset).limit(page_size)
    rows = list(session.scalars(q))
    if len(rows) < page_size and (rows or offset == 0):
        return offset + len(rows), rows
    total = session.scalar(select(func.count(model.id)).where(*conds)) or 0
    return total, rows


def page_devices(session: Session, flt: DeviceFilter, sort: str = "id", direction: str = "asc",
                 page: int = 1, page_size: int = 50) -> tuple[int, list[Device]]:
    """(total matching, the devices of this page)."""
    if page < 1:
        raise QueryError("page starts at 1")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise QueryError(f"page_size must be 1 to {MAX_PAGE_SIZE}")
    return page_rows(session, Device, flt.conditions(), order(sort, direction), page, page_size)


def export_devices(session: Session, flt: DeviceFilter, sort: str = "id",
                   direction: str = "asc") -> tuple[int, list[Device]]:
    """The filtered view for CSV export: at most CSV_MAX_ROWS, with the full count."""
    total = session.scalar(select(func.count(Device.id)).where(*flt.conditions())) or 0
    q = _base(flt).order_by(*order(sort, direction)).limit(CSV_MAX_ROWS)
    return total, list(session.scalars(q))


def group_counts(session: Session, flt: DeviceFilter, group: str) -> list[tuple[Any, int]]:
    if group not in GROUPS:
        raise QueryError(f"unknown group-by {group[:40]!r} (one of {', '.join(GROUPS)})")
    col = GROUPS[group]
    q = (select(col, func.count(Device.id)).where(*flt.conditions()).group_by(col)
         .order_by(func.count(Device.id).desc()))
    return [(v, n) for v, n in session.execute(q)]


def distinct_values(session: Session, col: Any, limit: int = 200) -> list[str]:
    """Values for a filter's drop-down: the first `limit` distinct values, in order.

    A SELECT DISTINCT reads every row; this hops from one value to the next through the
    column's index (one probe per value), so it costs the same for 1,000 devices or 1 M.
    `col` is a column of a fixed table, never a caller's text.
    """
    name, table = col.property.columns[0].name, col.property.columns[0].table.name
    q = text(f"""
        WITH RECURSIVE hop(v, n) AS (
            SELECT (SELECT min({name}) FROM {table}), 1
            UNION ALL
            SELECT (SELECT min({name}) FROM {table} WHERE {name} > hop.v), hop.n + 1
            FROM hop WHERE hop.v IS NOT NULL AND hop.n < :limit
        )
        SELECT v FROM hop WHERE v IS NOT NULL ORDER BY v""")  # noqa: S608
    return [v for v in session.scalars(q, {"limit": limit})]


def open_alert_counts(session: Session) -> dict[str, int]:
    q = (select(Alert.severity, func.count(Alert.id)).where(Alert.status != "closed")
         .group_by(Alert.severity))
    return {sev: n for sev, n in session.execute(q)}
