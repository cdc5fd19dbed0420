"""Plans through time: trials to expiry, conversion, one plan per subscription, partial
cancellation, scheduled edits with their pro-rata ledger, and the alerts API switching off.

The clock is injected (tapwatch.clock.set_clock), so months pass in milliseconds.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from clock_helpers import T0
from inventory_helpers import CAPTURES, analyze
from tapwatch import plans
from tapwatch.console import auth
from tapwatch.console.app import create_app
from tapwatch.plans import ledger, subscriptions
from tapwatch.plans import plans as rules
from tapwatch.plans.access import CLI, PlanError
from tapwatch.store.console_models import AuditEntry
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.plan_models import Plan

DAY = timedelta(days=1)


@pytest.fixture
def db(tmp_path):  # type: ignore[no-untyped-def]
    engine = open_engine(str(tmp_path / "t.db"))
    yield sessions(engine)
    engine.dispose()


def _sub(maker, name: str = "plant"):  # type: ignore[no-untyped-def]
    with maker.begin() as s:
        return subscriptions.create(s, CLI, name).id


def test_trial_runs_30_days_then_stops_security_services(db, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(db)
    with db.begin() as s:
        trial = rules.add(s, CLI, subscriptions.get(s, sub_id), "trial")
        assert trial.end == T0 + 30 * DAY
        with pytest.raises(PlanError, match="no device limit"):
            rules.add(s, CLI, subscriptions.get(s, sub_id), "trial", committed=50)
    with db() as s:
        ent = plans.entitlements(s, sub_id)
        assert ent.active and ent.kind == "trial" and ent.committed_devices is None
        assert ent.coverage == {"eiot", "ot"}
        assert plans.entitlements(s, sub_id, at=T0 + 30 * DAY - timedelta(seconds=1)).active
    now.at = T0 + 30 * DAY
    with db() as s:
        ent = plans.entitlements(s, sub_id)
        assert not ent.active
        assert ent.services == {"inventory": True, "alerts": False, "recommendations": False,
                                "vulnerabilities": False, "sensor_data": False}
        assert "trial ended unconverted" in ent.reason
        assert "has no active plan" in ent.refusal("alerts")
    for _ in range(2):  # the automatic cancellation is recorded once
        with db.begin() as s:
            ledger.refresh(s)
    with db() as s:
        assert s.get(Plan, trial.id).end_reason == "trial_expired"  # type: ignore[union-attr]
        traces = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "plan.trial_expired")))
        assert [(a.actor, a.target_id) for a in traces] == [("system", str(trial.id))]
    with db.begin() as s, pytest.raises(PlanError, match="has had its trial"):
        rules.add(s, CLI, subscriptions.get(s, sub_id), "trial")
    with db.begin() as s:  # a paid plan brings the services back
        rules.add(s, CLI, subscriptions.get(s, sub_id), "monthly", committed=100)
    with db() as s:
        assert plans.entitlements(s, sub_id).allows("alerts")


def test_converting_a_trial_keeps_services_running(db, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(db)
    with db.begin() as s:
        trial = rules.add(s, CLI, subscriptions.get(s, sub_id), "trial")
    now.at = T0 + 10 * DAY
    with db.begin() as s:
        with pytest.raises(PlanError, match="at most one plan"):
            rules.add(s, CLI, subscriptions.get(s, sub_id), "monthly", committed=200)
        rules.cancel(s, CLI, trial.id)
        monthly = rules.add(s, CLI, subscriptions.get(s, sub_id), "monthly", committed=200)
    now.at = T0 + 40 * DAY
    with db.begin() as s:
        ledger.refresh(s)
        ent = plans.entitlements(s, sub_id)
        assert ent.active and ent.plan_id == monthly.id and ent.committed_devices == 200
        assert s.get(Plan, trial.id).end_reason == "cancelled"  # type: ignore[union-attr]
        added = s.scalars(select(AuditEntry).where(AuditEntry.action == "plan.add")).all()[-1]
        assert added.details["converted_from"] == trial.id
        assert not s.scalars(select(AuditEntry).where(AuditEntry.action == "plan.trial_expired")).all()
        gap = T0 + 10 * DAY  # no instant without a plan
        assert plans.entitlements(s, sub_id, at=gap - timedelta(microseconds=1)).kind == "trial"
        assert plans.entitlements(s, sub_id, at=gap).kind == "monthly"


def test_one_plan_per_subscription_and_moving_subscriptions(db, now) -> None:  # type: ignore[no-untyped-def]
    old, new = _sub(db, "old"), _sub(db, "new")
    with db.begin() as s:
        plan = rules.add(s, CLI, subscriptions.get(s, old), "annual", committed=500, coverage="ot")
        # moving: cancel on the old subscription at month end, add on the new one from then
        rules.cancel(s, CLI, plan.id, effective=T0 + 31 * DAY)
        with pytest.raises(PlanError, match="at most one plan"):
            rules.add(s, CLI, subscriptions.get(s, old), "monthly", committed=5, start=T0 + 20 * DAY)
        rules.add(s, CLI, subscriptions.get(s, new), "annual", committed=500, coverage="ot",
                  start=T0 + 31 * DAY)
        with pytest.raises(PlanError, match="in the past"):
            rules.add(s, CLI, subscriptions.get(s, old), "monthly", committed=5, start=T0 - DAY)
    with db() as s:
        at = T0 + 31 * DAY
        assert plans.entitlements(s, old, at=at - timedelta(seconds=1)).active
        assert not plans.entitlements(s, old, at=at).active
        assert not plans.entitlements(s, new, at=at - timedelta(seconds=1)).active
        assert "starts at" in plans.entitlements(s, new, at=T0).reason
        assert plans.entitlements(s, new, at=at).coverage == {"ot"}


def test_cancelling_the_enterprise_iot_part_leaves_ot(db, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(db)
    committed = 300
    with db.begin() as s:
        plan = rules.add(s, CLI, subscriptions.get(s, sub_id), "monthly", committed=committed)
        rules.cancel(s, CLI, plan.id, part="eiot", effective=T0 + 10 * DAY)
        with pytest.raises(PlanError, match="in order"):
            rules.edit(s, CLI, plan.id, committed=400, effective=T0 + 5 * DAY)
    with db() as s:
        before = plans.entitlements(s, sub_id, at=T0 + 5 * DAY)
        after = plans.entitlements(s, sub_id, at=T0 + 10 * DAY)
        assert before.coverage == {"eiot", "ot"} and after.coverage == {"ot"}
        assert after.allows("alerts") and after.covers("OT") and not after.covers("IoT")
        assert not after.covers(None)  # devices of unknown class belong to Enterprise IoT
    now.at = T0 + 12 * DAY
    with db.begin() as s:
        with pytest.raises(PlanError, match="does not cover"):
            rules.cancel(s, CLI, plan.id, part="eiot")
        rules.cancel(s, CLI, plan.id, effective=T0 + 20 * DAY)
    now.at = T0 + 25 * DAY
    with db.begin() as s:
        ledger.refresh(s)
        assert not plans.entitlements(s, sub_id).active
        periods = rules.periods(s, plan.id)
        assert [(p.coverage, p.start, p.end, p.change) for p in periods] == [
            ("both", T0, T0 + 10 * DAY, "add"), ("ot", T0 + 10 * DAY, T0 + 20 * DAY, "cancel_eiot")]
        bill = ledger.prorate(s, sub_id, T0, T0 + 30 * DAY)
        assert bill["device_days"] == pytest.approx(committed * 20)
        assert [r["parts"] for r in bill["periods"]] == [["eiot", "ot"], ["ot"]]
        assert all(p.billable_peak is not None for p in periods)  # closed periods get their peak


def test_edits_take_effect_at_the_stated_time(db, now) -> None:  # type: ignore[no-untyped-def]
    sub_id = _sub(db)
    with db.begin() as s:
        plan = rules.add(s, CLI, subscriptions.get(s, sub_id), "monthly", committed=100)
        rules.edit(s, CLI, plan.id, committed=300, effective=T0 + 15 * DAY)
        with pytest.raises(PlanError, match="in the past"):
            rules.edit(s, CLI, plan.id, committed=200, effective=T0 - DAY)
        with pytest.raises(PlanError, match="nothing to change"):
            rules.edit(s, CLI, plan.id, committed=300, effective=T0 + 16 * DAY)
    with db() as s:
        assert plans.entitlements(s, sub_id, at=T0 + 15 * DAY - timedelta(seconds=1)).committed_devices == 100
        assert plans.entitlements(s, sub_id, at=T0 + 15 * DAY).committed_devices == 300
        edits = s.scalars(select(AuditEntry).where(AuditEntry.action == "plan.edit")).all()
        assert edits[0].details["effective"].startswith("2026-03-16")
        assert edits[0].details["old"]["committed_devices"] == 100
        bill = ledger.prorate(s, sub_id, T0, T0 + 20 * DAY, at=T0 + 20 * DAY)
        assert bill["device_days"] == pytest.approx(100 * 15 + 300 * 5)
        open_ended = ledger.prorate(s, sub_id, T0, T0 + 20 * DAY)  # now = T0: nothing billed yet
        assert open_ended["device_days"] == 0


def _analyst(engine):  # type: ignore[no-untyped-def]
    """A console client and the headers of a security analyst's token."""
    with sessions(engine).begin() as s:
        token = auth.issue_token(s, auth.add_user(s, "ana", "a long password", "security_analyst", "t"),
                                 "t", "t")
    return TestClient(create_app(engine)), {"Authorization": f"Bearer {token}"}


def test_alerts_api_answers_403_without_an_active_plan(tmp_path, now) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(str(tmp_path / "t.db"))
    maker = sessions(engine)
    client, hdr = _analyst(engine)
    assert client.get("/api/v1/alerts", headers=hdr).status_code == 200  # not under plan management
    first, second = _sub(maker, "first"), _sub(maker, "second")
    with maker.begin() as s:
        rules.add(s, CLI, subscriptions.get(s, first), "trial")
        rules.add(s, CLI, subscriptions.get(s, second), "monthly", committed=10)
    assert client.get("/api/v1/alerts", headers=hdr).status_code == 200
    now.at = T0 + 31 * DAY
    refused = client.get("/api/v1/alerts", headers=hdr)
    assert refused.status_code == 403
    assert "'first' has no active plan" in refused.json()["detail"]
    assert client.post("/api/v1/alerts/status", headers=hdr, json={"ids": [1], "status": "closed"}
                       ).status_code == 403
    assert client.get("/api/v1/alerts", params={"subscription": second}, headers=hdr).status_code == 200
    assert client.get("/api/v1/devices", headers=hdr).status_code == 200  # the inventory stays readable
    assert client.get("/api/v1/alerts").status_code == 401  # authentication still answers first
    ent = client.get(f"/api/v1/subscriptions/{first}/entitlements", headers=hdr).json()
    assert ent["services"]["alerts"] is False and ent["services"]["inventory"] is True
    engine.dispose()


def test_snapshots_trend_and_over_commitment_warning(tmp_path, now) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "t.db"
    analyze(db, CAPTURES / "iti-ics-tools__EIP-IPAddressChangeAttempt.pcap")
    engine = open_engine(str(db))
    maker = sessions(engine)
    start = datetime(2008, 11, 13)
    now.at = start
    sub_id = _sub(maker)
    with maker.begin() as s:
        plan = rules.add(s, CLI, subscriptions.get(s, sub_id), "monthly", committed=1)
    days = 5
    for i in range(days):
        now.at = start + i * DAY + timedelta(hours=1)
        with maker.begin() as s:
            ledger.refresh(s)
            ledger.refresh(s)  # one snapshot per day, however often it runs
    with maker() as s:
        sub = subscriptions.get(s, sub_id)
        use = ledger.usage(s, sub)
        assert use.actual > 1 and use.warning and "exceed the 1 committed" in use.warning
        trend = ledger.trend(s, sub_id)
        assert [t["day"] for t in trend] == [(start + i * DAY).date().isoformat() for i in range(days)]
        assert trend[0]["billable"] == ledger.usage(s, sub, at=start).actual
    now.at = start + days * DAY
    with maker.begin() as s:
        rules.edit(s, CLI, plan.id, committed=1000)
    now.at = start + (days + 1) * DAY
    with maker.begin() as s:
        ledger.refresh(s)
        first = rules.periods(s, plan.id)[0]
        assert first.billable_peak == max(t["billable"] for t in ledger.trend(s, sub_id)[:days])
        assert ledger.usage(s, subscriptions.get(s, sub_id)).warning is None
    engine.dispose()


def test_a_plan_covering_one_part_shows_findings_of_that_part_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The demo site: its alerts all involve OT devices (the intruder typed as engineering
    workstation, the PLC), its CVEs are the PLC's, and its recommendations span both parts."""
    demo = tmp_path / "demo"
    tw = str(Path(sys.executable).parent / "tapwatch")
    assert subprocess.run([tw, "demo", "--dir", str(demo)], capture_output=True, timeout=300).returncode == 0
    engine = open_engine(str(demo / "tapwatch.db"))
    maker = sessions(engine)
    client, hdr = _analyst(engine)

    def seen() -> tuple[int, set[str], set[str]]:
        def get(path: str) -> Any:
            return client.get(f"/api/v1/{path}", headers=hdr).json()

        vulns = {v["cve"] for v in get("vulnerabilities")["vulnerabilities"]}
        classes = {d["class"] for r in get("recommendations")["recommendations"]
                   for d in (*r["unhealthy"], *r["healthy"])}
        return get("alerts")["total"], vulns, classes

    everything = seen()
    assert everything == (5, {"CVE-2019-10936", "CVE-2020-15782"}, {"IT", "IoT", "OT"})
    sub = _sub(maker)
    with maker.begin() as s:
        plan = rules.add(s, CLI, subscriptions.get(s, sub), "monthly", committed=100, coverage="ot")
    assert seen() == everything[:2] + ({"OT"},)
    with maker.begin() as s:
        rules.cancel(s, CLI, plan.id)
        rules.add(s, CLI, subscriptions.get(s, sub), "monthly", committed=100, coverage="eiot")
    assert seen() == (0, set(), {"IT", "IoT"})
    engine.dispose()
