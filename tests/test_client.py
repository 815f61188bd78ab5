"""tools.client against the firmware over a real pty: typed requests, the doubt after a
lost answer resolved with STATUS (never by sending again), events, and waits measured in
simulated time."""

from __future__ import annotations

import os
import time

import pytest

from protocol.codes import AlarmId, BolusDecision, Fault, Link, NakReason, Role, TherapyState
from protocol.messages import AlarmRaised, Start, TherapyStateChanged
from protocol.schema import NONE_U64
from tests.harness import Procs, write_model
from tools.client import (
    Client,
    Confirmed,
    EventTimeout,
    NoAnswer,
    NotAccepted,
    PortLost,
    Refused,
    Uncertain,
)
from tools.programfile import load_program
from tools.units import parse_volume_nl

from .test_cli_contract import REPO, therapy

MORPHINE = REPO / "examples" / "morphine.toml"


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


class LossyClient(Client):
    """A client on a line that loses what a test says: the next request frame it sends
    (lose_request), the answer to the next request (lose_next_answer), or every answer
    from now on (lose_answers). Counts the frames it sends by message type."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.sent: list[str] = []
        self.lose_request = False
        self.lose_next_answer = False
        self.lose_answers = False
        self._drop: set[int] = set()

    def _send(self, msg, role):
        self.sent.append(type(msg).NAME)
        seq = super()._send(msg, role)
        if self.lose_answers or self.lose_next_answer:
            self.lose_next_answer = False
            self._drop.add(seq)
        return seq

    def send_raw(self, data: bytes) -> None:
        if self.lose_request:
            self.lose_request = False
            return
        super().send_raw(data)

    def _pump_once(self, block: bool = True) -> None:
        super()._pump_once(block)
        for seq in self._drop:
            self._responses.pop(seq, None)


def firmware(procs: Procs, client_cls=Client, **model) -> tuple:
    path = write_model(procs.tmp, f"{procs._name('model')}.toml", stroke_error_sd_ppm=0, **model)
    emu = procs.emulator(split=False, firmware=True, model=path)
    c = client_cls(emu.host, emu.keys(), Role.CLINICIAN, timeout_s=2.0)
    emu.clients.append(c)  # closed with the emulator
    return emu, c


def fill(c: Client, volume: str = "12 mL") -> None:
    c.refill_begin()
    c.refill_complete(0, parse_volume_nl(volume), "morphine", 5_000_000)


def test_typed_requests_drive_a_therapy(procs):
    emu, c = firmware(procs)
    info = c.hello()
    assert (info.protocol_version, info.reservoir_capacity_ul, info.stroke_nl) == (2, 20_000, 500)
    assert c.info().serial == info.serial

    rx = load_program(MORPHINE, c.next_command_id())
    ack = c.program(rx)
    assert ack.command_id == rx.command_id
    held = c.read_prescription()
    assert held.present and held.basal == rx.basal and held.bolus_dose_ng == 100_000
    fill(c)
    # Priming with therapy stopped pushes volume that is not drug to the patient.
    assert c.prime(500).command_id > 0
    c.advance(60_000)
    started = c.start()
    assert started.state is TherapyState.RUNNING
    st = c.status()
    assert st.last_command_id == started.command_id
    assert c.status(Role.PATIENT).state is TherapyState.RUNNING

    # Ids: one per command, consecutive from a random start.
    ids = [c.next_command_id() for _ in range(3)]
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    other = Client(emu.host, emu.keys())
    emu.clients.append(other)
    assert other.next_command_id() not in range(rx.command_id, ids[-1] + 1)
    other.close()

    c.advance(2 * 3_600_000)
    press = c.bolus()
    assert press.decision is BolusDecision.GRANTED and press.dose_ng == 100_000
    assert c.bolus().decision is BolusDecision.BOLUS_IN_PROGRESS
    with pytest.raises(Refused) as e:
        c.bolus(Role.CLINICIAN)
    assert e.value.reason is NakReason.NOT_PERMITTED
    c.advance(600_000)
    cb = c.clinician_bolus(50_000, 120)
    assert cb.volume_nl == 10_000
    c.advance(120_000)

    clock = c.status().clock_s
    assert c.set_clock(clock + 3_600).clock_s == clock + 3_600
    assert c.status().clock_s == clock + 3_600

    log = c.read_log()
    assert [e.seq for e in log] == sorted(e.seq for e in log) and len(log) > 10
    assert c.read_log(log[3].seq, limit=2) == log[3:5]

    assert c.stop().state is TherapyState.STOPPED
    c.inject_fault(Fault.BATTERY_MV, 2_700)
    c.advance(1_000)
    assert AlarmId.BATTERY_EOS in [a.alarm for a in c.status().alarms]
    assert c.ack_alarm(AlarmId.BATTERY_EOS).still_active is True
    c.clear_fault(Fault.BATTERY_MV)

    # Sim-control: truth, tones, the physical refill, speed, power.
    truth = c.ground_truth()
    assert truth.delivered_nl > 0 and not c.motor_running()
    tones = c.tones()
    assert len(tones) == truth.tones_total
    assert c.tones(len(tones) - 1) == tones[-1:]
    r = c.sim_refill(1_000_000, 0, 5_000_000)
    assert r.withdrawn_nl == 1_000_000 and r.reservoir_nl == truth.reservoir_nl - 1_000_000
    boots = c.power_cycle(1_000)
    assert boots == 2
    assert c.set_speed(10) == 10_000
    with pytest.raises(Refused) as e:
        c.advance(1_000)
    assert e.value.reason is NakReason.WRONG_STATE
    assert c.set_speed(0) == 0


# ============================================================ a lost answer


@pytest.mark.req("SR-012")
def test_a_lost_answer_is_resolved_with_status_and_not_resent(procs):
    _, c = firmware(procs, LossyClient)
    c.program(load_program(MORPHINE, c.next_command_id()))
    fill(c)
    c.timeout_s = 0.5
    c.lose_next_answer = True  # the START's ACK is lost; the pump did act on it
    c.sent.clear()
    result = c.start()
    assert isinstance(result, Confirmed)
    assert result.status.state is TherapyState.RUNNING
    assert result.status.last_command_id == result.command_id
    assert c.sent == ["START", "STATUS"]  # asked, never sent again


def test_a_lost_request_is_reported_not_accepted(procs):
    _, c = firmware(procs, LossyClient)
    c.program(load_program(MORPHINE, c.next_command_id()))
    fill(c)
    before = c.status().last_command_id
    c.timeout_s = 0.5
    c.lose_request = True
    c.sent.clear()
    with pytest.raises(NotAccepted) as e:
        c.start()
    assert e.value.status.state is TherapyState.STOPPED
    assert e.value.status.last_command_id == before
    assert c.sent == ["START", "STATUS"]
    assert c.status().state is TherapyState.STOPPED  # nothing changed


def test_silence_after_a_command_is_uncertain(procs):
    _, c = firmware(procs, LossyClient)
    c.program(load_program(MORPHINE, c.next_command_id()))
    fill(c)
    c.timeout_s = 0.3
    c.lose_answers = True
    c.sent.clear()
    t0 = time.monotonic()
    with pytest.raises(Uncertain) as e:
        c.start()
    assert "unknown" in str(e.value)
    assert c.sent.count("START") == 1 and set(c.sent) == {"START", "STATUS"}
    assert time.monotonic() - t0 < 5
    c.lose_answers = False
    # It was accepted after all: STATUS says so.
    st = c.status()
    assert st.state is TherapyState.RUNNING and st.last_command_id == e.value.command_id


def test_reads_are_retried_commands_are_not(procs):
    _, c = firmware(procs, LossyClient)
    c.timeout_s = 0.5
    c.lose_request = True
    c.sent.clear()
    assert c.status().state is TherapyState.STOPPED
    assert c.sent == ["STATUS", "STATUS"]
    c.sent.clear()
    c.lose_request = True
    with pytest.raises(NoAnswer):
        c.advance(1_000)  # moves time: never sent twice
    assert c.sent == ["SIM_ADVANCE"]


def test_a_dead_port(procs, tmp_path):
    with pytest.raises(PortLost):
        Client(str(tmp_path / "no-such-port"), {})
    emu, c = firmware(procs)
    assert c.status().state is TherapyState.STOPPED
    emu.kill_group()
    with pytest.raises(NoAnswer):
        c.status()


def test_nobody_on_the_port_is_no_answer(tmp_path):
    master, slave = os.openpty()
    try:
        c = Client(os.ttyname(slave), {Role.CLINICIAN: b"k" * 32}, timeout_s=0.1)
        with pytest.raises(Uncertain):
            c.command(Start(command_id=c.next_command_id()))
        with pytest.raises(NoAnswer):
            c.status()
        c.close()
    finally:
        os.close(master)
        os.close(slave)


# ============================================================ events


def test_events_and_expect_event_in_simulated_time(procs, tmp_path):
    _, c = firmware(procs)
    c.program(load_program(therapy(tmp_path, "t", bolus=None), c.next_command_id()))
    fill(c, "2.05 mL")  # 50 uL above the 2 mL low-reservoir alarm
    c.poll(0.05)
    list(c.iter_events())  # what programming and the fill raised
    c.start()
    changes = [e for e in c.iter_events(wait_s=0.2) if isinstance(e, TherapyStateChanged)]
    assert [(e.old_state, e.new_state) for e in changes] == [(TherapyState.STOPPED, TherapyState.RUNNING)]
    predicted = c.status().low_reservoir_at_s
    assert predicted != NONE_U64

    # 50 uL at 0.2 mL/day: about 6 h of simulated time, in 10 min steps.
    def low(e):
        return isinstance(e, AlarmRaised) and e.alarm is AlarmId.LOW_RESERVOIR

    t0 = time.monotonic()
    ev = c.expect_event(low, sim_timeout_s=12 * 3_600, wall_timeout_s=30, step_s=600)
    assert time.monotonic() - t0 < 10
    assert abs(ev.time_s - 21_600) <= 216  # within a stroke of the exact time
    assert abs(ev.time_s - predicted) <= 216
    now_s = c.ground_truth().time_ms // 1000
    assert ev.time_s <= now_s < ev.time_s + 600  # it stopped at the step that brought it

    # Nothing else comes: simulated time runs out exactly, not wall time.
    with pytest.raises(EventTimeout):
        c.expect_event(low, sim_timeout_s=3_600, wall_timeout_s=30, step_s=600)
    assert c.ground_truth().time_ms // 1000 == now_s + 3_600

    # A wall-clock guard for a simulator that is too slow for the wait asked.
    t0 = time.monotonic()
    with pytest.raises(NoAnswer):
        c.expect_event(low, sim_timeout_s=30 * 86_400, wall_timeout_s=0.5, step_s=1)
    assert time.monotonic() - t0 < 5


def test_expect_event_in_realtime_watches_the_pump_clock(procs, tmp_path):
    _, c = firmware(procs)
    c.set_speed(1_000)  # 1000x: a simulated minute in 60 ms
    with pytest.raises(EventTimeout):
        c.expect_event(lambda e: False, sim_timeout_s=60, wall_timeout_s=10)
    assert c.ground_truth().time_ms >= 60_000
    # Injecting noise is sim-control, answered by the emulator itself.
    c.inject_fault(Fault.LINK_DELAY, 5, Link.PUMP, 1)
    c.clear_fault(Fault.LINK_DELAY)
