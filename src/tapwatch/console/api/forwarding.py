"""Forwarding rules over the API: list (secrets redacted), add, remove, test, run a pass now.

Reading rules needs alerts:read (they say where alerts go, never the secrets); changing or
exercising them needs settings:write, since a rule sends alert data out of the console.
"""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from tapwatch.console import rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, get_or_404, tx
from tapwatch.integrations import forwarding as fw
from tapwatch.store.integration_models import ForwardingRule

router = APIRouter(tags=["forwarding"])


class RuleIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=128)
    action: str = Field(..., pattern="^(syslog|webhook|email)$")
    min_severity: str = Field("low", pattern="^(low|medium|high)$")
    engines: list[str] = Field(default_factory=list, max_length=50)
    protocols: list[str] = Field(default_factory=list, max_length=50)
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


@router.get("/forwarding")
def list_rules(request: Request, _: Principal = Depends(require(rbac.ALERTS_READ))) -> list[dict[str, Any]]:
    with tx(request) as s:
        return [fw.rule_json(r, fw.backlog(s, r)) for r in fw.list_rules(s)]


@router.post("/forwarding", status_code=201)
def add_rule(request: Request, body: RuleIn,
             who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> dict[str, Any]:
    """Create a rule; the answer carries the webhook secret this once."""
    try:
        with tx(request) as s:
            rule = fw.create_rule(s, name=body.name, action=body.action, config=body.config,
                                  min_severity=body.min_severity, engines=body.engines,
                                  protocols=body.protocols, enabled=body.enabled, actor=actor(who))
            out = fw.rule_json(rule, fw.backlog(s, rule))
            if rule.action == "webhook":
                out["config"]["secret"] = rule.config.get("secret")
            return out
    except fw.RuleError as e:
        raise HTTPException(422, str(e)) from None


@router.get("/forwarding/{rule_id}")
def get_rule(request: Request, rule_id: int,
             _: Principal = Depends(require(rbac.ALERTS_READ))) -> dict[str, Any]:
    with tx(request) as s:
        rule = get_or_404(s, ForwardingRule, rule_id, "forwarding rule")
        return fw.rule_json(rule, fw.backlog(s, rule))


@router.delete("/forwarding/{rule_id}")
def delete_rule(request: Request, rule_id: int,
                who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> dict[str, Any]:
    with tx(request) as s:
        get_or_404(s, ForwardingRule, rule_id, "forwarding rule")
        fw.remove_rule(s, rule_id, actor(who))
    return {"removed": rule_id}


@router.post("/forwarding/{rule_id}/test")
def test_rule(request: Request, rule_id: int,
              who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> dict[str, Any]:
    """Send a test message; 502 when the receiver did not take it."""
    with tx(request) as s:
        error = fw.send_test(s, get_or_404(s, ForwardingRule, rule_id, "forwarding rule"), actor(who))
    if error:
        raise HTTPException(502, f"test message not delivered: {error}")
    return {"delivered": True}


@router.post("/forwarding/run")
def run_now(request: Request, _: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> dict[str, Any]:
    """One forwarding pass now (what `tapwatch serve` does periodically)."""
    with tx(request) as s:
        report = fw.forward_new_alerts(s)
    return {"delivered": report.delivered,
            "rules": [vars(r) for r in report.rules]}
