"""Forwarding rules against real receivers on loopback: syslog over UDP, TCP and TLS (CEF,
LEEF), a webhook HTTP server checking the HMAC, and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import re
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from tapwatch.cli import main
from tapwatch.integrations import forwarding as fw
from tapwatch.integrations import webhook
from tapwatch.store.alert_models import Alert
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.integration_models import ForwardingRule

RFC5424 = re.compile(rb"^<(\d+)>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) tapwatch - (\S+) - "
                     rb"\xef\xbb\xbf(.*)$", re.S)


# -- receivers ------------------------------------------------------------------------------------


class UdpSyslog:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def receive(self, n: int) -> list[bytes]:
        return [self.sock.recvfrom(70000)[0] for _ in range(n)]

    def nothing_more(self) -> bool:
        self.sock.settimeout(0.3)
        try:
            self.sock.recvfrom(70000)
        except TimeoutError:
            return True
        return False


def _read_frames(data: bytes) -> list[bytes]:
    """Octet-counting: LEN SP MSG, repeated."""
    out = []
    while data:
        length, _, rest = data.partition(b" ")
        n = int(length)
        out.append(rest[:n])
        data = rest[n:]
    return out


class StreamSyslog:
    """A TCP (optionally TLS) syslog receiver collecting framed messages."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(5)
        self.port = self.server.getsockname()[1]
        self.tls = tls
        self.chunks: list[bytes] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except ssl.SSLError:  # the client refused our certificate: nothing received
                conn.close()
                self.done.set()
                return
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                self.chunks.append(data)
        self.done.set()

    def messages(self) -> list[bytes]:
        assert self.done.wait(5)
        self.server.close()
        return _read_frames(b"".join(self.chunks))


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]
    fail_first: int

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        server.calls += 1
        if server.calls <= server.fail_first:
            self.send_response(503)
            self.end_headers()
            return
        server.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[Any]:
    server: Any = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Hook)
    server.daemon_threads = True
    server.received, server.calls, server.fail_first = [], 0, 0
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# -- database -------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    path = str(tmp_path / "t.db")
    engine = open_engine(path)
    yield path, engine
    engine.dispose()


def raise_alert(engine: Any, severity: str = "high", engine_name: str = "policy",
                protocol: str | None = "modbus", title: str = "Unauthorized Modbus write",
                status: str = "new") -> int:
    when = dt.datetime(2024, 3, 11, 8, 0, 5)
    with sessions(engine).begin() as s:
        a = Alert(key=f"k{title}{severity}{protocol}", type="modbus_write_unauthorized", title=title,
                  engine=engine_name, severity=severity, category="policy", mitre="T0855", status=status,
                  protocol=protocol, src_mac="00:1b:1b:aa:10:20", src_ip="10.10.1.20",
                  dst_mac="00:0e:8c:01:02:50", dst_ip="10.10.1.50", sensor="north", first_detected=when,
                  last_detected=when + dt.timedelta(seconds=3), count=2, details={"register": 40001},
                  evidence=[])
        s.add(a)
        s.flush()
        return a.id


def add_rule(engine: Any, **kw: Any) -> int:
    with sessions(engine).begin() as s:
        return fw.create_rule(s, **kw).id


def forward(engine: Any) -> fw.ForwardReport:
    with sessions(engine).begin() as s:
        return fw.forward_new_alerts(s)


def cursor(engine: Any, rule_id: int) -> int:
    with sessions(engine)() as s:
        rule = s.get(ForwardingRule, rule_id)
        assert rule is not None
        return rule.cursor


# -- tests ----------------------------------------------------------------------------------------


def test_udp_cef_only_new_matching_alerts(db: tuple[str, Any]) -> None:
    _, engine = db
    receiver = UdpSyslog()
    before = raise_alert(engine, title="raised before the rule")
    rule = add_rule(engine, name="siem", action="syslog", min_severity="medium",
                    config={"host": "127.0.0.1", "port": receiver.port, "transport": "udp", "format": "cef"})
    assert cursor(engine, rule) == before
    wanted = raise_alert(engine, title="Modbus write | from HMI=bad")
    low = raise_alert(engine, severity="low", title="low one")
    report = forward(engine)
    assert report.delivered == 1 and report.rules[0].skipped == 1 and not report.failed
    (msg,) = receiver.receive(1)
    assert receiver.nothing_more()
    m = RFC5424.match(msg)
    assert m is not None, msg
    pri, _, _, msgid, body = m.groups()
    assert int(pri) == 16 * 8 + 2  # local0, critical for a high alert
    assert msgid == b"modbus_write_unauthorized"
    text = body.decode()
    assert text.startswith("CEF:0|tapwatch|tapwatch|")
    header = re.split(r"(?<!\\)\|", text, maxsplit=7)
    assert header[4] == "modbus_write_unauthorized" and header[5] == "Modbus write \\| from HMI=bad"
    assert header[6] == "8"
    ext = header[7]
    assert f"externalId={wanted} " in ext and "src=10.10.1.20" in ext and "dst=10.10.1.50" in ext
    assert "msg=Modbus write | from HMI\\=bad" in ext and "cs2=T0855" in ext
    assert cursor(engine, rule) == low
    assert forward(engine).delivered == 0 and receiver.nothing_more()


def test_tcp_leef_octet_counting_and_conditions(db: tuple[str, Any]) -> None:
    _, engine = db
    receiver = StreamSyslog()
    add_rule(engine, name="qradar", action="syslog", engines=["policy"], protocols=["modbus", "s7comm"],
             config={"host": "127.0.0.1", "port": receiver.port, "transport": "tcp", "format": "leef"})
    raise_alert(engine, title="first\nwith a newline")
    raise_alert(engine, engine_name="anomaly", title="other engine")
    raise_alert(engine, protocol="dnp3", title="other protocol")
    raise_alert(engine, protocol="s7comm", title="second")
    raise_alert(engine, status="closed", title="closed while learning")
    assert forward(engine).delivered == 2
    # one connection per message batch: the stage sends one alert per delivery
    messages = receiver.messages()
    assert len(messages) == 1
    body = RFC5424.match(messages[0]).group(5).decode()  # type: ignore[union-attr]
    assert body.startswith("LEEF:2.0|tapwatch|tapwatch|") and "|x09|" in body
    fields = dict(kv.split("=", 1) for kv in body.split("|", 6)[6].split("\t"))
    assert fields["name"] == "first with a newline" and fields["src"] == "10.10.1.20"
    assert fields["proto"] == "modbus" and fields["sev"] == "8"


def test_tls_syslog_with_self_signed_certificate(db: tuple[str, Any], tmp_path: Path) -> None:
    _, engine = db
    cert, key = self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    receiver = StreamSyslog(ctx)
    rule = add_rule(engine, name="tls", action="syslog",
                    config={"host": "127.0.0.1", "port": receiver.port, "transport": "tls",
                            "format": "cef", "ca_file": str(cert)})
    raise_alert(engine)
    report = forward(engine)
    assert report.delivered == 1, report.summary()
    (msg,) = receiver.messages()
    assert b"CEF:0|tapwatch" in msg
    # an untrusted certificate is refused and the alert stays pending
    other = StreamSyslog(ctx)
    with sessions(engine).begin() as s:
        r = s.get(ForwardingRule, rule)
        assert r is not None
        r.config = {**r.config, "port": other.port, "ca_file": None}
    raise_alert(engine, title="second")
    report = forward(engine)
    assert report.delivered == 0 and report.failed and "CERTIFICATE_VERIFY_FAILED" in report.failed[0].error
    assert report.failed[0].pending == 1


def test_webhook_hmac_retries_and_no_loss(db: tuple[str, Any], hook_server: Any) -> None:
    _, engine = db
    port = hook_server.server_address[1]
    rule = add_rule(engine, name="hook", action="webhook",
                    config={"url": f"http://127.0.0.1:{port}/alerts", "secret": "s3cret", "retries": 2,
                            "backoff": 0.01})
    first = raise_alert(engine)
    hook_server.fail_first = 2  # two 503s, then accepted: within the retries
    assert forward(engine).delivered == 1
    assert hook_server.calls == 3
    ((headers, body),) = hook_server.received
    assert webhook.verify("s3cret", body, headers[webhook.SIGNATURE_HEADER])
    assert not webhook.verify("other", body, headers[webhook.SIGNATURE_HEADER])
    doc = json.loads(body)
    assert doc["alert"]["id"] == first and doc["rule"] == "hook" and doc["alert"]["src_ip"] == "10.10.1.20"
    # the receiver is down for longer than the retries: nothing lost, cursor stays
    hook_server.calls, hook_server.fail_first = 0, 99
    second = raise_alert(engine, title="second")
    third = raise_alert(engine, title="third")
    report = forward(engine)
    assert report.delivered == 0 and "HTTP 503" in (report.failed[0].error or "")
    assert report.failed[0].pending == 2 and hook_server.calls == 3
    assert cursor(engine, rule) == first
    hook_server.fail_first = 0
    assert forward(engine).delivered == 2
    assert [json.loads(b)["alert"]["id"] for _, b in hook_server.received[1:]] == [second, third]
    assert cursor(engine, rule) == third


def test_email_via_smtp_with_starttls(db: tuple[str, Any], tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    got: list[Any] = []

    class Collect(Message):
        def handle_message(self, message: Any) -> None:
            got.append(message)

    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Collect(), hostname="127.0.0.1", port=port, tls_context=tls,
                            require_starttls=True)
    controller.start()
    try:
        _, engine = db
        add_rule(engine, name="mail", action="email",
                 config={"host": "127.0.0.1", "port": port, "security": "starttls", "ca_file": str(cert),
                         "sender": "tapwatch@plant.example", "to": ["soc@plant.example", "ot@plant.example"]})
        raise_alert(engine, title="PLC stopped")
        report = forward(engine)
        assert report.delivered == 1, report.summary()
    finally:
        controller.stop()
    (msg,) = got
    assert msg["Subject"] == "[tapwatch] HIGH: PLC stopped"
    assert msg["X-RcptTo"] == "soc@plant.example, ot@plant.example"
    assert "10.10.1.20" in msg.get_payload()


def test_cli_add_list_test_remove(db: tuple[str, Any]) -> None:
    path, engine = db
    receiver = UdpSyslog()
    runner = CliRunner()
    r = runner.invoke(main, ["forwarding", "add", "cli-rule", "--db", path, "--action", "syslog", "--host",
                             "127.0.0.1", "--port", str(receiver.port), "--format", "leef",
                             "--min-severity", "high", "--engine", "policy"])
    assert r.exit_code == 0, r.output
    rule_id = int(re.search(r"rule (\d+)", r.output).group(1))  # type: ignore[union-attr]
    raise_alert(engine)
    r = runner.invoke(main, ["forwarding", "test", str(rule_id), "--db", path])
    assert r.exit_code == 0, r.output
    (msg,) = receiver.receive(1)
    assert b"LEEF:2.0|tapwatch|tapwatch|" in msg and b"forwarding_test" in msg
    assert cursor(engine, rule_id) == 0  # a test does not move the cursor
    r = runner.invoke(main, ["forwarding", "list", "--db", path, "--format", "json"])
    (listed,) = json.loads(r.output)
    assert listed["engines"] == ["policy"] and listed["backlog"] == 1
    r = runner.invoke(main, ["forwarding", "run", "--db", path])
    assert r.exit_code == 0 and "cli-rule: 1 sent" in r.output
    assert receiver.receive(1)
    r = runner.invoke(main, ["forwarding", "add", "bad", "--db", path, "--action", "webhook", "--url", "ftp://x"])
    assert r.exit_code == 2 and "http://" in r.output
    r = runner.invoke(main, ["forwarding", "remove", str(rule_id), "--db", path])
    assert r.exit_code == 0
    r = runner.invoke(main, ["forwarding", "test", str(rule_id), "--db", path])
    assert r.exit_code == 2 and "no forwarding rule" in r.output


def test_api_rules_secret_shown_once(db: tuple[str, Any], hook_server: Any) -> None:
    from tapwatch.console import auth
    from tapwatch.console.app import create_app

    _, engine = db
    with sessions(engine).begin() as s:
        owner = auth.add_user(s, "boss", "a long password", "owner", "test")
        reader = auth.add_user(s, "reader", "a long password", "security_reader", "test")
        tokens = {"owner": auth.issue_token(s, owner, "t", "test"),
                  "reader": auth.issue_token(s, reader, "t", "test")}
    client = TestClient(create_app(engine))
    h = {"Authorization": f"Bearer {tokens['owner']}"}
    url = f"http://127.0.0.1:{hook_server.server_address[1]}/"
    r = client.post("/api/v1/forwarding", headers=h,
                    json={"name": "api-hook", "action": "webhook", "config": {"url": url}})
    assert r.status_code == 201, r.text
    secret = r.json()["config"]["secret"]
    assert len(secret) == 64
    rule_id = r.json()["id"]
    listed = client.get("/api/v1/forwarding", headers={"Authorization": f"Bearer {tokens['reader']}"})
    assert listed.status_code == 200 and listed.json()[0]["config"]["secret"] == fw.REDACTED
    assert client.post(f"/api/v1/forwarding/{rule_id}/test",
                       headers={"Authorization": f"Bearer {tokens['reader']}"}).status_code == 403
    r = client.post(f"/api/v1/forwarding/{rule_id}/test", headers=h)
    assert r.status_code == 200
    ((headers, body),) = hook_server.received
    assert webhook.verify(secret, body, headers[webhook.SIGNATURE_HEADER])
    bad = client.post("/api/v1/forwarding", headers=h, json={"name": "x", "action": "syslog", "config": {}})
    assert bad.status_code == 422 and "host" in bad.text
    page = client.get("/forwarding", headers=h)
    assert page.status_code == 200 and "api-hook" in page.text and secret not in page.text
    assert client.delete(f"/api/v1/forwarding/{rule_id}", headers=h).status_code == 200
    assert client.get(f"/api/v1/forwarding/{rule_id}", headers=h).status_code == 404
