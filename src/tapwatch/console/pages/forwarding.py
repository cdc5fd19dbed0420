"""The forwarding rules page: list rules with their progress, add, test and remove them."""

# ruff: noqa: B008  (FastAPI declares parameters with Depends/Query/Form defaults)

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response

from tapwatch.console import rbac
from tapwatch.console.rbac import Principal, require
from tapwatch.console.web import actor, get_or_404, render, tx
from tapwatch.integrations import forwarding as fw
from tapwatch.store.alert_models import SEVERITIES
from tapwatch.store.integration_models import ACTIONS, ForwardingRule

router = APIRouter()


def _back(msg: str) -> RedirectResponse:
    return RedirectResponse(f"/forwarding?msg={quote(msg[:200])}", status_code=303)


@router.get("/forwarding")
def forwarding_page(request: Request, msg: str | None = Query(None, max_length=200),
                    _: Principal = Depends(require(rbac.ALERTS_READ))) -> Response:
    with tx(request) as s:
        rules = [fw.rule_json(r, fw.backlog(s, r)) for r in fw.list_rules(s)]
    return render(request, "forwarding.html", nav="forwarding", rules=rules, msg=msg,
                  actions=ACTIONS, severities=SEVERITIES)


@router.post("/forwarding")
def forwarding_add(request: Request, name: str = Form(..., max_length=128),
                   action: str = Form(..., max_length=16), min_severity: str = Form("low", max_length=8),
                   engines: str = Form("", max_length=1024), protocols: str = Form("", max_length=1024),
                   host: str = Form("", max_length=255), port: str = Form("", max_length=5),
                   transport: str = Form("udp", max_length=8), format: str = Form("cef", max_length=8),
                   url: str = Form("", max_length=2048), sender: str = Form("", max_length=255),
                   to: str = Form("", max_length=2048), security: str = Form("none", max_length=16),
                   who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> Response:
    if action == "syslog":
        config = {"host": host, "port": port, "transport": transport, "format": format}
    elif action == "webhook":
        config = {"url": url}
    else:
        config = {"host": host, "port": port, "sender": sender, "to": to, "security": security}
    try:
        with tx(request) as s:
            rule = fw.create_rule(s, name=name, action=action, config=config, min_severity=min_severity,
                                  engines=engines, protocols=protocols, actor=actor(who))
            secret = rule.config.get("secret") if action == "webhook" else None
    except fw.RuleError as e:
        return _back(f"not added: {e}")
    return _back(f"rule {name} added" + (f"; webhook secret (shown once): {secret}" if secret else ""))


@router.post("/forwarding/{rule_id}/test")
def forwarding_test(request: Request, rule_id: int,
                    who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> Response:
    with tx(request) as s:
        rule = get_or_404(s, ForwardingRule, rule_id, "forwarding rule")
        error = fw.send_test(s, rule, actor(who))
    return _back(f"test message not delivered: {error}" if error else "test message delivered")


@router.post("/forwarding/{rule_id}/delete")
def forwarding_delete(request: Request, rule_id: int,
                      who: Principal = Depends(require(rbac.SETTINGS_WRITE))) -> Response:
    with tx(request) as s:
        if not fw.remove_rule(s, rule_id, actor(who)):
            raise HTTPException(404, f"no forwarding rule with id {rule_id}")
    return _back(f"rule {rule_id} removed")
