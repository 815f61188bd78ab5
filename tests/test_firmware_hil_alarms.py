"""The controller firmware over real ptys: alarms a clinic lives with (issue 12, items 4-6).

  * SR-050: a pump left stopped reminds (therapy_stopped: low, medium for baclofen);
    starting clears it; stopping and starting again, a reset or an open refill do not put
    it off.
  * SR-051: recovery by policy: a motor stall that clears resumes delivery by itself
    (logged, no catch-up, the alarm latched until acknowledged); an occlusion holds; a
    drug library may say otherwise per drug; nothing resumes while a hold alarm stands.
  * SR-052: acknowledge versus reset, made visible in STATUS, in the acknowledgement's
    answer and in a START refused while halted.

Delivery is judged by the emulator's ground truth.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from protocol.codes import AlarmId, BeepPattern, Fault, Link, LogEvent, NakReason, Priority, TherapyState
from protocol.messages import (
    AlarmCleared,
    AlarmRaised,
    RefillBegin,
    SimClearFault,
    SimInjectFault,
    SimPowerCycle,
    Stop,
    TherapyStateChanged,
)
from tests.harness import Procs, PumpHost, firmware_pump, write_drug_library
from tools.client import Refused

MG = 1_000_000
MCG = 1_000
MORPHINE = 5 * MG  # ng/mL
BACLOFEN = 2 * MG  # 2 mg/mL (2000 mcg/mL, the library's ceiling)
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
REMINDER = HOUR  # firmware/config.py therapy_stopped_alarm_ms


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def running(procs: Procs, rate: int = 4 * MG, drug_library=None) -> PumpHost:
    """Morphine 5 mg/mL, 12 mL filled, flat basal `rate` (4 mg/day: a stroke every 54 s),
    running for an hour."""
    pump = firmware_pump(procs, drug_library=drug_library)
    pump.fill(12_000_000, MORPHINE)
    pump.program(basal=((0, rate),), max_dose_24h_ng=5 * MG)
    assert pump.start().state is TherapyState.RUNNING
    pump.advance(HOUR)
    return pump


def baclofen(procs: Procs, start: bool = True) -> PumpHost:
    """Baclofen 2 mg/mL, 12 mL filled, 500 mcg/day (a stroke of 1 mcg every 173 s),
    running for an hour (or left stopped)."""
    pump = firmware_pump(procs, initial_concentration_ng_per_ml=BACLOFEN)
    pump.fill(12_000_000, BACLOFEN, drug="baclofen")
    pump.program(drug="baclofen", concentration_ng_per_ml=BACLOFEN, basal=((0, 500 * MCG),), max_dose_24h_ng=800 * MCG)
    if start:
        assert pump.start().state is TherapyState.RUNNING
        pump.advance(HOUR)
    return pump


def stop(pump: PumpHost) -> int:
    """Stop therapy; returns the pump time it stopped at."""
    assert pump.request(Stop(command_id=pump.next_id())).state is TherapyState.STOPPED
    return pump.truth().time_ms


def inject(pump: PumpHost, fault: Fault, value: int = 0) -> None:
    pump.sim(SimInjectFault(fault=fault, link=Link.NONE, value=value, rate_ppm=0, seed=0))


def clear(pump: PumpHost, fault: Fault) -> None:
    pump.sim(SimClearFault(fault=fault))


def entry(pump: PumpHost, alarm: AlarmId):
    """The STATUS entry of one alarm (None when it is not listed)."""
    return next((a for a in pump.status().alarms if a.alarm is alarm), None)


def shown(a) -> tuple[Priority, bool, bool, bool, bool]:
    """(priority, acknowledged, condition present, silenced, needs a reset)."""
    return (a.priority, a.acknowledged, a.condition_present, a.silenced, a.needs_reset)


def raised(pump: PumpHost, alarm: AlarmId) -> list[int]:
    """Pump times (ms, to the second) the alarm was raised, from the host events."""
    return [e.time_s * 1000 for e in pump.events(AlarmRaised) if e.alarm is alarm]


def log_of(pump: PumpHost, event: LogEvent) -> list[tuple[int, int, int]]:
    return [(e.time_s, e.arg0, e.arg1) for e in pump.log() if e.event is event]


def resumed_at(pump: PumpHost) -> list[int]:
    """Pump times (ms, to the second) therapy went from halted back to running."""
    return [
        e.time_s * 1000
        for e in pump.events(TherapyStateChanged)
        if (e.old_state, e.new_state) == (TherapyState.HALTED, TherapyState.RUNNING)
    ]


def basal(rate: int, ms: int) -> Fraction:
    return Fraction(rate * ms, DAY)


# ============================================================ SR-050: a pump left stopped reminds


@pytest.mark.req("SR-050", "SR-022")
def test_a_pump_left_stopped_reminds_after_an_hour_and_starting_clears_it(procs):
    pump = running(procs)
    t0 = stop(pump)
    pump.advance_to(t0 + REMINDER - MINUTE)
    assert pump.status().alarms == ()  # a stop of under an hour: nothing to remind of
    tones = pump.truth().tones_total
    pump.advance_to(t0 + REMINDER + MINUTE)
    a = entry(pump, AlarmId.THERAPY_STOPPED)
    assert shown(a) == (Priority.LOW, False, True, False, False)  # low: a reminder, it halts nothing
    assert raised(pump, AlarmId.THERAPY_STOPPED) == [t0 + REMINDER]
    assert log_of(pump, LogEvent.ALARM_RAISED)[-1] == ((t0 + REMINDER) // 1000, AlarmId.THERAPY_STOPPED, Priority.LOW)
    # A low-priority tone: one single tone now, then not for a day.
    pump.advance(3 * HOUR)
    assert [(t.time_ms, t.pattern) for t in pump.truth(tones).tones] == [(t0 + REMINDER, BeepPattern.SINGLE_TONE)]
    # Acknowledged: silenced, still there (therapy is still stopped).
    ack = pump.ack(AlarmId.THERAPY_STOPPED)
    assert (ack.still_active, ack.priority, ack.needs_reset, ack.state) == (
        True,
        Priority.LOW,
        False,
        TherapyState.STOPPED,
    )
    assert shown(entry(pump, AlarmId.THERAPY_STOPPED)) == (Priority.LOW, True, True, True, False)
    # Starting clears it at once, and basal runs again.
    before = pump.truth()
    assert pump.start().state is TherapyState.RUNNING
    assert pump.status().alarms == ()
    assert [e.alarm for e in pump.events(AlarmCleared)] == [AlarmId.THERAPY_STOPPED]
    pump.advance(HOUR)
    assert pump.truth().delivered_ng - before.delivered_ng >= 4 * MG // 24 - 2_500
    assert pump.status().alarms == ()


@pytest.mark.req("SR-050", "SR-022")
def test_a_baclofen_pump_left_stopped_reminds_at_medium_priority(procs):
    """Baclofen is marked `withdrawal = "dangerous"` in the drug library: the reminder is
    medium (a single tone every hour) instead of low (once a day). The count starts at the
    first moment the pump had both a prescription and a fill, here the programming."""
    pump = baclofen(procs, start=False)
    t0 = pump.truth().time_ms
    pump.advance(REMINDER - MINUTE)
    assert pump.status().alarms == ()
    pump.advance(2 * MINUTE)
    assert shown(entry(pump, AlarmId.THERAPY_STOPPED)) == (Priority.MEDIUM, False, True, False, False)
    assert raised(pump, AlarmId.THERAPY_STOPPED) == [t0 + REMINDER]
    pump.advance(3 * HOUR)
    tones = [(t.time_ms, t.pattern) for t in pump.truth().tones]
    assert tones == [(t0 + REMINDER + k * HOUR, BeepPattern.SINGLE_TONE) for k in range(4)]
    assert pump.start().state is TherapyState.RUNNING
    assert pump.status().alarms == ()


@pytest.mark.req("SR-050")
def test_stopping_and_starting_again_does_not_put_the_reminder_off(procs):
    """An attack on the reminder: start for a minute every ten, so that therapy is never
    stopped for an hour in one go. Time not running is counted across such short runs: the
    reminder comes when an hour of it has gone by, here 66 min after the first stop. Only a
    run as long as the reminder time starts the count afresh."""
    pump = running(procs)
    t0 = stop(pump)
    for k in range(6):
        pump.advance_to(t0 + 10 * k * MINUTE + 9 * MINUTE)
        assert pump.start().state is TherapyState.RUNNING
        pump.advance(MINUTE)
        stop(pump)
    # 54 min stopped, 6 min of short runs: stopped again at t0 + 60 min.
    pump.advance_to(t0 + 66 * MINUTE - 1_000)
    assert pump.status().alarms == ()
    pump.advance(2_000)
    assert raised(pump, AlarmId.THERAPY_STOPPED) == [t0 + 66 * MINUTE]
    # A run of an hour starts the count afresh.
    pump.start()
    pump.advance(REMINDER)
    t1 = stop(pump)
    pump.advance(REMINDER - MINUTE)
    assert pump.status().alarms == ()
    pump.advance(2 * MINUTE)
    assert raised(pump, AlarmId.THERAPY_STOPPED) == [t0 + 66 * MINUTE, t1 + REMINDER]


@pytest.mark.req("SR-050", "SR-015")
def test_a_reset_does_not_restart_the_hour_nor_lose_the_reminder(procs):
    pump = running(procs)
    t0 = stop(pump)
    pump.advance(40 * MINUTE)
    pump.sim(SimPowerCycle(off_ms=MINUTE))
    pump.advance_to(t0 + REMINDER - MINUTE)
    assert pump.status().state is TherapyState.STOPPED and pump.status().alarms == ()
    pump.advance(2 * MINUTE)
    assert raised(pump, AlarmId.THERAPY_STOPPED) == [t0 + REMINDER]  # an hour from the stop, not the boot
    pump.sim(SimPowerCycle(off_ms=MINUTE))
    assert shown(entry(pump, AlarmId.THERAPY_STOPPED)) == (Priority.LOW, False, True, False, False)
    assert len(raised(pump, AlarmId.THERAPY_STOPPED)) == 1  # the same alarm, kept, not raised afresh


@pytest.mark.req("SR-050", "SR-046")
def test_a_refill_left_open_reminds_and_a_pump_never_filled_does_not(procs):
    # A pump with a prescription but no fill recorded is not a therapy left stopped.
    pump = firmware_pump(procs)
    pump.program(basal=((0, 2 * MG),), max_dose_24h_ng=3 * MG)
    pump.advance(3 * HOUR)
    assert pump.status().alarms == ()
    # From the fill on it is: an hour later, the reminder.
    pump.fill(12_000_000, MORPHINE)
    filled = pump.truth().time_ms
    pump.advance(REMINDER + MINUTE)
    assert raised(pump, AlarmId.THERAPY_STOPPED) == [filled + REMINDER]
    pump.start()
    pump.advance(2 * HOUR)
    # A refill begun and left open delivers nothing either: it reminds too.
    pump.request(RefillBegin(command_id=pump.next_id()))
    t0 = pump.truth().time_ms
    pump.advance(REMINDER + MINUTE)
    st = pump.status()
    assert st.state is TherapyState.REFILL and AlarmId.THERAPY_STOPPED in {a.alarm for a in st.alarms}
    assert raised(pump, AlarmId.THERAPY_STOPPED)[-1] == t0 + REMINDER


@pytest.mark.req("SR-050")
def test_the_reminder_time_is_a_firmware_setting(procs, tmp_path):
    """`therapy_stopped_alarm_ms` in the firmware's settings file (`--firmware-config`,
    or `thecal firmware --config` split) sets the reminder time: ten minutes here."""
    cfg = tmp_path / "firmware.toml"
    cfg.write_text("therapy_stopped_alarm_ms = 600_000\n")
    pump = firmware_pump(procs, firmware_config=cfg)
    pump.fill(12_000_000, MORPHINE)
    pump.program(basal=((0, 2 * MG),), max_dose_24h_ng=3 * MG)
    t0 = pump.truth().time_ms
    pump.advance(11 * MINUTE)
    assert raised(pump, AlarmId.THERAPY_STOPPED) == [t0 + 10 * MINUTE]


# ============================================================ SR-051: recovery by policy


@pytest.mark.req("SR-051", "SR-020", "SR-039")
def test_a_20_minute_stall_on_a_baclofen_pump_resumes_by_itself_without_catching_up(procs):
    """SynchroMed's stall recovery: the motor stalls for 20 minutes and frees itself. The
    pump halts with the high alarm, then goes back to running on its own the moment it
    sees the stall gone (logged as a recovery), with no burst for the basal missed; the
    alarm stays latched, sounding, until a clinician acknowledges it."""
    rate = 500 * MCG
    pump = baclofen(procs)
    inject(pump, Fault.MOTOR_STALL)
    pump.advance(20 * MINUTE)
    (stalled_ms,) = raised(pump, AlarmId.MOTOR_STALL)
    st = pump.status()
    assert st.state is TherapyState.HALTED
    # High, present, and needs no reset: it will resume by itself.
    assert shown(entry(pump, AlarmId.MOTOR_STALL)) == (Priority.HIGH, False, True, False, False)
    with pytest.raises(Refused) as refused:
        pump.start()
    assert refused.value.reason is NakReason.WRONG_STATE
    assert "halted by motor_stall (still present)" in refused.value.nak.detail
    strokes = pump.truth().strokes_total
    clear(pump, Fault.MOTOR_STALL)
    cleared_ms = pump.truth().time_ms
    pump.advance(2 * MINUTE)  # the next sensor poll (every minute) sees it gone
    st, gt = pump.status(), pump.truth()
    assert st.state is TherapyState.RUNNING
    (back_ms,) = resumed_at(pump)
    assert cleared_ms <= back_ms <= cleared_ms + MINUTE
    assert log_of(pump, LogEvent.THERAPY_RECOVERED) == [(back_ms // 1000, AlarmId.MOTOR_STALL, TherapyState.RUNNING)]
    # Latched, not acknowledged: shown with its condition gone, and still sounding.
    assert shown(entry(pump, AlarmId.MOTOR_STALL)) == (Priority.HIGH, False, False, False, False)
    assert gt.strokes_total - strokes <= 1  # (a basal stroke due at once)
    tones = pump.truth().tones_total
    pump.advance(3 * HOUR)
    after = pump.truth(tones).tones
    assert after and {t.pattern for t in after} == {BeepPattern.TWO_TONE}
    # Delivery: the basal of the time running, exactly (none for the time halted, and no
    # catch-up of it: 20 min of basal would be 7 strokes more).
    gt = pump.truth()
    expected = basal(rate, stalled_ms + gt.time_ms - back_ms)
    assert abs(gt.delivered_ng - expected) <= 1_000, (gt.delivered_ng, float(expected))  # a stroke is 1 mcg
    ack = pump.ack(AlarmId.MOTOR_STALL)
    assert (ack.still_active, ack.state) == (False, TherapyState.RUNNING)
    assert pump.status().alarms == ()


@pytest.mark.req("SR-051", "SR-021")
def test_a_stall_that_comes_back_halts_again_each_time_and_never_catches_up(procs):
    """An attack on the resume policy: a motor that stalls again and again. Each time the
    condition comes back therapy halts at once (no stroke while stalled), the alarm is
    raised again and sounds at once even if it was acknowledged before, each recovery is
    logged, and over it all the pump gives the basal of the time it ran, no more."""
    rate = 4 * MG
    pump = running(procs, rate)
    for k in range(3):
        inject(pump, Fault.MOTOR_STALL)
        pump.advance(10 * MINUTE)
        assert pump.status().state is TherapyState.HALTED
        strokes, tones = pump.truth().strokes_total, pump.truth().tones_total
        pump.advance(5 * MINUTE)
        assert pump.truth().strokes_total == strokes  # nothing moves while it stalls
        assert pump.truth(tones).tones  # it sounds (an acknowledgement before the stall does not silence it)
        clear(pump, Fault.MOTOR_STALL)
        pump.advance(20 * MINUTE)
        assert pump.status().state is TherapyState.RUNNING
        if k == 0:
            assert not pump.ack(AlarmId.MOTOR_STALL).still_active  # acknowledged between stalls
    stalls = raised(pump, AlarmId.MOTOR_STALL)
    backs = resumed_at(pump)
    assert len(stalls) == len(backs) == 3
    assert [a for _, a, _ in log_of(pump, LogEvent.THERAPY_RECOVERED)] == [AlarmId.MOTOR_STALL] * 3
    pump.advance(HOUR)
    gt = pump.truth()
    ran = stalls[0] + sum(s - b for b, s in zip(backs, stalls[1:], strict=False)) + gt.time_ms - backs[-1]
    assert abs(gt.delivered_ng - basal(rate, ran)) <= 2 * 2_500, (gt.delivered_ng, float(basal(rate, ran)))


@pytest.mark.req("SR-051", "SR-052", "SR-024")
def test_a_stall_that_clears_does_not_resume_while_a_hold_alarm_stands(procs):
    """An attack on the resume policy: the stall clears while the battery is at end of
    service (a high alarm that holds). Nothing resumes until that one is dealt with: its
    condition gone and a clinician's acknowledgement. START, refused meanwhile, names
    what holds the pump."""
    pump = running(procs)
    inject(pump, Fault.MOTOR_STALL)
    pump.advance(5 * MINUTE)
    inject(pump, Fault.BATTERY_MV, 2_700)  # below end of service
    pump.advance(MINUTE)
    clear(pump, Fault.MOTOR_STALL)
    pump.advance(5 * MINUTE)
    strokes = pump.truth().strokes_total
    st = pump.status()
    assert st.state is TherapyState.HALTED
    assert shown(entry(pump, AlarmId.MOTOR_STALL))[2] is False  # the stall is gone ...
    assert shown(entry(pump, AlarmId.BATTERY_EOS)) == (Priority.HIGH, False, True, False, True)  # ... EOS holds
    assert log_of(pump, LogEvent.THERAPY_RECOVERED) == []
    with pytest.raises(Refused) as refused:
        pump.start()
    assert "halted by battery_eos (still present)" in refused.value.nak.detail
    assert "motor_stall" not in refused.value.nak.detail  # it holds nothing any more
    # The battery reads well again: still halted, it needs a reset.
    clear(pump, Fault.BATTERY_MV)
    pump.advance(HOUR)
    assert pump.status().state is TherapyState.HALTED
    assert pump.truth().strokes_total == strokes
    with pytest.raises(Refused) as refused:
        pump.start()
    assert "halted by battery_eos (gone, not acknowledged)" in refused.value.nak.detail
    ack = pump.ack(AlarmId.BATTERY_EOS)
    assert (ack.still_active, ack.state) == (False, TherapyState.RUNNING)
    assert log_of(pump, LogEvent.THERAPY_RECOVERED) == []  # a reset, not a recovery
    pump.advance(HOUR)
    assert pump.truth().strokes_total > strokes


@pytest.mark.req("SR-051")
def test_the_drug_library_sets_the_policy_per_drug(procs, tmp_path):
    """A site's library holds morphine's stall for a clinician and lets an occlusion
    resume: the same faults then do the opposite of the defaults."""
    lib = write_drug_library(tmp_path, '[morphine.recovery]\nmotor_stall = "hold"\nocclusion = "resume"\n')
    pump = running(procs, drug_library=lib)
    inject(pump, Fault.MOTOR_STALL)
    pump.advance(10 * MINUTE)
    assert shown(entry(pump, AlarmId.MOTOR_STALL))[4] is True  # needs a reset
    clear(pump, Fault.MOTOR_STALL)
    pump.advance(HOUR)
    strokes = pump.truth().strokes_total
    pump.advance(HOUR)
    assert pump.status().state is TherapyState.HALTED and pump.truth().strokes_total == strokes
    assert pump.ack(AlarmId.MOTOR_STALL).state is TherapyState.RUNNING
    inject(pump, Fault.OCCLUSION)
    pump.advance(15 * MINUTE)
    assert pump.status().state is TherapyState.HALTED
    assert shown(entry(pump, AlarmId.OCCLUSION))[4] is False  # resumes by itself
    clear(pump, Fault.OCCLUSION)
    pump.advance(10 * MINUTE)
    assert pump.status().state is TherapyState.RUNNING
    assert [a for _, a, _ in log_of(pump, LogEvent.THERAPY_RECOVERED)] == [AlarmId.OCCLUSION]
    strokes = pump.truth().strokes_total
    pump.advance(HOUR)
    assert pump.truth().strokes_total - strokes >= 60  # basal again (a stroke every 54 s)


# ============================================================ SR-052: acknowledge versus reset


@pytest.mark.req("SR-052", "SR-021")
def test_acknowledge_versus_reset_is_shown_in_status_the_answer_and_a_refused_start(procs):
    """An occlusion (policy hold) through its life: what STATUS, ALARM_ACK_ACK and a
    refused START say at each step, and that an acknowledgement while the condition holds
    never resumes therapy."""
    pump = running(procs)
    inject(pump, Fault.OCCLUSION)
    pump.advance(10 * MINUTE)
    assert pump.status().state is TherapyState.HALTED
    # (priority, acknowledged, condition present, silenced, needs a reset)
    assert shown(entry(pump, AlarmId.OCCLUSION)) == (Priority.HIGH, False, True, False, True)
    ack = pump.ack(AlarmId.OCCLUSION)
    assert (ack.still_active, ack.priority, ack.needs_reset, ack.state) == (
        True,
        Priority.HIGH,
        True,
        TherapyState.HALTED,
    )
    assert shown(entry(pump, AlarmId.OCCLUSION)) == (Priority.HIGH, True, True, True, True)
    with pytest.raises(Refused) as refused:
        pump.start()
    assert refused.value.nak.detail == (
        "halted by occlusion (still present): acknowledge each once its condition is gone"
    )
    clear(pump, Fault.OCCLUSION)
    pump.advance(10 * MINUTE)
    strokes = pump.truth().strokes_total
    # Gone: no longer acknowledged (that only silenced it), the silence still running.
    assert shown(entry(pump, AlarmId.OCCLUSION)) == (Priority.HIGH, False, False, True, True)
    pump.advance(HOUR)
    assert pump.status().state is TherapyState.HALTED and pump.truth().strokes_total == strokes
    with pytest.raises(Refused) as refused:
        pump.start()
    assert "halted by occlusion (gone, not acknowledged)" in refused.value.nak.detail
    ack = pump.ack(AlarmId.OCCLUSION)  # the reset
    assert (ack.still_active, ack.needs_reset, ack.state) == (False, False, TherapyState.RUNNING)
    assert pump.status().alarms == ()
    pump.advance(HOUR)
    assert pump.truth().strokes_total > strokes
