"""The rolling 24 h hard limit: drug delivered in any 24 h, from every source, stays
within the prescription's hard limit (SR-002, SR-006, SR-040, SR-053).

Drug is counted in fg (1e-6 ng) at the catheter tip, where it reaches the patient:
basal, patient and clinician boluses, and priming strokes, which push the drug already in
the catheter out of its tip. The pump measures "the last 24 h" in whole minutes (1,441 of
them: firmware/history.py), so every window errs high, never low.

Two kinds of check:
  * a run of strokes (the guard, firmware/guard.py) fits when the drug already in the
    window plus the drug the whole run pushes out of the tip stays within the limit;
  * a bolus request (and a timed bolus at its time) projects planned basal and the timed
    boluses still to come forward and asks whether any rolling 24 h from now on would
    exceed the limit with the bolus in it, and if so from which minute it would not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice
from operator import sub

from ..dose import FG_PER_NG, MS_PER_DAY, Step

MINUTE_MS = 60_000


def fits(window_fg: int, add_fg: int, max_dose_24h_fg: int) -> bool:
    """SR-006, SR-040: drug already in the rolling 24 h plus what is added stays within the
    hard limit."""
    return window_fg + add_fg <= max_dose_24h_fg


def strokes_within(window_fg: int, stroke_fg: int, max_dose_24h_fg: int, wanted: int) -> int:
    """SR-040: how many of `wanted` strokes of stroke_fg each fit under the limit now."""
    if stroke_fg <= 0:
        return wanted
    return max(0, min(wanted, (max_dose_24h_fg - window_fg) // stroke_fg))


def drug_out_fg(catheter: Sequence[tuple[int, int]], reservoir_ng_per_ml: int, stroke_nl: int, strokes: int) -> int:
    """SR-040, SR-010: drug (fg) that `strokes` strokes push out of the catheter tip.

    `catheter` is what the catheter holds, tip first, as (nL, ng/mL) segments; what the
    strokes push in behind it comes from the reservoir. An empty catheter segment
    (0 ng/mL) carries no drug, so priming an empty catheter counts nothing until the
    reservoir's drug reaches the tip."""
    volume = stroke_nl * strokes
    out = 0
    for seg_nl, conc in catheter:
        take = min(volume, seg_nl)
        out += take * conc
        volume -= take
        if not volume:
            return out
    return out + volume * reservoir_ng_per_ml


# ---------------------------------------------------------------- projections for boluses


@dataclass(frozen=True)
class Window:
    """What a bolus decision needs to project the rolling 24 h: delivery in each minute
    the window touches (oldest first, the last is the current minute), the basal schedule
    in local time, basal accrued and not yet delivered, and the
    drug of one stroke at the highest concentration the catheter or reservoir holds."""

    now_ms: int
    local_ms: int
    past_per_minute_fg: tuple[int, ...]
    basal: tuple[Step, ...]  # () while therapy does not run: no basal is planned
    owed_fg: int
    max_dose_24h_fg: int
    stroke_fg: int
    # SR-053: the timed boluses still to come, as (ms from now, fg), each whole from its
    # start minute: for windows ending within a day of now that is never less than the
    # strokes will put in them.
    timed_fg: tuple[tuple[int, int], ...] = ()


def _add_timed(plan: list[int], w: Window) -> None:
    """The timed boluses into a per-minute plan whose minute 0 is the current minute."""
    into = w.now_ms % MINUTE_MS
    for after_ms, fg in w.timed_fg:
        k = (into + after_ms) // MINUTE_MS
        if k < len(plan):
            plan[k] += fg


def max_future_window_fg(past_per_minute: Sequence[int], future_per_minute: Iterable[int]) -> int:
    """Largest 24 h window sum from now on, given the last minutes the window touches
    (the last is the current minute) and a plan from the current minute on (index 0 is
    the current minute): the window ending k minutes from now holds past minutes k.. and
    planned minutes ..k."""
    past_total = sum(past_per_minute)
    plan = list(islice(future_per_minute, len(past_per_minute)))
    if not plan:
        return past_total
    planned = accumulate(plan)  # planned minutes ..k
    dropped = accumulate(islice(past_per_minute, len(plan) - 1), initial=0)  # past minutes ..k-1
    return past_total + max(0, max(map(sub, planned, dropped)))


def basal_plan_fg(steps: Sequence[Step], local_ms: int, into_minute_ms: int, minutes: int) -> list[int]:
    """Planned basal per minute (fg) from local time local_ms, which lies into_minute_ms
    into its minute: minute 0 is the rest of the current minute. Each minute is the step
    of the exact running integral rounded down, so the first k minutes always sum to the
    exact integral over them rounded down (rounding each minute down would lose up to
    1 fg a minute and project the rolling 24 h too low). One pass over minutes and
    schedule changes: a bolus request projects two days of them."""
    if not steps:
        return [0] * minutes
    starts = [st.start_s * 1000 for st in steps]
    rates = [st.rate_ng_per_day * FG_PER_NG for st in steps]
    last = len(steps) - 1
    day0 = local_ms - local_ms % MS_PER_DAY
    tod = local_ms - day0
    i = max((k for k, st in enumerate(starts) if st <= tod), default=-1)  # -1: yesterday's last step

    def change_after(k: int, day: int) -> int:
        return day + starts[k + 1] if k < last else day + MS_PER_DAY + starts[0]

    change = change_after(i, day0)
    rate = rates[i]
    if i == -1:
        day0 -= MS_PER_DAY
        i = last
    out: list[int] = []
    t = local_ms
    end = local_ms - into_minute_ms + MINUTE_MS
    exact = given = 0  # fg*ms/day units, fg
    while len(out) < minutes:
        while change <= end:
            exact += rate * (change - t)
            t = change
            i += 1
            if i > last:
                i = 0
                day0 += MS_PER_DAY
            rate = rates[i]
            change = change_after(i, day0)
        exact += rate * (end - t)
        t = end
        total = exact // MS_PER_DAY
        out.append(total - given)
        given = total
        # The whole minutes before the next change run at one rate: all of them at once.
        n = min(minutes - len(out), (change - end) // MINUTE_MS)
        if n > 0:
            # Minute k ends at exact + k * step: its total is (exact + k * step) // day. In
            # whole and remainder parts (given = exact // day), each minute is the step's
            # whole part plus a carry of 0 or 1, all in small integers.
            step = rate * MINUTE_MS
            whole, part = divmod(step, MS_PER_DAY)
            rem = exact - given * MS_PER_DAY
            carries = [(rem + k * part) // MS_PER_DAY for k in range(n + 1)]
            out.extend(whole + c for c in map(sub, carries[1:], carries))
            exact += step * n
            given += whole * n + carries[n]
            t = end + n * MINUTE_MS
        end = t + MINUTE_MS
    return out


def max_window_with_fg(w: Window, dose_fg: int) -> int:
    """SR-006: the largest rolling-24 h total from now on if a bolus of dose_fg is given
    now: past delivery, planned basal (with what is owed) and the bolus, counted whole
    from this minute. Whole, not spread over its duration: the guard lets a bolus run
    start only if the window already holds room for all of it, so a bolus granted on a
    spread projection could be refused at its first stroke."""
    n = len(w.past_per_minute_fg)
    plan = basal_plan_fg(w.basal, w.local_ms, w.now_ms % MINUTE_MS, n)
    plan[0] += w.owed_fg + dose_fg
    _add_timed(plan, w)
    return max_future_window_fg(w.past_per_minute_fg, plan)


def lifts_at_ms(w: Window, dose_fg: int) -> int | None:
    """SR-006: the first minute from which a bolus of dose_fg passes max_window_with_fg,
    if nothing but the planned basal is given meanwhile; None if not within a day.

    Window j (minutes from now) holds the past minutes still in it and the planned basal
    up to minute j; a bolus started in minute a must keep every window from a to a + 24 h
    within the hard limit with its whole dose in it. Windows that end more than a day
    from now have dropped minutes between now and a, where real delivery (in whole
    strokes) may lag the smooth plan by a stroke: one stroke is kept in hand there, so a
    request at the time given is granted."""
    past = w.past_per_minute_fg
    n = len(past)
    minute0 = w.now_ms // MINUTE_MS * MINUTE_MS
    plan = basal_plan_fg(w.basal, w.local_ms, w.now_ms - minute0, 2 * n)
    plan[0] += w.owed_fg
    _add_timed(plan, w)
    room = w.max_dose_24h_fg - dose_fg
    past_from = [*reversed([0, *accumulate(reversed(past))])]  # past_from[i] = sum(past[i:])
    plan_to = [0, *accumulate(plan)]  # plan_to[k] = sum(plan[:k])
    # win[j]: the window ending j minutes from now, without the bolus
    win = [past_from[j] + plan_to[j + 1] for j in range(n)]
    win += [plan_to[j + 1] - plan_to[j - n + 1] for j in range(n, 2 * n)]
    win_after = [*reversed([0, *accumulate(reversed(win[:n]), max)])]  # win_after[x] = max(win[x:n])
    late = 0  # max(win[n:n + a]): windows that dropped minutes between now and a
    for a in range(1, n + 1):
        late = max(late, win[n + a - 1])
        if max(win_after[a], late + w.stroke_fg) <= room:
            return minute0 + a * MINUTE_MS
    return None
