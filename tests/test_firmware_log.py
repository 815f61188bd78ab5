"""Event-log rules that span the controller: every rejected command is logged, delivery
milestones are logged, and a blind retry of any recent command id is refused.

Runs the whole pump in-process (tools/inprocess.LocalPump): every request still goes
through the codec, authentication and the relay."""

from __future__ import annotations

from protocol.codes import LogEvent, NakReason, Role
from protocol.messages import BolusRequest, LogRead, Nak, RefillBegin, RefillComplete, Start, Status, Stop
from tools.demo import reference_program
from tools.inprocess import LocalPump


def log(pump: LocalPump) -> list:
    entries, seq = [], 0
    while True:
        page = pump.request(LogRead(from_seq=seq, max_entries=32))
        entries += page.entries
        if not page.entries:
            return entries
        seq = page.entries[-1].seq + 1


def filled_and_programmed() -> LocalPump:
    pump = LocalPump()
    pump.request(RefillBegin(command_id=1))
    pump.request(
        RefillComplete(
            command_id=2, withdrawn_nl=0, added_nl=12_000_000, drug="morphine", concentration_ng_per_ml=5_000_000
        )
    )
    assert not isinstance(pump.request(reference_program(3)), Nak)
    return pump


def test_rule_every_rejected_command_is_logged_with_its_type_and_reason():
    pump = filled_and_programmed()
    before = len(log(pump))
    nak = pump.request(Stop(command_id=10))  # stopped already: wrong state
    assert isinstance(nak, Nak) and nak.reason is NakReason.WRONG_STATE
    entries = log(pump)
    assert len(entries) == before + 1
    e = entries[-1]
    assert (e.event, e.arg0, e.arg1) == (LogEvent.COMMAND_REFUSED, Stop.TYPE, NakReason.WRONG_STATE)


def test_rule_a_blind_retry_of_an_older_command_id_is_refused():
    pump = filled_and_programmed()
    assert not isinstance(pump.request(Start(command_id=20)), Nak)
    pump.advance(3 * 3_600_000)
    first = pump.request(BolusRequest(command_id=21), Role.PATIENT)
    assert not isinstance(first, Nak)
    assert not isinstance(pump.request(BolusRequest(command_id=22), Role.PATIENT), Nak)  # a denial, but accepted
    # 21 is no longer the last id: a retry of it must still be refused, not executed.
    retry = pump.request(BolusRequest(command_id=21), Role.PATIENT)
    assert isinstance(retry, Nak) and (retry.reason, retry.field) == (NakReason.WRONG_STATE, "command_id")


def test_rule_each_whole_ml_delivered_is_logged_as_a_milestone():
    pump = filled_and_programmed()
    pump.request(Start(command_id=30))
    pump.advance(9 * 86_400_000)  # about 0.26 mL a day of basal: 2 whole mL
    milestones = [e.arg0 for e in log(pump) if e.event is LogEvent.DELIVERY_MILESTONE]
    counted_ml = (12_000_000 - pump.request(Status()).reservoir_nl) // 1_000_000
    assert counted_ml >= 2
    assert milestones == list(range(1, counted_ml + 1))
