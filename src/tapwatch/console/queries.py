"""Reading the inventory for the console: filtered, sorted and paged, shared by API and pages.

Every filter value is bound as a parameter (never pasted into SQL), and every sort key and
group-by column comes from a fixed table, so hostile query strings can only fail validation.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, func, literal, or_, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.visitors import InternalTraversal

from tapwatch.store.alert_models import Alert
from tapwatch.store.models import SEARCH_COLUMNS, Address, Device

MAX_PAGE_SIZE = 500
CSV_MAX_ROWS = 30_000
# a free-text search counts its matches up to here and then says "more than": past this
# many, an exact count costs a scan of every match for a number nobody pages through
SEARCH_COUNT_CAP = 1000
# a listing reads every column of devices that the device JSON shows (not the keys, the
# person's overrides or the row's own timestamps), into plain named tuples: attribute access
# as on a Device, at a fraction of the cost of mapped objects or SQLAlchemy rows
LISTED = [c for c in Device.__table__.c if c.name not in ("key_mac", "key_ip", "overrides", "created_at",
                                                         "updated_at")]
ListedDevice = namedtuple("ListedDevice", [c.name for c in LISTED])  # type: ignore[misc]
ListedAddress = namedtuple("ListedAddress", ["device_id", "ip", "packets_sent", "packets_received"])

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

    q: str | None = None  # free text: name, IP, MAC, vendor, model, OS (SEARCH_COLUMNS)
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
            escaped = _escape_like(self.q.strip())
            like, plain = f"%{escaped}%", escaped == self.q.strip()
            out.append(or_(*(ContainsText(getattr(Device, col), like, plain) for col in SEARCH_COLUMNS)))
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
    lower(pattern)` is what it computes, with the pattern lowered once, and it is the
    expression the trigram index ix_devices_search (migration 0012x) answers. SQLite's LIKE already
    ignores ASCII case, the only case its lower() folds, so plain LIKE gives the same rows
    as lower() on both sides without lowering every value; and when the text has nothing to
    escape (`plain`) it leaves out the ESCAPE clause, which costs SQLite's LIKE some 10 %.
    """

    type = Boolean()
    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("pattern", InternalTraversal.dp_clauseelement),
                           ("plain", InternalTraversal.dp_boolean)]

    def __init__(self, column: Any, pattern: str, plain: bool = False) -> None:
        self.column = column
        self.pattern = literal(pattern)
        self.plain = plain

    def self_group(self, against: Any = None) -> Any:
        # already a predicate (a LIKE): not an SQLite "boolean column", which would read `... = 1`
        return self


@compiles(ContainsText)
def _contains_default(element: ContainsText, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.ilike(element.pattern, escape="\\"), **kw)


@compiles(ContainsText, "postgresql")
def _contains_postgresql(element: ContainsText, compiler: SQLCompiler, **kw: Any) -> str:
    expr = func.lower(element.column).like(func.lower(element.pattern), escape="\\")
    return compiler.process(expr, **kw)


@compiles(ContainsText, "sqlite")
def _contains_sqlite(element: ContainsText, compiler: SQLCompiler, **kw: Any) -> str:
    like = element.column.like(element.pattern) if element.plain else \
        element.column.like(element.pattern, escape="\\")
    return compiler.process(like, **kw)


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


def order(sort: str, direction: str, *, group: str | None = None, no_index: bool = False) -> list[Any]:
    """ORDER BY terms for a sort key (then id, so pages never overlap), `group`'s column first.

    `no_index` writes each column but the id as `+column` (a no-op in SQLite) so that SQLite
    reads the table and sorts rather than walking the column's index (see _search_page).
    """
    if sort not in SORTS:
        raise QueryError(f"unknown sort {sort[:40]!r} (one of {', '.join(SORTS)})")
    if direction not in ("asc", "desc"):
        raise QueryError("order must be asc or desc")

    def key(col: Any) -> Any:
        return UnaryExpression(col, operator=operators.custom_op("+"), type_=col.type) if no_index else col

    col = key(SORTS[sort]) if sort != "id" else Device.id
    first = col.desc() if direction == "desc" else col.asc()
    terms = [first if sort in NOT_NULL_SORTS else first.nulls_last(), Device.id]
    if group is not None:
        # grouping sorts by the group column first so each group's rows sit together
        terms.insert(0, key(group_column(group)).asc().nulls_last())
    return terms


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
    # count(*), not count(id): the same number (ids are never NULL) without reading each id,
    # and SQLite answers an unfiltered count(*) from the b-tree's own counts
    total = session.scalar(select(func.count()).select_from(model).where(*conds)) or 0
    return total, rows


@dataclass
class DevicePage:
    """One page of the inventory.

    `rows` are ListedDevice tuples rather than mapped objects: a page is only read, and 500
    Device objects cost more than the query. `exact` is False when a free-text search
    stopped counting: more than `total` devices match.
    """

    total: int
    exact: bool
    rows: list[Any]


def page_devices(session: Session, flt: DeviceFilter, sort: str = "id", direction: str = "asc",
                 page: int = 1, page_size: int = 50, group: str | None = None) -> DevicePage:
    """The devices of one page, with how many match; `group` sorts by that column first."""
    if page < 1:
        raise QueryError("page starts at 1")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise QueryError(f"page_size must be 1 to {MAX_PAGE_SIZE}")
    if flt.q:
        return _search_page(session, flt, sort, direction, group, page, page_size)
    conds = flt.conditions()
    offset = (page - 1) * page_size
    # the page's ids first, then their rows: skipping `offset` rows in sort order reads only
    # the sort column's index, not every skipped row (SQLite, for one, reads them in full)
    ids = list(session.scalars(select(Device.id).where(*conds).order_by(*order(sort, direction, group=group))
                               .offset(offset).limit(page_size)))
    rows = rows_by_id(session, ids)
    if len(ids) < page_size and (ids or offset == 0):
        return DevicePage(offset + len(ids), True, rows)  # the page itself tells the total
    return DevicePage(_count(session, conds), True, rows)


def _search_page(session: Session, flt: DeviceFilter, sort: str, direction: str, group: str | None,
                 page: int, page_size: int) -> DevicePage:
    """A free-text search's page: one pass over the matches gives the page and the count.

    A substring match has no ordered index, so the page's rows and the COUNT would each
    read every candidate. Instead the ids of the first `reach` matches, in page order, give
    both the page and a count that is exact up to `reach`; the page's rows are then read
    by id. Where text is in most rows, the pass stops at `reach`; where it is rare, the
    trigram index (PostgreSQL) or one scan (SQLite) finds it (see _text_scan).
    """
    offset = (page - 1) * page_size
    reach = max(SEARCH_COUNT_CAP, offset + page_size)
    order_by = order(sort, direction, group=group, no_index=_text_scan(session))
    ids = list(session.scalars(select(Device.id).where(*flt.conditions()).order_by(*order_by)
                               .limit(reach + 1)))
    exact = len(ids) <= reach
    rows = rows_by_id(session, ids[offset:offset + page_size])
    return DevicePage(len(ids) if exact else reach, exact, rows)


def _count(session: Session, conds: list[Any]) -> int:
    """Devices matching `conds`, as count(*) (see page_rows)."""
    return session.scalar(select(func.count()).select_from(Device).where(*conds)) or 0


def _text_scan(session: Session) -> bool:
    """Ready `session` for a free-text search; True when its sort must not walk an index.

    PostgreSQL plans each search for its text: a plan cached for "some text" cannot know
    whether the trigram index or the sort order finds the matches sooner. SQLite has no
    index for the text, so it scans, and sorting what the scan found is bounded where
    walking the sort column's index, reading each row out of order, is not.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    return dialect == "sqlite"


def _listed(session: Session, q: Any) -> list[Any]:
    return [ListedDevice._make(r) for r in session.execute(q)]


def rows_by_id(session: Session, ids: list[int]) -> list[Any]:
    """The listed devices with these ids, in the order of `ids`."""
    if not ids:
        return []
    found = {r.id: r for r in _listed(session, select(*LISTED).where(Device.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def device_ips(session: Session, device_ids: list[int]) -> dict[int, list[Any]]:
    """Each device's addresses: only the columns a listing shows (ip, packets each way)."""
    out: dict[int, list[Any]] = {}
    for k in range(0, len(device_ids), 500):  # an IN list well below every database's limit
        part = device_ids[k:k + 500]
        q = select(*(getattr(Address, f) for f in ListedAddress._fields)).where(Address.device_id.in_(part))
        for a in map(ListedAddress._make, session.execute(q)):
            out.setdefault(a.device_id, []).append(a)
    return out


def export_devices(session: Session, flt: DeviceFilter, sort: str = "id",
                   direction: str = "asc") -> tuple[int, list[Any]]:
    """The filtered view for CSV export: at most CSV_MAX_ROWS (ListedDevice), with the full count."""
    no_index = bool(flt.q) and _text_scan(session)
    total = _count(session, flt.conditions())
    q = (select(*LISTED).where(*flt.conditions()).order_by(*order(sort, direction, no_index=no_index))
         .limit(CSV_MAX_ROWS))
    return total, _listed(session, q)


def group_column(group: str) -> Any:
    if group not in GROUPS:
        raise QueryError(f"unknown group-by {group[:40]!r} (one of {', '.join(GROUPS)})")
    return GROUPS[group]


def group_counts(session: Session, flt: DeviceFilter, group: str) -> list[tuple[Any, int]]:
    col = group_column(group)
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
