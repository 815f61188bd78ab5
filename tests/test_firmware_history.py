"""Rules of the rolling 24 h delivery history (firmware/history.py), against brute-force
references over the raw list of deliveries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.history import DeliveryHistory
from firmware.rules.limit24h import max_future_window_fg
from tests.strategies import scaled

MIN = 60_000
DAY = 86_400_000
# A rolling 24 h ending part-way into a minute touches 1441 minutes (the oldest partly).
WINDOW_MINUTES = 24 * 60 + 1


def rolling_sum(events, now: int) -> int:
    """Exactly what was delivered in the rolling 24 h (now - 24 h, now]."""
    return sum(f for t, f in events if now - DAY < t <= now)


def touching_sum(events, now: int) -> int:
    """What was delivered in every minute any part of which lies in (now - 24 h, now]:
    the conservative figure the minute buckets should give."""
    return sum(f for t, f in events if (t // MIN + 1) * MIN > now - DAY and t <= now)


def history_of(events) -> DeliveryHistory:
    h = DeliveryHistory()
    for t, f in events:
        h.add(t, f)
    return h


def test_rule_history_window_sums_the_last_24h_and_expires_old_buckets():
    t0 = 10 * DAY + 30_000
    events = [(t0, 100), (t0 + 5 * MIN, 20), (t0 + 12 * 3_600_000, 3)]
    h = history_of(events)
    assert h.window_fg(t0 + 12 * 3_600_000) == 123
    # t0's minute leaves the sum once all of it is more than 24 h old.
    assert h.window_fg(t0 + DAY - 1) == 123
    assert h.window_fg((t0 // MIN + 1) * MIN + DAY - 1) == 123
    assert h.window_fg((t0 // MIN + 1) * MIN + DAY) == 23
    assert h.window_fg(t0 + 5 * MIN + DAY + MIN) == 3
    assert h.window_fg(t0 + 3 * DAY) == 0


def test_bug_history_window_dropped_a_delivery_still_inside_the_rolling_24h():
    # 45 s into minute 0, then asked 10 s before that delivery is 24 h old: it is still in
    # the rolling 24 h, but 1440 buckets had already evicted minute 0.
    h = history_of([(45_000, 5)])
    now = 45_000 + DAY - 10_000
    assert rolling_sum([(45_000, 5)], now) == 5
    assert h.window_fg(now) == 5


@st.composite
def deliveries(draw, max_gap: int = 3 * 3_600_000):
    t = draw(st.integers(0, 5 * DAY))
    events = []
    for _ in range(draw(st.integers(0, 60))):
        t += draw(st.one_of(st.integers(0, 2 * MIN), st.integers(0, max_gap)))
        events.append((t, draw(st.integers(1, 10**12))))
    return events


@settings(max_examples=scaled(100))
@given(
    deliveries(),
    st.lists(st.integers(0, 2 * DAY), min_size=1, max_size=8),
    st.lists(st.tuples(st.integers(0, 59), st.integers(-2 * MIN, 2 * MIN)), max_size=8),
)
def test_rule_history_window_never_undercounts_and_errs_by_at_most_the_oldest_minute(events, offsets, near_expiry):
    h = history_of(events)
    last = events[-1][0] if events else 0
    queries = {last + off for off in offsets}
    # Also ask around the moment each delivery leaves the rolling 24 h.
    queries |= {events[i % len(events)][0] + DAY + d for i, d in near_expiry if events}
    for now in sorted(q for q in queries if q >= last):
        w = h.window_fg(now)
        assert w == touching_sum(events, now)
        # Never less than the rolling 24 h, never more than the 24 h and one minute.
        assert rolling_sum(events, now) <= w <= sum(f for t, f in events if now - DAY - MIN < t <= now)


@settings(max_examples=scaled(50))
@given(deliveries(max_gap=20 * MIN), st.integers(0, 3 * DAY))
def test_rule_history_per_minute_is_oldest_first_and_ends_with_the_current_minute(events, off):
    h = history_of(events)
    now = (events[-1][0] if events else 0) + off
    pm = h.per_minute(now)
    assert len(pm) == WINDOW_MINUTES
    m = now // MIN
    expect = [sum(f for t, f in events if t // MIN == m - (WINDOW_MINUTES - 1) + i) for i in range(WINDOW_MINUTES)]
    assert pm == expect
    assert sum(pm) == h.window_fg(now)


def test_rule_history_time_only_moves_forward():
    t = 3 * DAY
    h = history_of([(t, 7), (t + DAY + 2 * MIN, 11)])
    late = t + DAY + 2 * MIN
    assert h.window_fg(late) == 11  # the first delivery has left the window
    # Asking about an earlier time does not bring expired minutes back nor lose any.
    assert h.window_fg(t + 5 * MIN) == 11
    assert h.window_fg(late) == 11
    # A late report inside the window is counted in its minute; one older than the window
    # is not counted at all.
    h.add(late - 3 * 3_600_000, 13)
    h.add(late - DAY - 5 * MIN, 17)
    assert h.window_fg(late) == 24
    assert h.bucket((late - 3 * 3_600_000) // MIN) == 13
    assert h.bucket((late - DAY - 5 * MIN) // MIN) == 0


def test_rule_history_records_changed_minutes_for_the_nvm():
    h = history_of([(0, 1), (30_000, 1), (5 * MIN, 2)])
    assert h.dirty_minutes == {0, 5}


def test_rule_history_patient_bolus_starts_count_for_24h_from_each_start():
    h = DeliveryHistory()
    starts = [1_000, 2 * 3_600_000, 5 * 3_600_000]
    for s in starts:
        h.record_bolus_start(s)
    assert h.boluses_in_window(5 * 3_600_000) == 3
    assert h.oldest_bolus_in_window(5 * 3_600_000) == 1_000
    assert h.boluses_in_window(1_000 + DAY - 1) == 3
    assert h.boluses_in_window(1_000 + DAY) == 2  # exactly 24 h after the start: out
    assert h.oldest_bolus_in_window(1_000 + DAY) == 2 * 3_600_000
    assert h.boluses_in_window(5 * 3_600_000 + DAY) == 0
    assert h.oldest_bolus_in_window(5 * 3_600_000 + DAY) is None


@settings(max_examples=scaled(30))
@given(deliveries(max_gap=30 * MIN), st.lists(st.integers(0, 10 * DAY), max_size=10))
def test_rule_history_from_data_round_trip(events, starts):
    h = history_of(events)
    for s in sorted(starts):
        h.record_bolus_start(s)
    now = events[-1][0] if events else 0
    m = now // MIN
    saved = {str(mm): h.bucket(mm) for mm in range(m - WINDOW_MINUTES + 1, m + 1) if h.bucket(mm)}
    r = DeliveryHistory.from_data(saved, list(h.bolus_starts))
    assert r.per_minute(now) == h.per_minute(now)
    assert r.window_fg(now) == h.window_fg(now) == touching_sum(events, now)
    assert list(r.bolus_starts) == list(h.bolus_starts)
    assert r.dirty_minutes == set()


# ---------------------------------------------------------------- the projection


def brute_max_future_window(past: list[int], plan: list[int]) -> int:
    """Every window from now on: the one ending k minutes ahead holds the past minutes
    from index k and the planned minutes up to index k."""
    best = sum(past)
    for k in range(min(len(plan), len(past))):
        best = max(best, sum(past[k:]) + sum(plan[: k + 1]))
    return best


@st.composite
def sparse_minutes(draw, n: int = WINDOW_MINUTES):
    out = [0] * n
    for i, f in draw(st.dictionaries(st.integers(0, n - 1), st.integers(0, 10**9), max_size=40)).items():
        out[i] = f
    if draw(st.booleans()):  # a steady basal underneath
        base = draw(st.integers(0, 10**6))
        out = [f + base for f in out]
    return out


@settings(max_examples=scaled(30))
@given(sparse_minutes(), sparse_minutes())
def test_rule_history_max_future_window_matches_brute_force(past, plan):
    assert max_future_window_fg(past, plan) == brute_max_future_window(past, plan)


def test_rule_history_max_future_window_sees_a_bolus_meeting_old_delivery():
    # 1000 fg delivered 23 h 30 min ago, a bolus of 500 planned over the next 10 minutes:
    # the worst window from now holds both (1500); one 31 minutes on holds only the bolus.
    past = [0] * WINDOW_MINUTES
    past[30] = 1_000
    plan = [50] * 10 + [0] * (WINDOW_MINUTES - 10)
    assert max_future_window_fg(past, plan) == 1_500
    past[30], past[0] = 0, 1_000  # the oldest minute: it leaves before the plan's first minute counts alone
    assert max_future_window_fg(past, plan) == 1_050
