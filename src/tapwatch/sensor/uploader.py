"""Sends the outbox to the console, one batch at a time, deleting only acknowledged batches.

A batch stays in the outbox until the console answers 200 for its id; the console
records applied ids in the same transaction as their data, so a batch re-sent after a
lost acknowledgement is recognised and not applied twice. Network errors and 5xx back
off exponentially (up to `max_backoff`); a batch the console rejects as unreadable (400,
413, 422) is set aside and counted, so one bad batch never blocks the rest. Data the
console refuses because its subscription has no plan in force is held, not set aside:
it stays in the outbox and is retried until a plan is added (health reports still go).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from tapwatch.sensor import wire
from tapwatch.sensor.outbox import Outbox, get_state, set_state
from tapwatch.store.db import sessions

log = logging.getLogger("tapwatch.sensor")
UPLOAD_PATH = "/api/v1/sensors/upload"
REJECTED = "outbox_rejected"


@dataclass
class UploadStatus:
    sent: int = 0  # batches acknowledged
    duplicates: int = 0  # acknowledged as already applied (a re-send)
    errors: int = 0
    rejected: int = 0
    last_error: str | None = None
    last_success: float | None = None  # time.time()
    connected: bool = False
    held: str | None = None  # why the console holds back our data (no plan), while it does


class Uploader:
    """A background thread draining the outbox of `engine` to `console_url`."""

    def __init__(self, engine: Engine, console_url: str, token: str, ca_cert: str | None = None,
                 timeout: float = 15.0, idle_seconds: float = 1.0, max_backoff: float = 30.0) -> None:
        self.sessions = sessions(engine)
        self.url = console_url.rstrip("/") + UPLOAD_PATH
        self.token = token
        self.timeout = timeout
        self.idle_seconds = idle_seconds
        self.max_backoff = max_backoff
        self.context = ssl.create_default_context(cafile=ca_cert) if self.url.startswith("https") else None
        self.status = UploadStatus()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tapwatch-uploader", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New batches are waiting: do not sit out the idle wait."""
        self._wake.set()

    def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop, after trying for up to `drain_seconds` to empty the outbox."""
        deadline = time.monotonic() + drain_seconds
        while drain_seconds and time.monotonic() < deadline and self.pending() > 0 and self.status.connected:
            time.sleep(0.1)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def pending(self) -> int:
        with self.sessions() as s:
            return Outbox.backlog(s)[0]

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                sent = self.send_one()
            except Exception as e:  # never let the thread die: log, back off, retry
                log.exception("upload failed")
                self.status.errors += 1
                self.status.last_error = str(e)
                sent = None
            if sent is None:  # failed: back off
                self.status.connected = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            elif sent:
                backoff = 0.5
            else:  # nothing to send
                self._wake.wait(self.idle_seconds)
                self._wake.clear()

    def send_one(self) -> bool | None:
        """Send the next batch: True sent, False nothing to send, None failed (retry later)."""
        with self.sessions() as s:
            batch = Outbox.next_batch(s)
            if batch is None:
                return False
            batch_id, body, kind = batch.batch_id, batch.body, batch.kind
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
            "Content-Encoding": "gzip", "X-Batch-Id": batch_id})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as resp:
                answer: dict[str, Any] = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            detail = e.read()[:2000].decode(errors="replace")
            self.status.errors += 1
            self.status.last_error = f"HTTP {e.code}: {detail[:300]}"
            if e.code in (400, 413, 422):
                self._reject(batch_id, e.code, detail)
                return True
            if e.code == 403 and e.headers.get(wire.REFUSAL) == wire.NO_PLAN:
                self._hold(detail)
            elif e.code in (401, 403):
                log.error("the console refused the sensor token (%s); fix --token", e.code)
            return None
        except (OSError, ValueError) as e:  # refused, reset, timeout, TLS, bad answer
            self.status.errors += 1
            self.status.last_error = str(e)
            return None
        if answer.get("batch_id") != batch_id:
            self.status.last_error = f"acknowledgement for another batch: {answer}"
            return None
        with self.sessions.begin() as s:
            Outbox.ack(s, batch_id)
        if self.status.held is not None and kind != "health":
            log.warning("the console takes this sensor's data again; sending the %d held batches",
                        self.pending() + 1)
            self.status.held = None
        self.status.sent += 1
        self.status.duplicates += 0 if answer.get("applied", True) else 1
        self.status.last_success = time.time()
        self.status.connected = True
        return True

    def _hold(self, detail: str) -> None:
        try:
            reason = str(json.loads(detail).get("detail", detail))
        except (ValueError, AttributeError):
            reason = detail
        if self.status.held is None:  # said once per refusal spell, not on every retry
            log.warning("the console holds back new data: %s. %d batches wait in the outbox and "
                        "are sent once a plan is added", reason, self.pending())
        self.status.held = reason

    def _reject(self, batch_id: str, code: int, detail: str) -> None:
        log.error("console rejected batch %s (HTTP %s: %s); set aside", batch_id, code, detail)
        with self.sessions.begin() as s:
            Outbox.ack(s, batch_id)
            rejected = dict(get_state(s, REJECTED, {}) or {})
            rejected["batches"] = rejected.get("batches", 0) + 1
            rejected["last"] = f"{batch_id}: HTTP {code}: {detail}"
            set_state(s, REJECTED, rejected)
        self.status.rejected += 1
