"""The console as a person uses it: `tapwatch serve` on a real analyzed capture, driven by
Debian's chromium through Playwright. Screenshots go to $TAPWATCH_SCREENSHOTS or the test's tmp."""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from inventory_helpers import CAPTURES, analyze
from tapwatch.store.alert_models import Alert
from tapwatch.store.console_models import set_setting
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.models import Device

CHROMIUM = "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The real `tapwatch serve` subprocess on a fresh inventory; yields (url, password, db)."""
    tmp = tmp_path_factory.mktemp("console_browser")
    db = tmp / "site.db"
    analyze(db, CAPTURES / "icsnpp-s7comm__s7ident.pcap", CAPTURES / "icsnpp-modbus__modbus_example.pcap",
            CAPTURES / "iti-ics-tools__EIP-SoftwareUpload.pcap")
    engine = open_engine(str(db))
    with sessions(engine).begin() as s:
        # these captures span 2008-2024: with the default 90 days, retention would purge the old ones
        set_setting(s, "retention_days", 0, "test")
        plc = s.scalar(select(Device).where(Device.ip == "192.168.10.120"))
        ews = s.scalar(select(Device).where(Device.ip == "192.168.10.105"))
        at = plc.last_seen
        s.add(Alert(key="t1", type="plc_program_upload", title="Unauthorized PLC program upload",
                    engine="policy", severity="high", category="policy", status="new", protocol="enip",
                    src_device_id=ews.id, src_ip=ews.ip, dst_device_id=plc.id, dst_ip=plc.ip,
                    first_detected=at, last_detected=at, count=3, details={}, evidence=[]))
    engine.dispose()
    port = _free_port()
    command = [sys.executable, "-m", "tapwatch.cli", "serve", "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(command,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    password = None
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"created user 'owner' with password (\S+)", line)
        if m:
            password = m.group(1)
        if "tapwatch console on" in line:
            break
    assert password, "the first start prints the owner's generated password"
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:  # wait until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url, password, db
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    target = os.environ.get("TAPWATCH_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def page(server):  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-deps.sh (apt package chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--headless", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        yield pg
        browser.close()


def test_login_inventory_filter_edit_audit(server, page, shots) -> None:  # type: ignore[no-untyped-def]
    url, password, _db = server
    page.goto(url + "/devices")
    assert "/login" in page.url  # not logged in: sent to the login page
    page.fill("input[name=username]", "owner")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert page.locator(".flash.err").is_visible()
    page.fill("input[name=username]", "owner")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/devices")
    rows = page.locator("#devices tbody tr")
    assert rows.count() >= 8
    page.screenshot(path=str(shots / "inventory.png"), full_page=True)

    # filter by type: only PLCs remain, and the Rockwell controller is among them
    page.select_option("select[name=type]", "plc")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*type=plc.*"))
    types = page.locator("#devices tbody td:nth-child(6)").all_inner_texts()
    assert types and set(types) == {"PLC"}
    assert page.locator("#devices tbody", has_text="192.168.10.120").count() == 1
    page.screenshot(path=str(shots / "inventory-plc.png"), full_page=True)

    # CSV export of the filtered view
    with page.expect_download() as dl:
        page.click("text=Export CSV")
    text = Path(dl.value.path()).read_text()
    exported = list(csv.DictReader(io.StringIO(text)))
    assert len(exported) == len(types) and {r["type"] for r in exported} == {"plc"}

    # open the controller, look at its evidence, edit it
    page.click("#devices >> text=192.168.10.120")
    page.wait_for_url(re.compile(r".*/devices/\d+$"))
    assert page.locator("table.kv td", has_text="1756-L61").first.is_visible()
    page.locator("details.why summary").first.click()
    page.screenshot(path=str(shots / "device.png"), full_page=True)
    page.fill("#edit input[name=name]", "Line 1 ControlLogix")
    page.select_option("#edit select[name=importance]", "high")
    page.fill("#edit input[name=location]", "Hall A, cabinet 3")
    page.click("#edit button[type=submit]")
    page.wait_for_selector(".flash.ok")
    assert "name" in page.locator(".flash.ok").inner_text()
    assert page.locator("h1").inner_text().startswith("Line 1 ControlLogix")
    device_url = page.url

    # the audit log says who changed what
    page.click("nav.side >> text=Audit log")
    first = page.locator("#audit tbody tr").first
    assert "device.edit" in first.inner_text() and "owner" in first.inner_text()
    assert "Line 1 ControlLogix" in first.inner_text()
    page.screenshot(path=str(shots / "audit.png"), full_page=True)

    # the alert on that controller: close it from the alerts list
    page.goto(url + "/alerts")
    assert page.locator("text=Unauthorized PLC program upload").is_visible()
    page.screenshot(path=str(shots / "alerts.png"), full_page=True)
    page.check("input[name=ids]")
    page.click("button[name=status][value=closed]")
    page.wait_for_selector(".flash.ok")
    assert page.locator("text=No alerts match.").is_visible()  # the default view shows open alerts
    page.goto(device_url)
    assert page.locator("text=closed").first.is_visible()


def test_dashboard_map_and_delete(server, page, shots) -> None:  # type: ignore[no-untyped-def]
    url, _password, db = server
    page.goto(url + "/")
    assert page.locator(".tile").first.is_visible()
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    page.goto(url + "/map")
    nodes = page.locator("svg.netmap a.node")
    assert nodes.count() >= 8
    page.screenshot(path=str(shots / "map.png"), full_page=True)
    page.goto(url + "/map?layout=connections")
    page.screenshot(path=str(shots / "map-connections.png"), full_page=True)
    page.locator("svg.netmap a.node").first.click()
    page.wait_for_url(re.compile(r".*/devices/\d+$"))
    doomed = page.url
    # delete asks for confirmation (the browser dialog) and a reason
    page.locator("details.danger summary").click()
    page.fill("details.danger input[name=reason]", "test device, removed")
    page.check("details.danger input[name=confirm]")
    page.once("dialog", lambda d: d.accept())
    page.click("details.danger button[type=submit]")
    page.wait_for_url(re.compile(r".*/devices\?msg=.*"))
    assert page.goto(doomed).status == 404
    page.goto(url + "/audit?action=device.delete")
    assert "test device, removed" in page.locator("#audit tbody tr").first.inner_text()
