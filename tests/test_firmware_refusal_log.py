"""What a failure or a refusal costs (issue 14): the budget arithmetic, the rules of SR-055
and SR-056 as pure functions, the CLI's rendering of the summary entries, and the
worst case of SR-056's arithmetic run whole on the controller: a month at the heaviest
prescription with every kind of refusal flooded."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.config import FirmwareConfig
from firmware.rules import auth_failure, refusal_log
from firmware.rules.auth_failure import Answer, FrameFacts
from firmware.rules.budget import Budget, full, next_token_ms, refilled, take
from firmware.rules.refusal_log import COUNT_MAX, KindLog
from protocol import codec
from protocol.auth import FrameSigner, new_key
from protocol.codes import BolusDecision, LogEvent, NakReason, Role
from protocol.messages import BasalStep, BolusRequest, LogEntry, Nak, ProgramAck, Start, StartAck, Stop, TimedBolus
from tests.fake_pump import FakePump
from tests.test_firmware_controller import DAY, MIN, fill, program, read_log

EVERY = 60_000

# ================================================================ the budget


def test_a_budget_spends_its_burst_then_one_an_interval():
    b = full(3, 0)
    spent = []
    for t in (0, 0, 0, 0, 59_999, 60_000, 60_000, 150_000, 180_000):
        b, ok = take(b, t, 3, EVERY)
        spent.append(ok)
    assert spent == [True, True, True, False, False, True, False, True, True]


def test_a_budget_keeps_the_part_of_an_interval_already_waited():
    b = Budget(0, 0)
    b = refilled(b, 90_000, 3, EVERY)  # one token, and 30 s toward the next
    assert (b.tokens, b.at_ms) == (1, 60_000)
    assert next_token_ms(b, 3, EVERY) == 120_000
    assert refilled(b, 120_000, 3, EVERY).tokens == 2


def test_a_budget_refills_to_its_burst_not_beyond_and_counts_from_the_next_spend():
    b = refilled(Budget(0, 0), 10 * 60_000, 3, EVERY)
    assert b == Budget(3, 10 * 60_000) and next_token_ms(b, 3, EVERY) is None
    b, _ = take(b, 20 * 60_000, 3, EVERY)
    assert b == Budget(2, 20 * 60_000) and next_token_ms(b, 3, EVERY) == 21 * 60_000


def test_time_that_goes_back_adds_nothing():
    assert refilled(Budget(0, 100_000), 0, 3, EVERY) == Budget(0, 100_000)


@given(
    burst=st.integers(1, 10),
    every=st.integers(1, 10_000),
    steps=st.lists(st.integers(0, 30_000), min_size=1, max_size=200),
)
def test_a_budget_never_spends_more_than_its_burst_and_one_an_interval(burst, every, steps):
    b, t, spent = full(burst, 0), 0, 0
    for dt in steps:
        t += dt
        b, ok = take(b, t, burst, every)
        spent += ok
        assert 0 <= b.tokens <= burst
        assert spent <= burst + t // every


# ================================================================ SR-055


def facts(**kw) -> FrameFacts:
    f = FrameFacts(authentic=False, now_ms=0, nak_budget=Budget(2, 0), nak_burst=2, nak_every_ms=EVERY)
    return replace(f, **kw)


def test_rule_an_authentic_frame_is_served_whatever_its_key_ids_budget():
    for budget in (Budget(0, 0), Budget(2, 0)):
        assert auth_failure.answer(facts(authentic=True, nak_budget=budget)) == (Answer.SERVE, budget)


def test_rule_a_failure_is_answered_within_its_budget_and_dropped_beyond_it():
    f = facts()
    answers = []
    for _ in range(4):
        a, budget = auth_failure.answer(f)
        answers.append(a)
        f = replace(f, nak_budget=budget)
    assert answers == [Answer.NAK, Answer.NAK, Answer.DROP, Answer.DROP]
    assert auth_failure.answer(replace(f, now_ms=EVERY))[0] is Answer.NAK


# ================================================================ SR-056


def note(k: KindLog, now: int) -> refusal_log.Verdict:
    return refusal_log.log_refusal(k, now, 2, EVERY)


def test_rule_refusals_are_logged_one_by_one_within_the_burst_then_counted():
    k = KindLog(full(2, 0))
    out = []
    for _ in range(5):
        v = note(k, 0)
        out.append((v.summary, v.one_by_one))
        k = v.kind
    assert out == [(0, True), (0, True), (0, False), (0, False), (0, False)]
    assert k.unlogged == 3
    assert refusal_log.summary_at_ms(k, 2, EVERY) == EVERY


def test_rule_the_count_goes_out_first_when_the_budget_comes_back():
    k = KindLog(Budget(0, 0), unlogged=7)
    assert refusal_log.summary_due(k, EVERY - 1, 2, EVERY) == (KindLog(Budget(0, 0), 7), 0)
    k2, count = refusal_log.summary_due(k, EVERY, 2, EVERY)
    assert count == 7 and k2.unlogged == 0 and k2.budget.tokens == 0
    # A refusal at that moment: the count takes the token, the refusal is counted anew.
    v = note(k, EVERY)
    assert (v.summary, v.one_by_one, v.kind.unlogged) == (7, False, 1)
    # With two tokens back, the count and the refusal are both logged.
    v = note(k, 2 * EVERY)
    assert (v.summary, v.one_by_one, v.kind.unlogged) == (7, True, 0)


def test_rule_a_count_saturates_and_nothing_waits_when_nothing_was_counted():
    v = note(KindLog(Budget(0, 0), unlogged=COUNT_MAX), 0)
    assert v.kind.unlogged == COUNT_MAX
    assert refusal_log.summary_at_ms(KindLog(Budget(0, 0)), 2, EVERY) is None
    assert refusal_log.summary_due(KindLog(Budget(2, 0)), 0, 2, EVERY) == (KindLog(Budget(2, 0)), 0)


@given(st.lists(st.integers(0, 3 * EVERY), min_size=1, max_size=300))
def test_rule_a_kind_never_logs_more_than_its_burst_and_one_an_interval_and_loses_no_count(gaps):
    k, t, entries, counted_out, refusals = KindLog(full(2, 0)), 0, 0, 0, 0
    for dt in gaps:
        t += dt
        k, count = refusal_log.summary_due(k, t, 2, EVERY)  # the wake-up's flush
        entries += bool(count)
        counted_out += count
        v = note(k, t)
        k = v.kind
        refusals += 1
        entries += bool(v.summary) + v.one_by_one
        counted_out += v.summary + v.one_by_one
        assert entries <= 2 + t // EVERY
    k, count = refusal_log.summary_due(k, t + 10 * EVERY, 2, EVERY)
    assert counted_out + count == refusals


# ================================================================ the CLI


@pytest.mark.parametrize(
    ("entry", "fields"),
    [
        (LogEntry(seq=7, time_s=0, event=LogEvent.AUTH_FAILURES_SUMMARY, arg0=1, arg1=523), {"role": "clinician"}),
        (LogEntry(seq=7, time_s=0, event=LogEvent.AUTH_FAILURES_SUMMARY, arg0=0, arg1=523), {"role": 0}),
        (
            LogEntry(seq=8, time_s=0, event=LogEvent.REFUSALS_SUMMARY, arg0=LogEvent.BOLUS_REQUEST, arg1=523),
            {"refused": "bolus_request"},
        ),
    ],
)
def test_thecal_log_names_the_summaries_fields(entry, fields):
    from tools.cli import _log_fields

    out = _log_fields(entry)
    assert out["count"] == 523 and out["type"] == entry.event.name.lower()
    assert fields.items() <= out.items()


# ================================================================ SR-056's arithmetic, whole


def test_a_month_at_the_heaviest_prescription_with_every_kind_of_refusal_flooded_fits_the_ring():
    """SR-056's worst case on the controller, its log the real 10,000 entries: 31 days of
    about the most therapy records a prescription allows (48 patient boluses a day, each
    pressed as soon as the lockout allows, and 8 timed boluses: 168 records a day, with
    refills, deliveries and state changes on top) while the seven kinds of noise come
    often enough to spend every kind's budget the moment it comes back: each hour
    forged frames under the clinician's and the patient's key ids and unsigned, a STOP the
    patient may not send, a command id sent again, a program refused; and after every
    press a second one, denied. Nothing of the month, nor from before it, is pushed out.
    (Before issue 14 each of those refusals was an entry: the ring wrapped in the month.)"""
    cfg = FirmwareConfig()
    conc, dose = 5_000_000, 20_000  # 5 mg/mL: 2,500 ng a stroke; a bolus is 8 strokes
    timed = tuple(TimedBolus(start_s=k * 3 * 3_600, dose_ng=dose, duration_s=60) for k in range(8))
    p = FakePump()
    p.power_on()
    rx = {
        "concentration_ng_per_ml": conc,
        "basal": (BasalStep(start_s=0, rate_ng_per_day=1_000_000),),
        "bolus_dose_ng": dose,
        "bolus_duration_s": 60,
        "bolus_lockout_s": 15 * 60,
        "bolus_max_per_24h": 48,
        "timed_bolus": timed,
    }
    assert isinstance(p.request(program(p, **rx)), ProgramAck)
    fill(p, conc=conc)
    assert isinstance(p.request(Start(command_id=p.next_id())), StartAck)
    start_log = read_log(p)
    forged = [FrameSigner(Role.CLINICIAN, new_key()), FrameSigner(Role.PATIENT, new_key()), None]
    granted = denied = noise = 0
    t0 = p.now_ms
    for day in range(31):
        if day in (10, 20):  # the month needs about 13 mL
            fill(p, conc=conc)
        for slot in range(48):  # presses at :10 and :40, off the timed boluses at whole hours
            p.advance_to(t0 + day * DAY + slot * 30 * MIN + 10 * MIN)
            ack = p.request(BolusRequest(command_id=p.next_id()), Role.PATIENT)
            granted += ack.decision is BolusDecision.GRANTED
            again = p.request(BolusRequest(command_id=p.next_id()), Role.PATIENT)
            assert again.decision is not BolusDecision.GRANTED
            denied += 1 + (ack.decision is not BolusDecision.GRANTED)
            if slot % 2:
                continue
            for i, signer in enumerate(forged):
                seq = 50_000 + i
                reply = p.relay_maybe(codec.encode_to_body(Stop(command_id=1), seq, signer), seq)
                assert reply is None or reply.reason is NakReason.AUTH_FAILED
            assert p.request(Stop(command_id=p.next_id()), Role.PATIENT).reason is NakReason.NOT_PERMITTED
            assert p.request(BolusRequest(command_id=p.last_id - 1), Role.PATIENT).reason is NakReason.WRONG_STATE
            assert isinstance(p.request(program(p, drug="aspirin")), Nak)  # (out of range, or a bolus runs)
            noise += 6
    p.advance(cfg.refusal_log_every_ms)  # the last counts come out
    log = read_log(p)
    assert log[0].seq == 1 and log[: len(start_log)] == start_log, "the ring wrapped: records were lost"
    month = log[len(start_log) :]
    therapy = [e for e in month if not _noise(e)]
    started = [e for e in therapy if e.event is LogEvent.BOLUS_STARTED]
    timed_done = [e for e in therapy if e.event is LogEvent.TIMED_BOLUS]
    assert granted >= 31 * 46 and len(timed_done) >= 31 * 8 - 1
    assert len(started) == granted + sum(e.arg1 == 0 for e in timed_done)  # TimedBolusOutcome.STARTED
    assert len(therapy) >= 31 * 168
    # The noise stayed within SR-056's bound, and every refusal is in it, one by one or counted.
    entries = [e for e in month if _noise(e)]
    assert len(entries) <= 7 * (cfg.refusal_log_burst + (p.now_ms - t0) // cfg.refusal_log_every_ms)
    total = sum(1 for e in entries if not e.event.name.endswith("SUMMARY"))
    total += sum(e.arg1 for e in entries if e.event.name.endswith("SUMMARY"))
    assert total == noise + denied


def _noise(e) -> bool:
    if e.event is LogEvent.BOLUS_REQUEST:
        return e.arg1 != BolusDecision.GRANTED
    return e.event in (
        LogEvent.AUTH_FAILED,
        LogEvent.REPLAY_REJECTED,
        LogEvent.NOT_PERMITTED,
        LogEvent.COMMAND_REFUSED,
        LogEvent.PROGRAM_REFUSED,
        LogEvent.AUTH_FAILURES_SUMMARY,
        LogEvent.REFUSALS_SUMMARY,
    )
