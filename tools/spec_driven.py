"""SPEC.md chapters made by driving the real firmware: which host request is accepted in
which therapy state, a new pump's commissioning, and what REFILL_COMPLETE answers.

Each table is what the controller firmware answered to signed frames sent through the
emulated pump in this process (tools/inprocess.py: the codec, authentication and the
relay as over a serial line), so it cannot drift from what the firmware does. Every
pump starts from the same state and time and the keys do not show in any answer, so the
tables are the same at every run. tools/spec.py hands them to protocol/spec.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from emulator.rig import InProcessPort
from protocol import codec
from protocol.codes import AlarmId, Fault, Link, Role, TherapyState
from protocol.messages import (
    PUMP_LINK_TYPES,
    REGISTRY,
    AlarmAck,
    AlarmRaised,
    BolusRequest,
    BolusRequestAck,
    CatheterReplaced,
    ClinicianBolus,
    Hello,
    HwInfo,
    KeyUpdate,
    LogRead,
    Message,
    Nak,
    Prime,
    Program,
    ReadPrescription,
    RefillBegin,
    RefillComplete,
    SetClock,
    SimClearFault,
    SimInjectFault,
    SimPowerCycle,
    Start,
    Status,
    StatusAck,
    Stop,
)
from protocol.schema import NONE_I32, NONE_U32, MessageFamily
from protocol.specmd import table
from protocol.vectors import reference_prescription
from tools.inprocess import LocalPump
from tools.spec_firmware import CONFIG, MODEL

RX = reference_prescription()  # the reference therapy: morphine 5 mg/mL, catheter 0.2 mL
FILL_NL = 12_000_000  # the reference therapy's first fill
ERI_MV = 3_200  # a battery below the default model's ERI (3300 mV), above its EOS (3100 mV)
STEP_MS = 60_000
STEPS_MAX = 240  # four hours of pump time: what any wait here may take at most
REFILL_AFTER_MS = 6 * 3_600_000  # of therapy before the refill cases: the estimate has moved
STATES = (TherapyState.BOOT, TherapyState.STOPPED, TherapyState.RUNNING, TherapyState.REFILL, TherapyState.HALTED)


class Refused(RuntimeError):
    """A step the set-up needs was refused: the firmware changed, and so must the chapter."""


@dataclass
class Bench:
    """A pump in this process, with its command ids counted."""

    pump: LocalPump = field(default_factory=LocalPump)
    command_id: int = 0

    def next_id(self) -> int:
        self.command_id += 1
        return self.command_id

    def ask(self, msg: Message, role: Role | None = None) -> Message:
        return self.pump.request(msg, role)

    def ok(self, msg: Message, role: Role | None = None) -> Message:
        reply = self.ask(msg, role)
        if isinstance(reply, Nak):
            raise Refused(f"{msg.NAME}: {reply.reason.name} {reply.field} {reply.detail}")
        return reply

    def status(self) -> StatusAck:
        return self.ok(Status())  # type: ignore[return-value]

    def wait_for(self, done: Callable[[StatusAck], bool], what: str) -> StatusAck:
        for _ in range(STEPS_MAX):
            s = self.status()
            if done(s):
                return s
            self.pump.advance(STEP_MS)
        raise Refused(f"{what} did not happen within {STEPS_MAX * STEP_MS // 60_000} min")

    def fault(self, fault: Fault, value: int = 0) -> None:
        self.ok(SimInjectFault(fault=fault, link=Link.NONE, value=value, rate_ppm=0, seed=0))

    def clear(self, fault: Fault) -> None:
        self.ok(SimClearFault(fault=fault))


# ---------------------------------------------------------------- pumps in each state


def filled(bench: Bench) -> None:
    """Record the first fill of a new pump (12 mL of the reference drug)."""
    bench.ok(RefillBegin(command_id=bench.next_id()))
    bench.ok(
        RefillComplete(
            command_id=bench.next_id(),
            withdrawn_nl=0,
            added_nl=FILL_NL,
            drug=RX["drug"],
            concentration_ng_per_ml=RX["concentration_ng_per_ml"],
        )
    )


def commissioned() -> Bench:
    """Filled and programmed with the reference therapy, stopped, with a medium alarm
    (BATTERY_ERI) standing so that ALARM_ACK has something to acknowledge."""
    bench = Bench()
    filled(bench)
    bench.ok(Program(command_id=bench.next_id(), **RX))
    bench.fault(Fault.BATTERY_MV, ERI_MV)
    return bench


class _HwInfoLost(InProcessPort):
    """The controller's port, losing every HW_INFO on its way (as a noisy link may): the
    controller stays starting, in BOOT."""

    def __init__(self, port: InProcessPort) -> None:
        super().__init__(port.factory)
        self._rx = codec.MessageDecoder(PUMP_LINK_TYPES)
        self.lost = 0  # HW_INFO frames lost: one per HW_INFO_REQUEST the controller sent

    def write(self, data: bytes) -> None:
        kept = []
        for item in self._rx.feed(data):
            if isinstance(item, codec.Received):
                if isinstance(item.message, HwInfo):
                    self.lost += 1
                else:
                    kept.append(codec.encode(item.message, item.frame.seq))
        super().write(b"".join(kept))


def in_state(state: TherapyState) -> Bench:
    bench = commissioned()
    if state is TherapyState.BOOT:
        # A power cycle on a port that loses HW_INFO: restored from NVM, never started.
        bench.pump.rig.port = _HwInfoLost(bench.pump.rig.port)
        bench.ok(SimPowerCycle(off_ms=0))
        return bench
    if state is not TherapyState.STOPPED:
        bench.ok(Start(command_id=bench.next_id()))
    if state is TherapyState.REFILL:
        bench.ok(RefillBegin(command_id=bench.next_id()))
    elif state is TherapyState.HALTED:
        bench.fault(Fault.MOTOR_STALL)
        bench.wait_for(lambda s: s.state is TherapyState.HALTED, "a halt on a motor stall")
    if bench.status().state is not state:
        raise Refused(f"could not bring the pump to {state.name}")
    return bench


# ---------------------------------------------------------------- which request in which state


def _request(cls: type[Message], bench: Bench) -> Message:
    """A request of this type that only the therapy state (or a rule) may refuse. A new
    host request type without an entry here stops the rendering."""
    cid = bench.next_id
    builders: dict[type[Message], Callable[[], Message]] = {
        Hello: Hello,
        Status: Status,
        ReadPrescription: ReadPrescription,
        LogRead: lambda: LogRead(from_seq=0, max_entries=1),
        Program: lambda: Program(command_id=cid(), **RX),
        Start: lambda: Start(command_id=cid()),
        Stop: lambda: Stop(command_id=cid()),
        BolusRequest: lambda: BolusRequest(command_id=cid()),
        ClinicianBolus: lambda: ClinicianBolus(command_id=cid(), dose_ng=100_000, duration_s=600),
        Prime: lambda: Prime(command_id=cid(), volume_nl=RX["catheter_volume_nl"]),
        CatheterReplaced: lambda: CatheterReplaced(command_id=cid()),
        RefillBegin: lambda: RefillBegin(command_id=cid()),
        RefillComplete: lambda: RefillComplete(
            command_id=cid(),
            withdrawn_nl=FILL_NL,
            added_nl=FILL_NL,
            drug=RX["drug"],
            concentration_ng_per_ml=RX["concentration_ng_per_ml"],
        ),
        AlarmAck: lambda: AlarmAck(alarm=AlarmId.BATTERY_ERI),
        SetClock: lambda: SetClock(command_id=cid(), clock_s=1_767_225_600),
        KeyUpdate: lambda: KeyUpdate(command_id=cid(), role=Role.PATIENT, wrapped_key=b""),  # (a pump of its own)
    }
    return builders[cls]()


def host_requests() -> list[type[Message]]:
    return [c for c in REGISTRY.values() if c.FAMILY is MessageFamily.HOST_REQUEST]


def answer_cell(reply: Message, before: TherapyState, after: TherapyState) -> str:
    if isinstance(reply, Nak):
        return reply.reason.name
    text = "ACK"
    if isinstance(reply, BolusRequestAck):
        text += f" ({reply.decision.name})"
    if after is not before:
        text += f" → {after.name}"
    return text


def _state_of(bench: Bench) -> TherapyState:
    s = bench.ask(Status())
    return s.state if isinstance(s, StatusAck) else TherapyState.BOOT  # starting: STATUS is BUSY too


def acceptance() -> dict[tuple[str, TherapyState], str]:
    """(request name, state) -> what the pump answered, each on a pump of its own."""
    out = {}
    for cls in host_requests():
        for state in STATES:
            bench = in_state(state)
            reply = bench.ask(_request(cls, bench), cls.ROLES[0])
            out[(cls.NAME, state)] = answer_cell(reply, state, _state_of(bench))
    return out


def acceptance_table() -> str:
    cells = acceptance()
    rows = [
        (f"{cls.NAME} ({cls.ROLES[0].name.lower()})", *(cells[(cls.NAME, s)] for s in STATES))
        for cls in host_requests()
    ]
    return table(["Request (signed by)", *(s.name for s in STATES)], rows)


# ---------------------------------------------------------------- commissioning


def _value(name: str, v: object) -> str:
    if v == NONE_U32 and name.endswith("_nl"):
        return "0xFFFFFFFF (not known)"
    if v == NONE_I32:
        return f"{NONE_I32} (none)"
    if hasattr(v, "name"):
        return v.name  # type: ignore[attr-defined]
    return str(v)


def answer_text(reply: Message, fields: Iterable[str] | None = None) -> str:
    if isinstance(reply, Nak):
        where = f", field `{reply.field}`" if reply.field else ""
        return f"NAK {reply.reason.name}{where}: “{reply.detail}”"
    names = [f for f in (fields if fields is not None else reply.FIELDS) if f != "command_id"]
    shown = ", ".join(f"{n} {_value(n, getattr(reply, n))}" for n in names)
    return f"{reply.NAME}" + (f": {shown}" if shown else "")


STATUS_FIELDS = ("state", "reservoir_nl", "catheter_state")


def commissioning() -> list[tuple[str, str]]:
    """A new pump, from its first STATUS to START, with what each step answered."""
    b = Bench()
    steps: list[tuple[str, str]] = []

    def step(what: str, msg: Message, fields: Iterable[str] | None = None) -> Message:
        reply = b.ask(msg)
        steps.append((what, answer_text(reply, fields)))
        return reply

    step("STATUS", Status(), STATUS_FIELDS)
    step("START", Start(command_id=b.next_id()))
    step(
        f"PROGRAM the prescription (drug {RX['drug']}, concentration_ng_per_ml {RX['concentration_ng_per_ml']}, "
        f"catheter_volume_nl {RX['catheter_volume_nl']})",
        Program(command_id=b.next_id(), **RX),
    )
    step("START", Start(command_id=b.next_id()))
    step("REFILL_BEGIN", RefillBegin(command_id=b.next_id()))
    step(
        f"REFILL_COMPLETE: withdrawn_nl 0, added_nl {FILL_NL}, the drug and concentration programmed",
        RefillComplete(
            command_id=b.next_id(),
            withdrawn_nl=0,
            added_nl=FILL_NL,
            drug=RX["drug"],
            concentration_ng_per_ml=RX["concentration_ng_per_ml"],
        ),
    )
    step("CATHETER_REPLACED (a new catheter, empty)", CatheterReplaced(command_id=b.next_id()))
    step("START", Start(command_id=b.next_id()))
    step(
        f"PRIME volume_nl {RX['catheter_volume_nl']} (the catheter's volume)",
        Prime(command_id=b.next_id(), volume_nl=RX["catheter_volume_nl"]),
    )
    s = b.wait_for(lambda s: not s.bolus_active, "the priming")
    steps.append(("STATUS once the priming is done", answer_text(s, STATUS_FIELDS)))
    step("START", Start(command_id=b.next_id()))
    return steps


def commissioning_table() -> str:
    return table(["Step", "Host sends", "Pump answers"], [(i, w, a) for i, (w, a) in enumerate(commissioning(), 1)])


# ---------------------------------------------------------------- refill


RefillCase = tuple[str, bool, Callable[[int], dict[str, object]]]


def refill_cases() -> list[RefillCase]:
    """(what happens, whether REFILL_BEGIN comes first, REFILL_COMPLETE's fields given
    the volume expected). The discrepancy cases sit either side of the threshold of the
    default pump, whose capacity the overfill cases pass by one nL."""
    capacity_nl = MODEL.reservoir_capacity_ul * 1000
    small_nl = CONFIG.refill_discrepancy_small_ul * 1000

    def plain(expected: int, **change: object) -> dict[str, object]:
        fields: dict[str, object] = {
            "withdrawn_nl": expected,
            "added_nl": FILL_NL,
            "drug": RX["drug"],
            "concentration_ng_per_ml": RX["concentration_ng_per_ml"],
        }
        return {**fields, **change}

    return [
        ("withdrawn as expected", True, plain),
        (f"withdrawn {small_nl} nL less than expected", True, lambda e: plain(e, withdrawn_nl=e - small_nl)),
        (f"withdrawn {small_nl + 1} nL less than expected", True, lambda e: plain(e, withdrawn_nl=e - small_nl - 1)),
        (
            f"withdrawn {capacity_nl + 1} nL: more than the reservoir holds",
            True,
            lambda e: plain(e, withdrawn_nl=capacity_nl + 1),
        ),
        (f"added {capacity_nl + 1} nL: more than it holds", True, lambda e: plain(e, added_nl=capacity_nl + 1)),
        ("another drug", True, lambda e: plain(e, drug="baclofen")),
        ("a new concentration (6 mg/mL)", True, lambda e: plain(e, concentration_ng_per_ml=6_000_000)),
        ("without REFILL_BEGIN first", False, plain),
    ]


def refill_outcomes() -> list[tuple[str, str, str, str]]:
    """On a running pump REFILL_AFTER_MS into the reference therapy: REFILL_BEGIN, then each case."""
    out = []
    for what, begin, fields in refill_cases():
        b = commissioned()
        b.ok(Start(command_id=b.next_id()))
        b.pump.advance(REFILL_AFTER_MS)
        expected = FILL_NL
        if begin:
            expected = b.ok(RefillBegin(command_id=b.next_id())).expected_reservoir_nl  # type: ignore[attr-defined]
        seen = len(b.pump.events)
        reply = b.ask(RefillComplete(command_id=b.next_id(), **fields(expected)))
        raised = [e.alarm.name for e in b.pump.events[seen:] if isinstance(e, AlarmRaised)]
        out.append((what, answer_text(reply), ", ".join(raised) or "none", b.status().state.name))
    return out


def refill_table() -> str:
    return table(["REFILL_COMPLETE", "Pump answers", "Alarms raised", "State after"], refill_outcomes())


def chapters() -> dict[str, Callable[[], str]]:
    return {
        "STATE_ACCEPTANCE": acceptance_table,
        "COMMISSIONING": commissioning_table,
        "REFILL_OUTCOMES": refill_table,
        "REFILL_AFTER": lambda: f"{REFILL_AFTER_MS // 3_600_000} h",
    }
