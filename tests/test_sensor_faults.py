"""Store-and-forward under faults: the console killed during uploads, the uplink cut, the
sensor SIGKILLed mid-batch, acknowledgements lost (over TLS). After recovery the console
holds exactly what the sensor holds: nothing acknowledged lost, nothing counted twice."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from tapwatch.sensor.uploader import Uploader
from tapwatch.store.db import open_engine, sessions
from tapwatch.store.sensor_models import Sensor
from test_sensor_console import CAPTURE, build_outbox
from test_sensor_netns import (
    PY,
    SRV_IP,
    TAPWATCH,
    ConsoleProc,
    Net,
    free_port,
    inventory_totals,
    net,  # noqa: F401 - fixture
    outbox_backlog,
    register_sensor,
    start_sensor,
    stop,
    wait_for,
)

FLOOD = ("import socket, sys, time\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "end = time.time() + float(sys.argv[2])\n"
         "i = 0\n"
         "while time.time() < end:\n"
         "    s.sendto(b'q' * 64, (sys.argv[1], 20000 + i % 300)); i += 1\n"
         "    if i % 50 == 0: time.sleep(0.01)\n")


def _flood(where: Net, seconds: float) -> subprocess.Popen[str]:
    return where.spawn(where.cli, PY, "-c", FLOOD, SRV_IP, str(seconds))


def _sensor_row(db: Path, name: str) -> Sensor:
    engine = open_engine(str(db))
    with sessions(engine)() as s:
        row = s.scalar(select(Sensor).where(Sensor.name == name))
    engine.dispose()
    assert row is not None
    return row


def test_console_killed_and_uplink_cut(net: Net, tmp_path: Path) -> None:  # noqa: F811
    console_db, sensor_db = tmp_path / "console.db", tmp_path / "sensor.db"
    name = f"sensor-{net.tag}"
    token = register_sensor(console_db, name)
    console = ConsoleProc(console_db, free_port(), net)
    console.start()
    assert _sensor_row(console_db, name).activated_at is None  # pending until it connects
    sensor = start_sensor(net, sensor_db, "--no-dissect", "--console", console.url, "--token", token,
                          flush=0.5)
    wait_for(lambda: _sensor_row(console_db, name).activated_at is not None, 30, "activation")
    traffic = _flood(net, 3)
    time.sleep(1.0)
    console.kill()  # during uploads
    traffic.wait(20)
    wait_for(lambda: outbox_backlog(sensor_db) > 0, 15, "a backlog while the console is down")
    console.start()
    wait_for(lambda: outbox_backlog(sensor_db) == 0, 60, "the backlog to drain")
    net.link(None, net.up_root, "down")  # cut the uplink
    _flood(net, 2).wait(20)
    wait_for(lambda: outbox_backlog(sensor_db) > 0, 15, "a backlog while the link is cut")
    time.sleep(1)
    assert outbox_backlog(sensor_db) > 0
    net.link(None, net.up_root, "up")
    wait_for(lambda: outbox_backlog(sensor_db) == 0, 60, "the backlog to drain after the link is back")
    out, err = stop(sensor)
    assert sensor.returncode == 0, err
    wait_for(lambda: outbox_backlog(sensor_db) == 0, 10, "the final flush")
    local = inventory_totals(str(sensor_db))
    remote = inventory_totals(str(console_db))
    assert local[1] and sum(v[0] for v in local[1].values()) > 500
    assert remote == local
    row = _sensor_row(console_db, name)
    assert row.version and row.interface == net.srv_if and "outbox_batches" in row.health


def test_sensor_sigkilled_mid_batch(net: Net, tmp_path: Path) -> None:  # noqa: F811
    console_db, sensor_db = tmp_path / "console.db", tmp_path / "sensor.db"
    token = register_sensor(console_db, f"sensor-{net.tag}")
    console = ConsoleProc(console_db, free_port(), net)
    console.start()
    args = ("--no-dissect", "--console", console.url, "--token", token)
    sensor = start_sensor(net, sensor_db, *args, flush=0.3)
    wait_for(lambda: sensor_db.exists(), 20, "the sensor database")
    time.sleep(1.5)
    traffic = _flood(net, 6)
    for _ in range(3):  # killed while flushing and uploading, restarted on the same database
        time.sleep(1.0)
        sensor.send_signal(signal.SIGKILL)
        sensor.communicate(timeout=10)
        sensor = start_sensor(net, sensor_db, *args, flush=0.3)
    traffic.wait(30)
    time.sleep(1)
    out, err = stop(sensor)
    assert sensor.returncode == 0, err
    # a last run with nothing to capture drains whatever the kills left behind
    drain = start_sensor(net, sensor_db, *args, flush=0.3)
    wait_for(lambda: outbox_backlog(sensor_db) == 0, 60, "the backlog to drain")
    stop(drain)
    local = inventory_totals(str(sensor_db))
    assert local[1]
    assert inventory_totals(str(console_db)) == local


def _self_signed(tmp: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "console.crt", tmp / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class AckDropper:
    """A TCP relay that forwards each request but, for the first `drop` connections, closes
    the sensor's side instead of relaying the console's answer: acknowledgements get lost."""

    def __init__(self, target: int, drop: int) -> None:
        self.target, self.drop = target, drop
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.seen += 1
            threading.Thread(target=self._relay, args=(client, self.seen <= self.drop), daemon=True).start()

    def _relay(self, client: socket.socket, lose_answer: bool) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass

        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        if lose_answer:
            upstream.settimeout(10)
            try:
                upstream.recv(1)  # the console answered: it has committed the batch
            except OSError:
                pass
            for sock in (client, upstream):  # shutdown wakes the pump blocked in recv
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            return
        pump(upstream, client)
        client.close()
        upstream.close()


def _serve(console_db: Path, port: int, tmp: Path, *tls: str) -> subprocess.Popen[str]:
    args = [TAPWATCH, "serve", "--db", str(console_db), "--host", "127.0.0.1", "--port", str(port),
            "--log-file", str(tmp / "c.log")]
    if tls:
        args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _connects(port), 30, "the console")
    return proc


def test_tls_and_lost_acknowledgements(tmp_path: Path) -> None:
    console_db, sensor_db = tmp_path / "console.db", tmp_path / "sensor.db"
    token = register_sensor(console_db, "s1")
    build_outbox(sensor_db, CAPTURE, "s1")
    engine = open_engine(str(sensor_db))
    cert, key = _self_signed(tmp_path)
    port = free_port()
    proc = _serve(console_db, port, tmp_path, cert, key)
    try:  # over HTTPS with the console's self-signed certificate trusted
        pending = Uploader(engine, "http://unused", token).pending()
        up = Uploader(engine, f"https://127.0.0.1:{port}", token, ca_cert=cert)
        assert up.send_one() is True and up.send_one() is True
        # without the CA the console is refused: the certificate is really checked
        plain = Uploader(engine, f"https://127.0.0.1:{port}", token)
        assert plain.send_one() is None and "CERTIFICATE" in (plain.status.last_error or "").upper()
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    proc = _serve(console_db, port, tmp_path)
    try:  # acknowledgements lost on the way back: re-sent, recognised, applied once
        relay = AckDropper(port, drop=3)
        up = Uploader(engine, f"http://127.0.0.1:{relay.port}", token, max_backoff=0.3)
        remaining = up.pending()  # the health report went first, then data
        assert 3 <= remaining < pending
        up.start()
        wait_for(lambda: up.pending() == 0, 60, "the outbox to drain")
        up.stop()
        assert relay.seen > remaining  # the lost acknowledgements were retried
        # the same batch lost its acknowledgement three times; its fourth sending was recognised
        assert up.status.duplicates == 1 and up.status.errors == 3
        assert inventory_totals(str(console_db)) == inventory_totals(str(sensor_db))
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        engine.dispose()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False

