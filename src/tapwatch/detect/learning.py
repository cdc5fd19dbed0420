"""The learning period: while it lasts, what is seen becomes the baseline instead of alerts.

Time is capture time, so one long capture can hold both the learning period and the
monitored period. Learning ends at a configured date (default two weeks after the first
packet), when the number of new baseline entries has stayed low for a few whole days
(default 3 days of at most 5), by hand (`tapwatch learning stop`), or not at all
(`--no-learn`: monitoring from the first packet).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.store.detect_models import LearningState

DEFAULT_PERIOD = timedelta(days=14)
DEFAULT_QUIET_DAYS = 3


def current(session: Session) -> LearningState | None:
    return session.scalar(select(LearningState).order_by(LearningState.id).limit(1))


def begin(session: Session, first_packet: datetime, learn_for: timedelta | None = None,
          no_learn: bool = False) -> LearningState:
    """The state for a run whose first packet is `first_packet`, started on first use.

    `learn_for` (re)starts learning at this run's first packet for exactly that long;
    `no_learn` ends any learning at the run's first packet.
    """
    state = current(session)
    if state is None or learn_for is not None:
        if state is None:
            state = LearningState(started_at=first_packet, daily_new={})
            session.add(state)
        state.started_at = first_packet
        state.ends_at = first_packet + (learn_for if learn_for is not None else DEFAULT_PERIOD)
        # a duration given by hand is exactly how long to learn; the default may end when quiet
        state.quiet_days = 0 if learn_for is not None else DEFAULT_QUIET_DAYS
        state.ended_at = None
        state.ended_by = None
        state.daily_new = {}
    if no_learn and (state.ended_at is None or state.ended_at > first_packet):
        state.ended_at = max(first_packet, state.started_at)
        state.ended_by = "no-learn"
    return state


def stop(session: Session, at: datetime) -> LearningState:
    """End learning by hand at `at` (the newest traffic seen, in capture time)."""
    state = current(session)
    if state is None:
        state = LearningState(started_at=at, ends_at=at, daily_new={})
        session.add(state)
    if state.ended_at is None or state.ended_at > at:
        state.ended_at = at
        state.ended_by = "hand"
    return state


def end_of_learning(state: LearningState, new_entries: Iterable[datetime]) -> datetime | None:
    """When learning ends, given the first-seen times of this run's new baseline candidates:
    the configured end, an earlier quiet-period end, or None while it goes on."""
    if state.ended_at is not None:
        return state.ended_at
    daily = Counter(dict(state.daily_new or {}))
    for ts in new_entries:
        if ts >= state.started_at:
            daily[ts.date().isoformat()] += 1
    state.daily_new = dict(daily)
    end = state.ends_at
    if state.quiet_days > 0 and daily:
        day = state.started_at.date() + timedelta(days=1)  # the first whole day
        last = max(datetime.fromisoformat(d).date() for d in daily)
        quiet = 0
        while day <= last:
            quiet = quiet + 1 if daily.get(day.isoformat(), 0) <= state.quiet_max_new else 0
            if quiet >= state.quiet_days:
                at = datetime.combine(day + timedelta(days=1), datetime.min.time())
                if end is None or at < end:
                    end = at
                break
            day += timedelta(days=1)
    return end


def settle(state: LearningState, end: datetime | None, newest: datetime) -> None:
    """Record that learning ended, once the data has reached its end."""
    if state.ended_at is None and end is not None and newest >= end:
        state.ended_at = end
        state.ended_by = "quiet" if state.ends_at is None or end < state.ends_at else "date"
