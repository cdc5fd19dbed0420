"""The capture-to-inventory pipeline: read, decode, aggregate, store — one file at a time.

Each file is analyzed in one pass and stored in one transaction, so a failure in one
file never loses what earlier files stored. A file whose content was ingested before is
recognised by its hash and skipped.
"""

from __future__ import annotations

import gc
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tapwatch.capture import (
    CaptureError,
    CaptureReader,
    CaptureWarning,
    iter_capture_files,
    linktypes,
)
from tapwatch.capture.reader import content_prefilter
from tapwatch.decode import Decoder, kernel, protocols
from tapwatch.decode.aggregate import Aggregator, ConnectionRecord, fill_missing_macs
from tapwatch.decode.devices import ip_str, mac_str
from tapwatch.detect import Conn, DetectStats, RunInputs, detect
from tapwatch.dissect.stage import DissectResults, DissectStage
from tapwatch.store import evidence, inventory
from tapwatch.store.db import sessions
from tapwatch.store.identity import refresh_identity
from tapwatch.store.inventory import ns_to_dt
from tapwatch.store.models import Device

Progress = Callable[[str, int, int], None]  # (path, bytes read, packets so far)


@dataclass
class FileResult:
    path: str
    status: str  # "analyzed", "duplicate", "error"
    packets: int = 0
    seconds: float = 0.0
    warnings: list[CaptureWarning] = field(default_factory=list)
    error: str | None = None
    events: int = 0
    stats: inventory.IngestStats = field(default_factory=inventory.IngestStats)
    detection: DetectStats | None = None
    forwarding: str | None = None  # what was sent to the SIEM rules (None: nothing to send)


@dataclass
class RunSummary:
    files: list[FileResult] = field(default_factory=list)

    @property
    def packets(self) -> int:
        return sum(f.packets for f in self.files)

    @property
    def errors(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "error"]

    @property
    def warnings(self) -> list[CaptureWarning]:
        return [w for f in self.files for w in f.warnings]

    def total(self, attr: str) -> int:
        return sum(getattr(f.stats, attr) for f in self.files)

    def alerts(self, attr: str = "raised") -> int:
        return sum(getattr(f.detection, attr) for f in self.files if f.detection)


class Analyzer:
    """Analyzes capture files into the inventory database behind `engine`."""

    def __init__(self, engine: Engine, sensor: str | None = None,
                 progress: Progress | None = None, dissect: bool = True, detect: bool = True,
                 learn_for: timedelta | None = None, no_learn: bool = False) -> None:
        self.engine = engine
        self.sessions = sessions(engine)
        self.sensor = sensor or socket.gethostname()
        self.progress = progress
        self.dissect = dissect
        self.detect = detect and dissect  # the engines read the dissectors' signals
        self.learn_for = learn_for
        self.no_learn = no_learn

    def run(self, paths: Iterable[str | Path]) -> RunSummary:
        summary = RunSummary()
        for path in iter_capture_files(paths):
            summary.files.append(self.analyze_file(path))
        return summary

    def analyze_file(self, path: str | Path) -> FileResult:
        started = time.perf_counter()
        result = FileResult(str(path), "analyzed")
        try:
            size, head = content_prefilter(Path(path))
            with CaptureReader(path) as reader:
                if self._seen_before(size, head, path):
                    result.status = "duplicate"
                    return result
                self._analyze(reader, result, size, head)
            if result.detection and (result.detection.raised or result.detection.updated):
                self._forward(result)
        except CaptureError as e:
            result.status, result.error = "error", str(e)
        except OSError as e:
            result.status, result.error = "error", f"{path}: {e.strerror or e}"
        finally:
            result.seconds = time.perf_counter() - started
        return result

    def _forward(self, result: FileResult) -> None:
        """Send new alerts to the forwarding rules, after the analysis is committed (a SIEM
        that is down must not hold the inventory back; the rules retry next time)."""
        from tapwatch.integrations.forwarding import forward_new_alerts

        with self.sessions.begin() as s:
            report = forward_new_alerts(s)
        if report.rules:
            result.forwarding = report.summary()
            if report.failed:
                result.warnings.append(CaptureWarning(result.path, report.summary()))

    def _seen_before(self, size: int, head: str, path: str | Path) -> bool:
        with self.sessions() as s:
            if not inventory.candidates(s, size, head):
                return False
            digest = CaptureReader.hash_file(path)
            return inventory.is_ingested(s, digest)

    def _analyze(self, reader: CaptureReader, result: FileResult, size: int, head: str) -> None:
        stage = DissectStage(signals=self.detect) if self.dissect else None
        decoder = Decoder(picker=stage.picker if stage else None)
        agg = Aggregator()
        # What exists now (modules, numba, the ORM) lives as long as the process: leave it
        # out of the collector's full passes while this file runs, which would otherwise
        # scan it again and again (a tenth of the run on the benchmark capture).
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(50_000, 50, 100)
        try:
            self._ingest(reader, result, size, head, decoder, agg, stage)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()

    def _ingest(self, reader: CaptureReader, result: FileResult, size: int, head: str,
                decoder: Decoder, agg: Aggregator, stage: DissectStage | None) -> None:
        skipped: Counter[tuple[int, int]] = Counter()  # (status, link type) -> packets
        first_ns: int | None = None
        last_ns: int | None = None
        gap = Silence()
        for chunk in reader.chunks():
            for rows in decoder.batches(chunk):
                agg.update(rows)
                if stage:
                    stage.batch(chunk, rows)
            n = len(chunk)
            status = decoder.status[:n]
            bad = status != kernel.OK
            if bad.any():
                for st, lt in zip(status[bad].tolist(), chunk.linktype[bad].tolist(), strict=True):
                    skipped[(st, lt)] += 1
            if n:
                gap.update(chunk.ts[:n])
                lo, hi = int(chunk.ts.min()), int(chunk.ts.max())
                first_ns = lo if first_ns is None else min(first_ns, lo)
                last_ns = hi if last_ns is None else max(last_ns, hi)
            if self.progress:
                self.progress(result.path, reader.base + reader.pos, reader.packets)
        if stage:
            stage.finish()
        result.packets = reader.packets
        result.warnings = reader.warnings + _skip_warnings(result.path, skipped)
        digest = reader.digest()
        with self.sessions.begin() as s:
            if inventory.is_ingested(s, digest):
                result.status = "duplicate"
                return
            addresses, connections = fill_missing_macs(agg.addresses(), agg.connections())
            result.stats = inventory.merge_run(s, addresses, connections, self.sensor)
            file_id = inventory.record_file(
                s, content_hash=digest, size=size, head_hash=head, path=str(result.path),
                sensor=self.sensor, packets=reader.packets, first_ns=first_ns, last_ns=last_ns,
            )
            if stage:
                result.events, ids = store_results(s, stage.results, result.stats, file_id)
                run = None
                if self.detect and first_ns is not None and last_ns is not None:
                    run = RunInputs(
                        sensor=self.sensor, file_id=file_id, first=ns_to_dt(first_ns),
                        last=ns_to_dt(last_ns), connections=[conn_of(c) for c in connections],
                        events=stage.results.events, signals=stage.results.signals,
                        errors=stage.results.errors, new_devices=result.stats.new_devices,
                        gap=gap.longest())
                result.detection = identify_and_detect(s, ids, run, self.learn_for, self.no_learn)


def store_results(s: Session, results: DissectResults, stats: inventory.IngestStats,
                  file_id: int | None) -> tuple[int, set[int]]:
    """Store what the dissectors found; returns the events stored and the devices touched."""
    touched = evidence.merge_facts(s, results)
    events = evidence.store_events(s, results, file_id)
    s.flush()
    return events, stats.device_ids | evidence.device_ids_of(s, touched)


def identify_and_detect(s: Session, ids: set[int], run: RunInputs | None,
                        learn_for: timedelta | None = None, no_learn: bool = False) -> DetectStats | None:
    """Re-identify the touched devices, then run detection (when `run` is given) on what the
    run saw, with each device's firmware as it was before (a change is itself a finding)."""
    devices = [d for part in inventory.chunks(sorted(ids))
               for d in s.scalars(select(Device).where(Device.id.in_(part)))] if run else []
    firmware = {d.id: d.firmware for d in devices}
    refresh_identity(s, ids)
    if run is None:
        return None
    s.flush()
    run.devices, run.firmware_before = devices, firmware
    return detect(s, run, learn_for=learn_for, no_learn=no_learn)


class Silence:
    """The longest gap between consecutive packets (capture time), across chunks."""

    def __init__(self) -> None:
        self.prev: int | None = None
        self.best = (0, 0, 0)  # (length, start, end) in ns

    def update(self, ts: np.ndarray) -> None:
        if self.prev is not None:
            ts = np.concatenate(([self.prev], ts))
        if len(ts) > 1:
            d = np.diff(ts)
            i = int(d.argmax())
            if int(d[i]) > self.best[0]:
                self.best = (int(d[i]), int(ts[i]), int(ts[i + 1]))
        self.prev = int(ts[-1])

    def longest(self) -> tuple[datetime, datetime] | None:
        return (ns_to_dt(self.best[1]), ns_to_dt(self.best[2])) if self.best[0] else None


def conn_of(c: ConnectionRecord) -> Conn:
    return Conn(
        client=(mac_str(c.client_mac) or None, ip_str(c.client_hi, c.client_lo) or None),
        server=(mac_str(c.server_mac) or None, ip_str(c.server_hi, c.server_lo) or None),
        transport=inventory.TRANSPORTS.get(c.ipproto, f"ip-{c.ipproto}"), port=c.server_port,
        protocol=protocols.NAMES[c.app], first=ns_to_dt(c.first_ns), last=ns_to_dt(c.last_ns),
        bytes=c.bytes_c2s + c.bytes_s2c, packets=c.packets_c2s + c.packets_s2c,
    )


def _skip_warnings(path: str, skipped: Counter[tuple[int, int]]) -> list[CaptureWarning]:
    out = []
    for (status, lt), count in sorted(skipped.items()):
        if status == kernel.UNSUPPORTED_LINK:
            msg = f"unsupported link type {linktypes.describe(lt)}: {count} packets skipped"
        elif status == kernel.MALFORMED:
            msg = f"{count} malformed packets (headers cut short) on {linktypes.describe(lt)}"
        else:
            msg = f"{count} encrypted 802.11 frames: addresses only, no payload"
        out.append(CaptureWarning(path, msg))
    return out

