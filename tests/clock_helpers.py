"""A wall clock tests can move (tapwatch.clock), so trials expire in milliseconds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tapwatch import clock

T0 = datetime(2026, 3, 1, 12, 0)  # naive UTC, like the stored times


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at.replace(tzinfo=UTC)


@pytest.fixture
def now() -> Iterator[Clock]:
    """The clock, at T0 until a test moves `now.at`; the system clock again afterwards."""
    c = Clock(T0)
    clock.set_clock(c)
    yield c
    clock.set_clock(None)
