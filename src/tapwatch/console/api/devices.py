"""Devices: list (filter, sort, page), CSV export, get, edit, authorize, delete, merge."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from tapwatch.console import queries, rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, get_or_404, tx
from tapwatch.store import device_admin, evidence, inventory
from tapwatch.store.models import Address, Device

router = APIRouter(tags=["devices"])

CSV_COLUMNS = ("id", "ip", "mac", "name", "type", "class", "vendor", "model", "os", "firmware",
               "purdue_level", "authorized", "new", "importance", "programming_device", "site",
               "zone", "location", "description", "tags", "protocols", "packets_sent",
               "packets_received", "first_seen", "last_seen")


class FilterParams(BaseModel):
    """The inventory filters (see tapwatch.console.queries.DeviceFilter)."""

    q: str | None = Field(None, max_length=255, description="free text: name, IP, MAC, vendor, model, OS")
    type: str | None = Field(None, max_length=64)
    class_: str | None = Field(None, alias="class", description="IT, IoT, OT or none")
    vendor: str | None = Field(None, max_length=255)
    site: str | None = Field(None, max_length=255)
    zone: str | None = Field(None, max_length=255)
    authorized: str | None = Field(None, description="true or false")
    new: str | None = Field(None, description="true or false")
    seen_after: str | None = Field(None, description="last activity on or after (ISO date/time)")
    seen_before: str | None = Field(None, description="last activity before (ISO date/time)")

    def to_filter(self) -> queries.DeviceFilter:
        raw = self.model_dump(by_alias=True)
        return queries.make_filter(raw)


def rows_json(session: Any, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The device JSON of listed rows (queries.page_devices), built without ORM objects.

    A row of the devices table and a row of (ip, packets) per address carry every attribute
    device_json reads, so a 500-device page costs dicts, not mapped objects.
    """
    addresses = queries.device_ips(session, [r.id for r in rows])
    return [inventory.device_json(cast(Device, r), cast(list[Address], addresses.get(r.id, [])))
            for r in rows]


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def rows_json_text(session: Any, rows: Sequence[Any]) -> str:
    """rows_json as one JSON array, each device written out as soon as it is built.

    Text is not tracked by Python's garbage collector: a 500-device page then never holds
    500 dicts (and their lists) at once, so far fewer objects outlive a young collection,
    and the full collections they would bring on (~100 ms over the console's heap) are rarer.
    """
    addresses = queries.device_ips(session, [r.id for r in rows])
    return "[" + ",".join(_encode(inventory.device_json(cast(Device, r), cast(list[Address],
                                                                               addresses.get(r.id, []))))
                          for r in rows) + "]"


class DeviceList(BaseModel):
    """A page of devices (the OpenAPI shape; the route writes the JSON itself)."""

    total: int = Field(description="devices matching; when total_exact is false, more than this match")
    total_exact: bool = Field(description="false when a text search (q=) stopped counting: more "
                                          "than `total` devices match")
    page: int
    page_size: int
    devices: list[dict[str, Any]]


@router.get("/devices", response_model=DeviceList)
def list_devices(
    request: Request,
    filters: Annotated[FilterParams, Query()],
    sort: str = "id",
    order: str = "asc",
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(50, ge=1, le=queries.MAX_PAGE_SIZE),
    _: Principal = Depends(require(rbac.INVENTORY_READ)),
) -> Response:
    """Devices matching the filters, one page at a time.

    A text search (`q=`) counts up to 1,000 matches (or to the end of the page asked for);
    past that `total_exact` is false and `total` is a lower bound: page on while pages are full.
    """
    with tx(request) as s:
        found = queries.page_devices(s, filters.to_filter(), sort, order, page, page_size)
        devices = rows_json_text(s, found.rows)
    # already JSON: written out as it is, not validated again against the model
    head = _encode({"total": found.total, "total_exact": found.exact, "page": page, "page_size": page_size})
    return Response(f'{head[:-1]},"devices":{devices}}}', media_type="application/json")


@router.get("/devices/export.csv", response_class=Response)
def export_csv(
    request: Request,
    filters: Annotated[FilterParams, Query()],
    sort: str = "id",
    order: str = "asc",
    _: Principal = Depends(require(rbac.INVENTORY_READ)),
) -> Response:
    """The filtered view as CSV, at most 30,000 rows (X-Total-Count tells how many matched)."""
    with tx(request) as s:
        return devices_csv_response(s, filters.to_filter(), sort, order)


def devices_csv_response(s: Any, flt: queries.DeviceFilter, sort: str, order: str) -> Response:
    """The filtered inventory as a CSV download; the API and the inventory page serve the same file."""
    total, devices = queries.export_devices(s, flt, sort, order)
    rows = rows_json(s, devices)
    return Response(csv_text(rows), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="tapwatch-devices.csv"',
        "X-Total-Count": str(total), "X-Truncated": "true" if total > len(rows) else "false"})


def csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(CSV_COLUMNS)
    for r in rows:
        out.writerow([_cell(r[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, list):
        value = " ".join(map(str, value))
    text = "" if value is None else str(value)
    # a cell a spreadsheet would run as a formula is quoted as text
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def device_detail(s: Any, device_id: int) -> dict[str, Any]:
    device = get_or_404(s, Device, device_id, "device")
    row = inventory.device_json(device, inventory.device_addresses(s, [device_id]).get(device_id, []))
    row["overrides"] = dict(device.overrides or {})
    facts = evidence.facts_of_devices(s, [device_id]).get(device_id, [])
    row["facts"] = [evidence.fact_json(f) for f in facts]
    row["protocol_errors"] = [{"protocol": e.protocol, "count": e.count, "last_reason": e.last_reason}
                              for e in evidence.errors_of_devices(s, [device_id]).get(device_id, [])]
    return row


@router.get("/devices/{device_id}")
def get_device(request: Request, device_id: int,
               _: Principal = Depends(require(rbac.INVENTORY_READ))) -> dict[str, Any]:
    """One device with its evidence (facts) and protocol errors."""
    with tx(request) as s:
        return device_detail(s, device_id)


@router.patch("/devices/{device_id}")
def edit_device(request: Request, device_id: int,
                changes: Annotated[dict[str, Any], Body(examples=[{"name": "Line 3 PLC", "tags": ["l3"]}])],
                who: Principal = Depends(require(rbac.DEVICES_WRITE))) -> dict[str, Any]:
    """Edit a device. Identity fields set to null go back to what identification says."""
    with tx(request) as s:
        diff = device_admin.edit_device(s, device_id, changes, actor(who))
        return {"changed": diff, "device": device_detail(s, device_id)}


class BulkEdit(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=1000)
    changes: dict[str, Any]


@router.post("/devices/bulk-edit")
def bulk_edit(request: Request, body: BulkEdit,
              who: Principal = Depends(require(rbac.DEVICES_WRITE))) -> dict[str, Any]:
    """The same change on many devices."""
    with tx(request) as s:
        result = device_admin.edit_devices(s, body.ids, body.changes, actor(who))
    return {"edited": len(result)}


class Authorize(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=1000)
    authorized: bool = True


@router.post("/devices/authorize")
def authorize(request: Request, body: Authorize,
              who: Principal = Depends(require(rbac.DEVICES_AUTHORIZE))) -> dict[str, Any]:
    """Authorize (or un-authorize) devices: the device edit analysts may make."""
    with tx(request) as s:
        n = device_admin.set_authorized(s, body.ids, body.authorized, actor(who))
    return {"edited": n, "authorized": body.authorized}


@router.delete("/devices/{device_id}")
def delete_device(request: Request, device_id: int,
                  reason: str = Query(..., min_length=3, max_length=500),
                  who: Principal = Depends(require(rbac.DEVICES_WRITE))) -> dict[str, Any]:
    """Delete a device; the reason goes to the audit log."""
    with tx(request) as s:
        device_admin.delete_devices(s, [device_id], reason, actor(who))
    return {"deleted": [device_id]}


class Merge(BaseModel):
    ids: list[int] = Field(min_length=device_admin.MERGE_MIN, max_length=device_admin.MERGE_MAX)
    survivor: int | None = None


@router.post("/devices/merge")
def merge(request: Request, body: Merge,
          who: Principal = Depends(require(rbac.DEVICES_WRITE))) -> dict[str, Any]:
    """Merge 2-10 devices into one (the survivor, else the first id)."""
    with tx(request) as s:
        keep = device_admin.merge_devices(s, body.ids, actor(who), body.survivor)
        return {"device": device_detail(s, keep.id), "merged": [i for i in body.ids if i != keep.id]}
