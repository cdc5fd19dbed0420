"""Every role against every plan action, through the API, the page forms and the CLI.

Security admin, contributor and owner of a subscription may add, edit and cancel its plans;
a global admin may on every subscription; everyone else reads. A role given on one
subscription replaces the console role there. Every refusal answers 403 and is audited.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from tapwatch import clock
from tapwatch.cli import main
from tapwatch.console import auth
from tapwatch.console.app import create_app
from tapwatch.plans import plans as rules
from tapwatch.plans import subscriptions
from tapwatch.plans.access import CLI
from tapwatch.store.console_models import ROLES, AuditEntry
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.plan_models import Plan

MAY_CHANGE = {"security_admin", "contributor", "owner", "global_admin"}


class Ticking:
    """A clock that moves one second per read, so every change has its own instant."""

    def __init__(self) -> None:
        self.at = datetime(2026, 5, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


@pytest.fixture(autouse=True)
def ticking():  # type: ignore[no-untyped-def]
    clock.set_clock(Ticking())
    yield
    clock.set_clock(None)


@pytest.fixture(scope="module")
def world(tmp_path_factory):  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("plans_roles") / "t.db"
    engine = open_engine(str(db))
    maker = sessions(engine)
    tokens = {}
    with maker.begin() as s:
        for role in ROLES:
            user = auth.add_user(s, role.replace("_", "-"), "a long password", role, "test")
            tokens[role] = auth.issue_token(s, user, "plans", "test")
    yield {"db": str(db), "maker": maker, "client": TestClient(create_app(engine)), "tokens": tokens}
    engine.dispose()


def _refusals(maker, username: str, action: str) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    with maker() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.actor == username,
                                                       AuditEntry.action == f"{action}.refused")))


def _fresh_subscription(maker, name: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with maker.begin() as s:
        sub = subscriptions.create(s, CLI, name)
        plan = rules.add(s, CLI, sub, "monthly", committed=100)
        return sub.id, plan.id


@pytest.mark.parametrize("role", ROLES)
def test_every_role_against_every_plan_action(world, role: str) -> None:  # type: ignore[no-untyped-def]
    client, maker = world["client"], world["maker"]
    hdr = {"Authorization": f"Bearer {world['tokens'][role]}"}
    user = role.replace("_", "-")
    sub_id, plan_id = _fresh_subscription(maker, f"api-{role}")
    # everyone reads
    assert client.get(f"/api/v1/subscriptions/{sub_id}", headers=hdr).status_code == 200
    assert client.get(f"/api/v1/plans/{plan_id}", headers=hdr).status_code == 200
    assert client.get(f"/api/v1/subscriptions/{sub_id}/usage", headers=hdr).status_code == 200
    allowed = role in MAY_CHANGE
    calls = [
        ("plan.edit", lambda: client.patch(f"/api/v1/plans/{plan_id}", headers=hdr,
                                           json={"committed_devices": 200})),
        ("plan.cancel", lambda: client.post(f"/api/v1/plans/{plan_id}/cancel", headers=hdr,
                                            json={"part": "eiot"})),
        ("plan.cancel", lambda: client.post(f"/api/v1/plans/{plan_id}/cancel", headers=hdr, json={})),
        ("plan.add", lambda: client.post(f"/api/v1/subscriptions/{sub_id}/plans", headers=hdr,
                                         json={"kind": "annual", "committed_devices": 300})),
    ]
    for n, (action, call) in enumerate(calls):
        before = len(_refusals(maker, user, action))
        r = call()
        if allowed:
            assert r.status_code in (200, 201), (role, action, r.text)
            assert len(_refusals(maker, user, action)) == before
        else:
            assert r.status_code == 403, (role, action, r.status_code)
            assert role.replace("_", " ") in r.json()["detail"].lower()
            assert "security admin, contributor, owner, global admin" in r.json()["detail"]
            trace = _refusals(maker, user, action)
            assert len(trace) == before + 1, (role, action, n)
            assert trace[-1].details["role"] == role and trace[-1].details["subscription_id"] == sub_id
    with maker() as s:
        plans = list(s.scalars(select(Plan).where(Plan.subscription_id == sub_id).order_by(Plan.id)))
        if allowed:  # edited, EIoT part cancelled, cancelled, and a new annual plan
            assert [p.kind for p in plans] == ["monthly", "annual"]
            terms = rules.periods(s, plans[0].id)
            assert [(q.coverage, q.committed_devices, q.change) for q in terms] == [
                ("both", 100, "add"), ("both", 200, "edit"), ("ot", 200, "cancel_eiot")]
            assert terms[-1].end == plans[0].end and plans[0].end_reason == "cancelled"
            assert all(a.end == b.start for a, b in zip(terms, terms[1:], strict=False))
        else:  # nothing changed
            assert [p.kind for p in plans] == ["monthly"] and plans[0].end is None
            terms = rules.periods(s, plans[0].id)
            assert [(q.coverage, q.committed_devices) for q in terms] == [("both", 100)]


def test_a_subscription_role_replaces_the_console_role_there(world) -> None:  # type: ignore[no-untyped-def]
    client, maker, tokens = world["client"], world["maker"], world["tokens"]
    x_id, x_plan = _fresh_subscription(maker, "scoped-x")
    y_id, y_plan = _fresh_subscription(maker, "scoped-y")
    owner = {"Authorization": f"Bearer {tokens['owner']}"}
    contributor = {"Authorization": f"Bearer {tokens['contributor']}"}
    # the owner gives the reader contributor rights on X, and the admin reader rights on X
    for user, role in (("security-reader", "contributor"), ("security-admin", "security_reader")):
        r = client.put(f"/api/v1/subscriptions/{x_id}/roles/{user}", headers=owner, json={"role": role})
        assert r.status_code == 200, r.text
    # a contributor cannot hand out roles; nobody grants global admin per subscription
    assert client.put(f"/api/v1/subscriptions/{x_id}/roles/security-analyst", headers=contributor,
                      json={"role": "owner"}).status_code == 403
    assert _refusals(maker, "contributor", "subscription.role")
    assert client.put(f"/api/v1/subscriptions/{x_id}/roles/security-analyst", headers=owner,
                      json={"role": "global_admin"}).status_code == 400
    reader = {"Authorization": f"Bearer {tokens['security_reader']}"}
    admin = {"Authorization": f"Bearer {tokens['security_admin']}"}
    assert client.patch(f"/api/v1/plans/{x_plan}", headers=reader, json={"committed_devices": 150}
                        ).status_code == 200
    assert client.patch(f"/api/v1/plans/{y_plan}", headers=reader, json={"committed_devices": 150}
                        ).status_code == 403
    assert client.patch(f"/api/v1/plans/{x_plan}", headers=admin, json={"committed_devices": 170}
                        ).status_code == 403
    assert client.patch(f"/api/v1/plans/{y_plan}", headers=admin, json={"committed_devices": 170}
                        ).status_code == 200
    listing = client.get("/api/v1/subscriptions", headers=reader).json()["subscriptions"]
    mine = {s["name"]: s["you_may_change_plans"] for s in listing}
    assert mine["scoped-x"] is True and mine["scoped-y"] is False
    # removing the assignment brings the console role back
    removed = client.delete(f"/api/v1/subscriptions/{x_id}/roles/security-reader", headers=owner)
    assert removed.status_code == 200
    assert client.patch(f"/api/v1/plans/{x_plan}", headers=reader, json={"committed_devices": 180}
                        ).status_code == 403


def test_page_forms_and_cli_refuse_the_same_way(world) -> None:  # type: ignore[no-untyped-def]
    client, maker, tokens = world["client"], world["maker"], world["tokens"]
    sub_id, plan_id = _fresh_subscription(maker, "forms")
    reader = {"Authorization": f"Bearer {tokens['security_reader']}"}
    page = client.get(f"/plans?subscription={sub_id}", headers=reader)
    assert page.status_code == 200 and "forms" in page.text and "read only" in page.text
    assert f'action="/plans/{plan_id}/cancel"' not in page.text  # no form for those who may not
    r = client.post(f"/plans/{plan_id}/cancel", headers=reader, data={"part": ""}, follow_redirects=False)
    assert r.status_code == 303 and "error=" in r.headers["location"]
    assert _refusals(maker, "security-reader", "plan.cancel")
    contributor = {"Authorization": f"Bearer {tokens['contributor']}"}
    page = client.get(f"/plans?subscription={sub_id}", headers=contributor)
    assert f'action="/plans/{plan_id}/cancel"' in page.text
    r = client.post(f"/plans/{plan_id}/cancel", headers=contributor, data={"part": "eiot"},
                    follow_redirects=False)
    assert r.status_code == 303 and "msg=" in r.headers["location"]
    with maker() as s:
        assert rules.periods(s, plan_id)[-1].coverage == "ot"
    runner = CliRunner()
    out = runner.invoke(main, ["plans", "cancel", str(plan_id), "--db", world["db"],
                               "--as", "security-analyst"])
    assert out.exit_code == 2 and "refused" in out.output
    assert _refusals(maker, "cli:security-analyst", "plan.cancel")
    out = runner.invoke(main, ["plans", "cancel", str(plan_id), "--db", world["db"], "--as", "owner"])
    assert out.exit_code == 0, out.output
    with maker() as s:
        assert s.get(Plan, plan_id).end_reason == "cancelled"  # type: ignore[union-attr]
