"""SPEC.md's link chapters against the code: the receive checks in order, the counter a
new host starts from, and the pump-link timing contract. Where a chapter is prose, these
tests drive the real emulator and firmware to check what it says, and read the numbers
and names from SPEC.md itself, so neither can drift without a test failing."""

from __future__ import annotations

import inspect
import itertools
import re
import struct
import time
import zlib
from dataclasses import dataclass, replace

import pytest
from cobs import cobs

from emulator.model import PumpModel
from emulator.pump import ANY_RUN, PumpHardware
from emulator.rig import InProcessPort, Rig
from emulator.server import EmulatorOptions
from firmware.controller import KICK_PERCENT
from firmware.nvm import RING_HISTORY, RING_LOG, SCALARS
from protocol import codec
from protocol.auth import FrameSigner, compute_tag
from protocol.codes import BeepPattern, NakReason, ResetCause, Role, RunOutcome, TherapyState, WakeReason
from protocol.framing import (
    AUTH_PREFIX,
    HEADER,
    MAX_BODY,
    MAX_ENCODED,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    encode_frame,
)
from protocol.messages import (
    HOST_MAX_PAYLOAD,
    PUMP_LINK_TYPES,
    REGISTRY,
    ControllerStart,
    HwInfoRequest,
    Message,
    MotorRun,
    MotorStop,
    Nak,
    PowerOn,
    RunProgress,
    SimAdvance,
    SleepUntil,
    Start,
    Status,
    StatusAck,
    Stop,
    Time,
    TimeRequest,
    WatchdogKick,
)
from protocol.schema import NONE_U64
from tests.test_spec import SPEC_TEXT, section
from tools import spec_driven
from tools.client import WallClockSigner
from tools.inprocess import LocalPump
from tools.spec_firmware import NVM_CONTENTS

# ---------------------------------------------------------------- receive checks in order

FRESH = 10**12  # a counter above any the set-up signed
BASE = Stop(command_id=999)  # a request a running pump accepts


@dataclass(frozen=True)
class Probe:
    """One frame to a running pump, and what each check it fails changed about it."""

    msg: Message = BASE
    msg_type: int | None = None  # another type in the header
    payload: bytes | None = None  # another payload
    pad_payload_to: int = 0  # zeros after the payload up to this many bytes
    version: int = PROTOCOL_VERSION
    extra_flags: int = 0
    plen: int | None = None  # payload_len other than the payload's
    plen_delta: int = 0
    role: Role = Role.CLINICIAN
    counter: int = FRESH
    bad_tag: bool = False
    pad_body_to: int = 0  # zeros before the CRC up to this many bytes of body
    bad_crc: bool = False
    bad_cobs: bool = False
    segment_over: bool = False
    # the pump rather than the frame
    stopped: bool = False
    starting: bool = False
    unpowered: bool = False


def wire(p: Probe, keys: dict[Role, bytes], seq: int) -> bytes:
    payload = p.msg.encode_payload() if p.payload is None else p.payload
    payload = payload.ljust(p.pad_payload_to, b"\x00")
    plen = (p.plen if p.plen is not None else len(payload)) + p.plen_delta
    msg_type = p.msg.TYPE if p.msg_type is None else p.msg_type
    head = HEADER.pack(p.version, msg_type, 1 | p.extra_flags, seq, plen) + payload
    prefix = AUTH_PREFIX.pack(int(p.role), p.counter)
    tag = compute_tag(keys[p.role], head + prefix)
    if p.bad_tag:
        tag = bytes([tag[0] ^ 1]) + tag[1:]
    body = head + prefix + tag
    body = body.ljust(p.pad_body_to - 4, b"\x00")  # zeros cost COBS nothing: only the body grows
    crc = zlib.crc32(body) ^ (1 if p.bad_crc else 0)
    seg = cobs.encode(body + struct.pack("<I", crc))
    if p.bad_cobs:
        seg += b"\x05"  # a code byte promising four bytes that never come
    if p.segment_over:
        seg = seg.ljust(MAX_ENCODED + 1, b"\x01")
    return b"\x00" + seg + b"\x00"


# Each check of the table in SPEC.md, by its name there: how a frame (or the pump) fails it.
BREAKERS: dict[str, dict] = {
    "segment size": {"segment_over": True},
    "COBS": {"bad_cobs": True},
    "body size": {"pad_body_to": MAX_BODY + 1},
    "CRC": {"bad_crc": True},
    "version": {"version": PROTOCOL_VERSION + 1},
    "flags": {"extra_flags": 0x02},
    "payload size": {"plen": MAX_PAYLOAD + 1},
    "length": {"plen_delta": 1},
    "controller": {"unpowered": True},
    "relay size": {"pad_payload_to": HOST_MAX_PAYLOAD + 1},
    "controller ready": {"starting": True},
    "type": {"msg_type": 0x61},  # STATUS_ACK: a response, not a request
    "authentication": {"bad_tag": True},
    "replay": {"counter": 1},
    "role": {"role": Role.PATIENT},
    "payload": {"payload": BASE.encode_payload()[:3]},
    "command id": {"msg": Stop(command_id=0)},
    "state and rules": {"stopped": True},
}


def checks_in_spec() -> list[tuple[int, str, str]]:
    body = section(SPEC_TEXT, "## Receive checks in order")
    rows = re.findall(r"^\| (\d+) \| ([^|]+?) \| [^|]+ \| ([^|]+?) \|$", body, re.M)
    return [(int(n), name, answer) for n, name, answer in rows]


def allowed(answer: str) -> set[str]:
    """The outcomes an Answer cell allows: 'dropped <kind>', 'NAK <REASON>', 'no answer'."""
    if answer.startswith("dropped"):
        return {f"dropped {k}" for k in re.findall(r"`(\w+)`", answer)}
    if answer.startswith("NAK"):
        named = {f"NAK {r}" for r in re.findall(r"\b[A-Z_]{4,}\b", answer) if r in NakReason.__members__}
        return named if "..." not in answer else {f"NAK {r.name}" for r in NakReason}
    assert answer == "no answer", answer
    return {"no answer"}


def pump_for(p: Probe) -> LocalPump:
    bench = spec_driven.commissioned()
    bench.ok(Status(), Role.PATIENT)  # the patient key has a counter too (for replays)
    if not p.stopped:
        bench.ok(Start(command_id=bench.next_id()))
    if p.starting:
        bench.pump.rig.port = spec_driven._HwInfoLost(bench.pump.rig.port)
        bench.ok(spec_driven.SimPowerCycle(off_ms=0))
    if p.unpowered:
        bench.pump.rig.hw.power_off_controller("a controller process not yet announced")
    return bench.pump


def outcome(p: Probe) -> str:
    seq = 4321
    # The framing checks first, as any receiver makes them: a dropped frame needs no pump.
    keys = {r: bytes([int(r)]) * 32 for r in Role}
    data = wire(p, keys, seq)
    (item,) = FrameDecoder().feed(data)
    if isinstance(item, FrameError) and not (item.kind is FrameErrorKind.BAD_LENGTH and item.msg_type is not None):
        return f"dropped {item.kind.value}"
    pump = pump_for(p)
    reply = pump.send_wire(wire(p, pump.keys, seq), seq)
    if reply is None:
        return "no answer"
    return f"NAK {reply.reason.name}" if isinstance(reply, Nak) else "ACK"


def probe(*names: str) -> Probe:
    p = Probe()
    for name in names:
        p = replace(p, **BREAKERS[name])
    return p


def test_the_table_names_every_check_once_in_order():
    rows = checks_in_spec()
    assert [n for n, _, _ in rows] == list(range(1, len(rows) + 1))
    assert [name for _, name, _ in rows] == list(BREAKERS)


def test_a_frame_failing_no_check_is_acknowledged():
    assert outcome(Probe()) == "ACK"


@pytest.mark.parametrize("row", checks_in_spec(), ids=lambda r: r[1])
def test_each_check_alone_gives_the_answer_the_table_states(row):
    _, name, answer = row
    assert outcome(probe(name)) in allowed(answer)


@pytest.mark.parametrize(
    "first,later", list(itertools.combinations([r[1] for r in checks_in_spec()], 2)), ids=lambda x: x
)
def test_a_frame_failing_two_checks_gets_the_answer_of_the_earlier(first, later):
    assert outcome(probe(first, later)) == outcome(probe(first))


def _sim_answer(msg_type: int, payload: bytes, role: Role, counter: int, pump: LocalPump) -> str:
    signer = FrameSigner(role, pump.keys[role], counter=counter - 1)
    reply = pump.send_wire(encode_frame(msg_type, 77, payload, signer), 77)
    assert reply is not None
    return f"NAK {reply.reason.name}" if isinstance(reply, Nak) else "ACK"


def test_simulation_requests_are_checked_type_then_key_then_counter_then_payload():
    pump = LocalPump()
    advance = SimAdvance(duration_ms=1000).encode_payload()
    unknown = next(t for t in range(0xA0, 0xB0) if t not in REGISTRY)
    assert _sim_answer(unknown, b"", Role.CLINICIAN, 1, pump) == "NAK UNKNOWN_TYPE"  # type before the key
    assert _sim_answer(SimAdvance.TYPE, b"", Role.PATIENT, 1, pump) == "NAK NOT_PERMITTED"  # key before payload
    assert _sim_answer(SimAdvance.TYPE, advance, Role.SIM, FRESH, pump) == "ACK"
    assert _sim_answer(SimAdvance.TYPE, b"", Role.SIM, FRESH, pump) == "NAK REPLAYED"  # counter before payload
    assert _sim_answer(SimAdvance.TYPE, b"", Role.SIM, FRESH + 1, pump) == "NAK BAD_LENGTH"
    # and the other way round: the controller holds no sim key (check 13, not 15)
    assert _sim_answer(Status.TYPE, b"", Role.SIM, FRESH + 2, pump) == "NAK AUTH_FAILED"


# ---------------------------------------------------------------- counters for a new host


def _status_with(pump: LocalPump, signer: FrameSigner, msg: Message | None = None) -> Message | None:
    return pump.send_wire(codec.encode(msg or Status(), 88, signer), 88)


def test_the_wall_clock_counter_is_microseconds_and_only_rises():
    key = bytes(32)
    signer = WallClockSigner(Role.CLINICIAN, key)
    before = time.time_ns() // 1000
    signer(b"header")
    first = signer.counter
    signer(b"header")
    assert before <= first <= time.time_ns() // 1000 and signer.counter > first


def test_a_host_with_no_stored_counter_starts_above_the_one_before_it():
    pump = LocalPump()
    one = WallClockSigner(Role.CLINICIAN, pump.keys[Role.CLINICIAN])
    for _ in range(3):
        assert isinstance(_status_with(pump, one), StatusAck)
    fresh = WallClockSigner(Role.CLINICIAN, pump.keys[Role.CLINICIAN])  # a new program: no state
    assert isinstance(_status_with(pump, fresh), StatusAck)


def test_a_replayed_request_is_not_acted_upon_and_no_number_of_them_locks_the_key():
    bench = spec_driven.in_state(TherapyState.RUNNING)
    pump = bench.pump
    key = pump.keys[Role.CLINICIAN]
    behind = FrameSigner(Role.CLINICIAN, key, counter=0)  # a host whose clock is behind
    reply = _status_with(pump, behind, Stop(command_id=500))
    assert isinstance(reply, Nak) and reply.reason is NakReason.REPLAYED
    assert bench.status().state is TherapyState.RUNNING  # the STOP did nothing
    answers = [_status_with(pump, behind) for _ in range(50)]
    assert None in answers  # beyond the key id's NAK budget: dropped unanswered
    ahead = FrameSigner(Role.CLINICIAN, key, counter=FRESH)
    assert isinstance(_status_with(pump, ahead), StatusAck)  # never locked out


def test_the_counter_lasts_the_years_the_spec_says():
    years = int(
        re.search(r"about ([\d,]+) years", section(SPEC_TEXT, "## Counters for a new host"))[1].replace(",", "")
    )
    exact = 2**64 / 1e6 / (365.25 * 86_400)
    assert abs(exact - years) < 1000


# ---------------------------------------------------------------- pump-link timing

EXACT = PumpModel(stroke_error_sd_ppm=0)


def hardware(model: PumpModel = EXACT) -> PumpHardware:
    hw = PumpHardware(model)
    hw.power_on_controller(ResetCause.POWER_UP)
    hw.outbox.clear()
    return hw


def run_until(hw: PumpHardware, t_ms: int) -> list[Message]:
    while hw.run_due(t_ms):
        pass
    hw.advance_idle(t_ms)
    out, hw.outbox = hw.outbox, []
    return out


def progress(msgs: list[Message]) -> list[tuple[int, int, RunOutcome]]:
    return [(m.time_ms, m.strokes_made, m.outcome) for m in msgs if isinstance(m, RunProgress)]


def test_a_run_strokes_at_once_then_every_interval_and_its_last_report_is_completed():
    hw = hardware()
    hw.advance_idle(10_000)
    hw.handle(MotorRun(run_id=1, strokes=3, interval_ms=2_000))
    assert progress(run_until(hw, 20_000)) == [
        (10_000, 1, RunOutcome.IN_PROGRESS),
        (12_000, 2, RunOutcome.IN_PROGRESS),
        (14_000, 3, RunOutcome.COMPLETED),
    ]
    assert hw.odometer == 3


@pytest.mark.parametrize(
    "strokes,interval_ms",
    [(0, EXACT.min_stroke_interval_ms), (EXACT.max_strokes_per_run + 1, 10_000), (1, EXACT.min_stroke_interval_ms - 1)],
)
def test_a_run_beyond_the_hardware_limits_is_refused_and_nothing_moves(strokes, interval_ms):
    assert f"`max_strokes_per_run` ({EXACT.max_strokes_per_run})" in SPEC_TEXT
    assert f"`min_stroke_interval_ms` ({EXACT.min_stroke_interval_ms})" in SPEC_TEXT
    hw = hardware()
    hw.handle(MotorRun(run_id=5, strokes=strokes, interval_ms=interval_ms))
    assert progress(run_until(hw, 60_000)) == [(0, 0, RunOutcome.REFUSED)]
    assert hw.odometer == 0


def test_a_run_is_stopped_by_any_run_and_replaced_by_a_new_one():
    assert f"or {ANY_RUN:#06X}".replace("0X", "0x") in SPEC_TEXT
    hw = hardware()
    hw.handle(MotorRun(run_id=1, strokes=10, interval_ms=2_000))
    run_until(hw, 2_000)
    hw.handle(MotorStop(run_id=ANY_RUN))
    assert progress(hw.outbox)[-1] == (2_000, 2, RunOutcome.STOPPED)
    hw.handle(MotorRun(run_id=2, strokes=10, interval_ms=2_000))
    hw.handle(MotorRun(run_id=3, strokes=1, interval_ms=2_000))  # replaces run 2 before its first stroke
    out = run_until(hw, 10_000)
    assert [(m.run_id, m.outcome) for m in out if isinstance(m, RunProgress)][-2:] == [
        (2, RunOutcome.STOPPED),
        (3, RunOutcome.COMPLETED),
    ]


def test_the_controller_is_busy_from_any_frame_to_its_sleep_until():
    hw = hardware()
    assert hw.controller_busy  # (POWER_ON went to it)
    hw.handle(SleepUntil(wake_at_ms=NONE_U64))
    assert not hw.controller_busy
    hw.handle(TimeRequest())  # its answer is a frame to the controller
    assert hw.controller_busy


def test_sleep_until_replaces_the_last_and_a_past_time_is_due_at_once():
    hw = hardware()
    hw.advance_idle(5_000)
    hw.handle(SleepUntil(wake_at_ms=6_000))
    hw.handle(SleepUntil(wake_at_ms=8_000))
    times = [(m.time_ms, m.reason) for m in run_until(hw, 10_000) if isinstance(m, Time)]
    assert times == [(8_000, WakeReason.TIMER)]
    hw.handle(SleepUntil(wake_at_ms=1_000))  # already past
    assert [m.time_ms for m in run_until(hw, 10_000) if isinstance(m, Time)] == [10_000]


class Sleeper:
    """An in-process controller that asks to be woken at fixed times, and answers every
    batch with SLEEP_UNTIL unless told to fall silent."""

    def __init__(self, wake_at: list[int]) -> None:
        self.wake_at = wake_at
        self.woken: list[int] = []
        self.silent = False
        self._rx = codec.MessageDecoder(PUMP_LINK_TYPES)

    def feed(self, data: bytes) -> bytes:
        for item in self._rx.feed(data):
            if isinstance(item, codec.Received) and isinstance(item.message, Time):
                self.woken.append(item.message.time_ms)
        if self.silent:
            return b""
        nxt = next((t for t in self.wake_at if t not in self.woken), NONE_U64)
        return codec.encode(SleepUntil(wake_at_ms=nxt), 1)


def rig_with(ctl: Sleeper, idle_timeout_s: float = 2.0) -> Rig:
    rig = Rig(EXACT, InProcessPort(lambda: ctl), {r: bytes(32) for r in Role}, idle_timeout_s=idle_timeout_s)
    rig.boot()
    return rig


def test_an_advance_includes_its_end_and_answers_its_end_time():
    ctl = Sleeper([1_000, 2_000])
    rig = rig_with(ctl)
    assert rig.advance(1_000) == 1_000
    assert ctl.woken == [1_000]  # a wake-up at exactly the end is in this advance
    assert rig.advance(999) == 1_999 and ctl.woken == [1_000]


def test_a_controller_silent_for_the_idle_timeout_is_left_behind_and_heard_again():
    spec_s = float(re.search(r"within ([\d.]+) s of wall time", SPEC_TEXT)[1])
    defaults = {inspect.signature(f).parameters["idle_timeout_s"].default for f in (Rig, LocalPump)}
    assert defaults == {spec_s} == {EmulatorOptions.idle_timeout_s}  # (three homes: they must agree)
    ctl = Sleeper([1_000, 5_000])
    rig = rig_with(ctl, idle_timeout_s=0.05)
    ctl.silent = True
    t0 = time.monotonic()
    assert rig.advance(2_000) == 2_000  # time went on without it
    assert time.monotonic() - t0 < 1.0
    assert not rig.responsive and any(e.what == "controller_silent" for e in rig.hw.events)
    ctl.silent = False
    rig.pump_bytes(codec.encode(SleepUntil(wake_at_ms=5_000), 2))  # it speaks up by itself
    rig.advance(4_000)
    assert rig.responsive and ctl.woken[-1] == 5_000


def test_controller_start_powers_on_with_the_cause_the_spec_states():
    hw = PumpHardware(EXACT)
    hw.handle(ControllerStart())
    (first,) = [m for m in hw.outbox if isinstance(m, PowerOn)]
    assert first.reset_cause is ResetCause.POWER_UP and first.boot_count == 1
    hw.outbox.clear()
    hw.handle(MotorRun(run_id=1, strokes=5, interval_ms=2_000))
    run_until(hw, 2_000)
    hw.handle(ControllerStart())  # the process started again while it was powered
    msgs = run_until(hw, 10_000)
    assert [m.reset_cause for m in msgs if isinstance(m, PowerOn)] == [ResetCause.PROCESS_RESTART]
    assert not progress(msgs)  # the old run ended without a report


def test_the_watchdog_window_starts_at_power_on_and_at_each_kick_only():
    window = EXACT.watchdog_window_ms
    assert f"`watchdog_window_ms`, {window // 60_000} min in the default model" in SPEC_TEXT
    hw = hardware()
    # (strokes that never fall on the watchdog's instant: no tie to order)
    hw.handle(MotorRun(run_id=1, strokes=EXACT.max_strokes_per_run, interval_ms=window // 4 + 1_000))
    run_until(hw, window // 2)
    hw.handle(WatchdogKick())  # at window/2: the window runs to 1.5 windows
    for t in range(window // 2 + 1_000, window + window // 2, 10_000):
        hw.handle(SleepUntil(wake_at_ms=NONE_U64))  # nothing else feeds it
        hw.handle(TimeRequest())
        msgs = run_until(hw, t)
        assert not [m for m in msgs if isinstance(m, PowerOn)], t
    boots = hw.boot_count
    msgs = run_until(hw, window + window // 2)
    (power_on,) = [m for m in msgs if isinstance(m, PowerOn)]
    assert power_on.reset_cause is ResetCause.WATCHDOG and power_on.boot_count == boots + 1
    assert power_on.time_ms == window + window // 2
    assert not [p for p in progress(msgs) if p[2] is not RunOutcome.IN_PROGRESS]  # the run ended unreported
    assert hw.run is None
    assert BeepPattern.HARDWARE_ALARM in [t.pattern for t in hw.beeper.since(0, 100)]


def test_the_firmware_kicks_within_the_share_of_the_window_the_spec_states():
    assert f"wakes to kick by {KICK_PERCENT} % of it" in SPEC_TEXT
    window = EXACT.watchdog_window_ms
    pump = LocalPump(EXACT)
    kicks = []
    for _ in range(3 * window // 10_000):
        pump.advance(10_000)
        if not kicks or pump.rig.hw.last_kick_ms != kicks[-1]:
            kicks.append(pump.rig.hw.last_kick_ms)
    gaps = [b - a for a, b in itertools.pairwise(kicks)]
    assert gaps and all(window // 10 <= g <= window * KICK_PERCENT // 100 for g in gaps), gaps


def test_the_nvm_table_covers_every_record_the_firmware_keeps():
    records = [name for name, _ in SCALARS] + [RING_HISTORY[0], RING_LOG[0]]
    assert list(NVM_CONTENTS) == records
    body = section(SPEC_TEXT, "### What a controller keeps across a reset")
    for name in records:
        assert f"| `{name}` |" in body


def test_nothing_goes_out_before_the_controller_committed():
    """The chapter's rule: a commit that fails lets no answer out (no ACK gets ahead of
    the state it reports)."""
    from firmware.board.druglib import load_library
    from firmware.controller import Controller
    from firmware.nvm import MemoryNvm

    class Failing(MemoryNvm):
        broken = False

        def commit(self) -> None:
            if self.broken:
                raise OSError("flash write failed")

    nvm = Failing()
    ctl = Controller({r: bytes(32) for r in Role}, nvm, load_library())
    hw = PumpHardware(EXACT)
    hw.power_on_controller(ResetCause.POWER_UP)
    assert ctl.feed(codec.encode(hw.outbox.pop(), 1))  # HW_INFO_REQUEST and SLEEP_UNTIL
    hw.handle(HwInfoRequest())
    nvm.broken = True  # HW_INFO ends the boot: a change of state to commit
    with pytest.raises(OSError):
        ctl.feed(codec.encode(hw.outbox.pop(), 2))
    nvm.broken = False
    out = [i.message for i in codec.MessageDecoder().feed(ctl.feed(b""))]
    assert any(isinstance(m, SleepUntil) for m in out)  # what was held back goes out after the commit


def test_a_starting_controller_asks_hw_info_again_every_retry_period():
    from firmware.controller import HW_INFO_RETRY_MS

    assert f"asks again every {HW_INFO_RETRY_MS} ms" in SPEC_TEXT
    bench = spec_driven.in_state(TherapyState.BOOT)
    port = bench.pump.rig.port
    before = port.lost
    bench.pump.advance(3 * HW_INFO_RETRY_MS)
    assert port.lost - before == 3
    reply = bench.ask(Status())
    assert isinstance(reply, Nak) and reply.reason is NakReason.BUSY
