"""Sensor health: rates and drops measured on the sensor, and the state the console shows.

States, in the order they are decided: "revoked", "pending activation" (never
connected), "disconnected" (no contact for a while), "no traffic" (connected, but no
packets lately), "healthy".
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tapwatch import __version__
from tapwatch.sensor.live import CaptureStats

DISCONNECTED_AFTER = timedelta(minutes=2)
NO_TRAFFIC_AFTER = timedelta(minutes=5)
STATES = ("healthy", "no traffic", "disconnected", "pending activation", "revoked")


@dataclass
class HealthMeter:
    """Turns the capture counters into per-second rates between two reports."""

    interface: str
    flush_seconds: float
    _last: tuple[float, int, int, int] | None = None
    started: float = field(default_factory=time.monotonic)

    def report(self, stats: CaptureStats, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        prev = self._last or (self.started, 0, 0, 0)
        span = max(now - prev[0], 1e-6)
        self._last = (now, stats.packets, stats.bytes, stats.drops)
        return {
            "at_ns": time.time_ns(), "version": __version__, "hostname": socket.gethostname(),
            "interface": self.interface, "link_up": stats.link_up,
            "packets": stats.packets, "bytes": stats.bytes, "drops": stats.drops,
            "kernel_packets": stats.kernel_packets, "reopens": stats.reopens,
            "packets_per_s": round((stats.packets - prev[1]) / span, 1),
            "bytes_per_s": round((stats.bytes - prev[2]) / span, 1),
            "drops_since_last": stats.drops - prev[3],
            "flush_seconds": self.flush_seconds,
        }


def state(*, revoked: bool, activated_at: datetime | None, last_connected: datetime | None,
          last_traffic: datetime | None, now: datetime,
          disconnected_after: timedelta = DISCONNECTED_AFTER,
          no_traffic_after: timedelta = NO_TRAFFIC_AFTER) -> str:
    if revoked:
        return "revoked"
    if activated_at is None:
        return "pending activation"
    if last_connected is None or now - last_connected > disconnected_after:
        return "disconnected"
    if last_traffic is None or now - last_traffic > no_traffic_after:
        return "no traffic"
    return "healthy"
