"""The audit log: who edited, deleted, merged, changed status or changed a plan, and when."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from tapwatch.console import queries, rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import tx
from tapwatch.store.console_models import AuditEntry
from tapwatch.store.inventory import iso

router = APIRouter(tags=["audit"])


def entry_json(e: AuditEntry) -> dict[str, Any]:
    return {"id": e.id, "time": iso(e.ts), "actor": e.actor, "action": e.action,
            "target_type": e.target_type, "target_id": e.target_id, "details": e.details}


def audit_conditions(actor: str | None, action: str | None, target_type: str | None,
                     target_id: str | None) -> list[Any]:
    conds: list[Any] = []
    if actor:
        conds.append(AuditEntry.actor == actor)
    if action:  # "device" matches device.edit, device.delete, …
        conds.append(AuditEntry.action.startswith(action, autoescape=True) if "." not in action
                     else AuditEntry.action == action)
    if target_type:
        conds.append(AuditEntry.target_type == target_type)
    if target_id:
        conds.append(AuditEntry.target_id == target_id)
    return conds


def page_audit(s: Any, conds: list[Any], page: int, page_size: int) -> tuple[int, list[AuditEntry]]:
    return queries.page_rows(s, AuditEntry, conds, [AuditEntry.id.desc()], page, page_size)


@router.get("/audit")
def list_audit(
    request: Request,
    actor: str | None = Query(None, max_length=64),
    action: str | None = Query(None, max_length=64),
    target_type: str | None = Query(None, max_length=32),
    target_id: str | None = Query(None, max_length=64),
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(100, ge=1, le=queries.MAX_PAGE_SIZE),
    _: Principal = Depends(require(rbac.AUDIT_READ)),
) -> dict[str, Any]:
    """Audit entries, newest first."""
    with tx(request) as s:
        total, rows = page_audit(s, audit_conditions(actor, action, target_type, target_id),
                                 page, page_size)
        return {"total": total, "page": page, "page_size": page_size,
                "entries": [entry_json(e) for e in rows]}
