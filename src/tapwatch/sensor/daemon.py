"""The sensor's main loop: capture, feed the pipeline, flush on a timer, keep the uploader going.

SIGTERM and SIGINT end the loop after the current poll; the last delta is flushed, so a
clean stop loses nothing. A SIGKILL loses only what arrived since the last flush: every
flush is one committed transaction holding the local inventory and the outbox together.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tapwatch.sensor.engine import FlushReport, SensorPipeline
from tapwatch.sensor.health import HealthMeter
from tapwatch.sensor.live import LiveSource
from tapwatch.sensor.uploader import Uploader


@dataclass
class RunTotals:
    packets: int = 0
    bytes: int = 0
    drops: int = 0
    kernel_packets: int = 0
    flushes: int = 0
    reopens: int = 0
    seconds: float = 0.0


def run(source: LiveSource, pipeline: SensorPipeline, flush_seconds: float,
        uploader: Uploader | None = None, duration: float = 0.0,
        on_flush: Callable[[FlushReport, dict[str, Any]], None] | None = None,
        drain_seconds: float = 5.0) -> RunTotals:
    """Capture until a signal (or `duration` seconds); returns the totals."""
    meter = HealthMeter(source.interface, flush_seconds)
    started = time.monotonic()
    stop_at = started + duration if duration > 0 else None

    def stop(_signum: int, _frame: Any) -> None:
        source.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    if uploader is not None:
        uploader.start()
    totals = RunTotals()

    def flush() -> None:
        health = meter.report(source.poll_stats())
        if uploader is not None:
            st = uploader.status
            health["uploader"] = {"sent": st.sent, "errors": st.errors, "duplicates": st.duplicates,
                                  "rejected": st.rejected, "connected": st.connected,
                                  "last_error": st.last_error, "held": st.held}
        report = pipeline.flush(health)
        totals.flushes += 1
        if uploader is not None:
            uploader.wake()
        if on_flush is not None:
            on_flush(report, health)

    try:
        next_flush = time.monotonic() + flush_seconds
        for chunk in source.chunks():
            pipeline.feed(chunk)
            now = time.monotonic()
            if stop_at is not None and now >= stop_at:
                source.stop()
            if now >= next_flush:
                flush()
                next_flush = now + flush_seconds
        flush()  # the last delta
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if uploader is not None:
            uploader.stop(drain_seconds)
        if pipeline.rolling is not None:
            pipeline.rolling.close()
        stats = source.poll_stats()
        source.close()
    totals.packets, totals.bytes, totals.drops = stats.packets, stats.bytes, stats.drops
    totals.kernel_packets, totals.reopens = stats.kernel_packets, stats.reopens
    totals.seconds = time.monotonic() - started
    return totals
