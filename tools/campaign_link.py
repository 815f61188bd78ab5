"""The link fault campaign: noise, drops, duplicates and delays on the host link, the pump
link or both, at rising rates, under a running therapy.

One seed is one scenario, run in this process on the real rig (emulator/rig.py: pump
hardware, link noise, relay) with the real firmware, and with the real host client
(tools.client.Client: a command is sent once; a lost answer is resolved by STATUS and
last_command_id, never by sending it again) on a virtual host port. Time is virtual on
both sides (lockstep simulated time on the pump link, a virtual wall clock on the host
link that moves while the client waits), so a seed is reproducible to the byte. The
harness's own sim-control (advance, ground truth, faults) goes to the rig out of band:
the noise is on the links under test, not on the test's instruments.

The seed picks a cell of the matrix, CELLS[seed % 48]: fault kind (corrupt, drop,
duplicate, delay) x link (host, pump, both) x rate (0.01 %, 0.1 %, 1 %, 5 % of bytes),
and, from a generator seeded with it, the noise's own seed, the delay, the patient's
press times, a reprogramming time and the length of a total pump-link loss.

Phases: (1) set up without noise (record the 12 mL fill, program the reference therapy,
start); (2) `noise_hours` of noise with the patient pressing the bolus button 8 times a
day, a clinician reading STATUS every 3 h and reprogramming once a day; (3) the noise
cleared, a noise-free day; (4) the pump link lost altogether (every byte dropped) for 10
min to 3 h, then a noise-free day. Checks (each named in the result):

  no_command_executed_twice    every command id the controller accepted (its ACKs, seen
                               on the pump before the noisy host link) is accepted once;
                               each id in the log's BOLUS_REQUEST, BOLUS_STARTED,
                               PROGRAM_ACCEPTED and REFILL_BEGIN entries appears once
  only_sent_commands_executed  every accepted id is one the host sent, as the type it
                               sent (a corrupted command never executes); the
                               prescription in force is the one sent
  host_view_matches_pump       what the client concluded holds: ACKed or Confirmed
                               commands were accepted once, NotAccepted and refused ones
                               never (not even late, from a delayed frame)
  no_overdose                  ground truth: no rolling 24 h (hourly samples) above the
                               hard limit, and no more delivered in all than the basal
                               schedule plus the boluses started
  therapy_continues            during host-link noise at any rate and pump-link noise up
                               to 0.1 %, at least 95 % of the schedule's basal is delivered;
                               after any noise: therapy RUNNING, no alarm, and a noise-free
                               day delivers the schedule's daily total within 1 %
  estimate_matches_truth       the firmware's reservoir estimate is the physical one
                               (within 1 % of what was delivered, or ten strokes)
  pump_link_loss_stops_motor   with the pump link gone, no stroke later than one watchdog
                               window, the motor idle, the controller not alive, and the
                               hardware alarm sounding (the controller cannot stop a motor
                               it cannot reach: the pump's watchdog does)
  pump_link_loss_recovers      once the link is back: the controller restarts from its
                               NVM within a window, logs the watchdog reset, resumes
                               without a catch-up burst (the hour after delivers no more
                               than that hour's basal), and the next day's total is right
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from unittest import mock

import serial

from emulator.model import PumpModel
from emulator.rig import InProcessPort, Rig
from firmware.board import ControllerFactory
from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import AlarmId, Fault, Link, LogEvent, MotorState, Role, TherapyState
from protocol.framing import Frame, parse_body
from protocol.messages import (
    PUMP_LINK_TYPES,
    REGISTRY,
    BolusRequest,
    BolusRequestAck,
    HostTx,
    Message,
    Nak,
    Program,
    RefillBegin,
    RefillComplete,
    SimClearFault,
    SimGroundTruth,
    SimGroundTruthAck,
    SimInjectFault,
    Start,
)
from protocol.schema import MessageFamily, family_of
from protocol.vectors import reference_prescription
from tools.campaign import Checks, SeedResult, reproduce_command
from tools.client import Client, Confirmed, NoAnswer, NotAccepted, Refused, Uncertain

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
KINDS = (Fault.LINK_CORRUPT, Fault.LINK_DROP, Fault.LINK_DUPLICATE, Fault.LINK_DELAY)
LINKS = (Link.HOST, Link.PUMP, Link.BOTH)
RATES_PPM = (100, 1_000, 10_000, 50_000)  # 0.01 %, 0.1 %, 1 %, 5 % of bytes
CELLS = tuple((kind, link, rate) for rate in RATES_PPM for link in LINKS for kind in KINDS)
PRESSES_PER_DAY = 8
CLIENT_TIMEOUT_S = 1.0  # virtual seconds the client waits for an answer
READ_TICK_MS = 10  # virtual wall time one empty read of the port takes
TRANSIENT_MAX_PPM = 1_000  # pump-link noise up to this rate must not disturb basal delivery
FILL_NL = 12_000_000


@dataclass(frozen=True)
class Scenario:
    kind: Fault
    link: Link
    rate_ppm: int
    noise_seed: int
    delay_ms: int  # LINK_DELAY: host link in virtual wall ms, pump link in simulated ms
    noise_hours: int
    presses_ms: tuple[int, ...]  # offsets from the start of the noise
    reprogram_ms: tuple[int, ...]
    loss_offset_ms: int  # after the noise-free day, when the pump link is lost
    loss_ms: int

    def describe(self) -> str:
        extra = f", delay {self.delay_ms} ms" if self.kind is Fault.LINK_DELAY else ""
        return (
            f"{self.kind.name.lower()} on {self.link.name.lower()} at {self.rate_ppm / 10_000:g} %{extra}; "
            f"{self.noise_hours} h of noise, pump link lost for {self.loss_ms / 60_000:g} min"
        )


def scenario(seed: int, noise_hours: int = 24, watchdog_window_ms: int = 300_000) -> Scenario:
    kind, link, rate = CELLS[seed % len(CELLS)]
    rng = random.Random(seed)
    days = -(-noise_hours // 24)
    presses = sorted(d * DAY_MS + rng.randrange(DAY_MS) for d in range(days) for _ in range(PRESSES_PER_DAY))
    delay_ms = rng.randrange(50, 3_000) if link is Link.HOST else rng.randrange(100, 20_000)
    return Scenario(
        kind=kind,
        link=link,
        rate_ppm=rate,
        noise_seed=rng.randrange(1 << 30),
        delay_ms=delay_ms,
        noise_hours=noise_hours,
        presses_ms=tuple(p for p in presses if p < noise_hours * HOUR_MS),
        reprogram_ms=tuple(
            d * DAY_MS + rng.randrange(DAY_MS) for d in range(days) if d * DAY_MS < noise_hours * HOUR_MS
        ),
        loss_offset_ms=rng.randrange(2 * HOUR_MS),
        loss_ms=rng.randrange(2 * watchdog_window_ms, 3 * HOUR_MS),
    )


# ---------------------------------------------------------------- the rig and its host port


class VirtualPort:
    """The rig's host port for tools.client.Client, in place of a pyserial port: what
    the client writes goes into Rig.host_bytes (through the host link's noise); what the
    rig writes back waits here. An empty read moves the virtual wall clock on by
    READ_TICK_MS and lets delayed bytes whose time has come through, as the emulator's
    select loop does."""

    def __init__(self) -> None:
        self.rig: Rig | None = None
        self.buf = bytearray()
        self.clock_ms = 0
        self.bytes_out = 0
        self.bytes_in = 0

    def now_ms(self) -> int:
        return self.clock_ms

    def from_pump(self, data: bytes) -> None:
        self.buf += data
        self.bytes_in += len(data)

    def tick(self, ms: int) -> None:
        self.clock_ms += ms
        self.rig.release_host_noise()

    # the part of pyserial's Serial that Client uses
    def write(self, data: bytes) -> int:
        self.bytes_out += len(data)
        self.rig.host_bytes(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    @property
    def in_waiting(self) -> int:
        return len(self.buf)

    def read(self, n: int = 1) -> bytes:
        if not self.buf:
            self.tick(READ_TICK_MS)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def reset_input_buffer(self) -> None:
        self.buf.clear()

    def close(self) -> None:
        pass


class RigClient(Client):
    """tools.client.Client on a VirtualPort: the same request, command and resolve logic,
    with deterministic counters and command ids and timeouts in virtual wall time."""

    def __init__(self, port: VirtualPort, keys: dict[Role, bytes], timeout_s: float = CLIENT_TIMEOUT_S) -> None:
        with mock.patch.object(serial, "Serial", return_value=port):
            super().__init__("in-process rig", keys, Role.CLINICIAN, timeout_s=timeout_s)
        self._signers = {r: FrameSigner(r, k) for r, k in keys.items()}
        self._seq = 0
        self.vport = port

    def _wait(self, get, timeout_s: float) -> Message:
        deadline = self.vport.clock_ms + round(timeout_s * 1000)
        while True:
            got = get()
            if got is not None:
                return got
            if self.vport.clock_ms >= deadline:
                raise NoAnswer(f"no answer within {timeout_s:g} s (virtual)")
            self._pump_once()


class TappedPort(InProcessPort):
    """The in-process controller's port, with a tap on what the controller transmits
    (before the pump link's noise): every answer it gives the host, carried in HOST_TX,
    is decoded and the command ids it accepted are recorded, as a logic analyser on the
    controller's transmit line would see them."""

    def __init__(self, factory, now_ms) -> None:
        super().__init__(factory)
        self.now_ms = now_ms
        self.accepted: list[tuple[int, str, int]] = []  # (command id, ACK name, pump ms)
        self._rx = codec.MessageDecoder(PUMP_LINK_TYPES)

    def restart(self) -> None:
        super().restart()
        self._rx = codec.MessageDecoder(PUMP_LINK_TYPES)

    def write(self, data: bytes) -> None:
        before = len(self._pending)
        super().write(data)
        for item in self._rx.feed(self._pending[before:]):
            if isinstance(item, codec.Received) and type(item.message) is HostTx:
                self._tap(item.message.frame)

    def _tap(self, body: bytes) -> None:
        f = parse_body(body)
        if type(f) is not Frame or family_of(f.msg_type) is not MessageFamily.HOST_RESPONSE:
            return
        cls = REGISTRY.get(f.msg_type)
        if cls is None or cls is Nak or "command_id" not in cls.FIELDS:
            return
        self.accepted.append((codec.decode(f).command_id, cls.NAME, self.now_ms()))


class LinkRig:
    """The rig in this process, with seeded keys (so the bytes, and where noise hits
    them, are the same in every run of a seed) and a tap on the controller's transmit
    line that sees every answer it gives before either link's noise does."""

    def __init__(self, seed: int, model: PumpModel | None = None) -> None:
        krng = random.Random(f"thecal-link-keys-{seed}")
        self.keys = {r: krng.randbytes(32) for r in Role}
        self.model = model or PumpModel()
        self.port = VirtualPort()
        self.ctl_port = TappedPort(ControllerFactory(self.keys), lambda: self.rig.now_ms)
        self.rig = Rig(
            self.model,
            self.ctl_port,
            self.keys,
            seed=seed,
            host_write=self.port.from_pump,
            wall_ms=self.port.now_ms,
        )
        self.port.rig = self.rig
        self.accepted = self.ctl_port.accepted
        self.rig.boot()
        self.client = RigClient(self.port, self.keys)
        self.samples: list[tuple[int, int]] = []  # (pump ms, delivered ng) by ground truth

    # -------------------------------------------------------- sim-control, out of band

    def sim(self, msg: Message) -> Message:
        return self.rig.sim_handle(msg)

    def truth(self) -> SimGroundTruthAck:
        return self.sim(SimGroundTruth(tones_from=0))

    def run_to(self, t_ms: int) -> SimGroundTruthAck:
        """Advance to pump time t_ms, sampling the ground truth at least hourly."""
        while self.rig.now_ms < t_ms:
            step = min(HOUR_MS - self.rig.now_ms % HOUR_MS, t_ms - self.rig.now_ms)
            self.rig.advance(step)
            gt = self.truth()
            self.samples.append((gt.time_ms, gt.delivered_ng))
        return self.truth()

    def noise_counts(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (link, way), ch in self.rig.noise.items():
            for k, v in ch.counts.items():
                out[f"{link.name.lower()}_{way}_{k}"] += v
        return dict(out)


def basal_ng(t0_ms: int, t1_ms: int, steps=None) -> float:
    """Drug the basal schedule asks for between two pump times (local time = pump time:
    the emulator's clock starts at midnight)."""
    steps = steps or reference_prescription()["basal"]
    starts = [s.start_s * 1000 for s in steps]
    total = 0.0
    t = t0_ms
    while t < t1_ms:
        day0 = t - t % DAY_MS
        tod = t - day0
        i = max(k for k, st in enumerate(starts) if st <= tod)
        nxt = day0 + (starts[i + 1] if i + 1 < len(starts) else DAY_MS)
        end = min(nxt, t1_ms)
        total += steps[i].rate_ng_per_day * (end - t) / DAY_MS
        t = end
    return total


# ---------------------------------------------------------------- one seed


class _Host:
    """The host's side: commands with fresh ids, each sent once through the client, and
    what the client concluded about each."""

    def __init__(self, lr: LinkRig, first_id: int) -> None:
        self.lr = lr
        self.next_id = first_id
        self.sent: dict[int, tuple[str, str]] = {}  # id -> (request name, outcome)
        self.outcomes: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()

    def new_id(self) -> int:
        cid = self.next_id
        self.next_id += 1
        return cid

    def command(self, msg: Message, role: Role = Role.CLINICIAN) -> Message | None:
        cid = msg.command_id
        outcome = "acked"
        reply: Message | None = None
        try:
            reply = self.lr.client.command(msg, role)
            if isinstance(reply, Confirmed):
                outcome = "confirmed"
            elif isinstance(reply, BolusRequestAck):
                self.decisions[reply.decision.name.lower()] += 1
        except Refused as e:
            outcome = f"refused_{e.reason.name.lower()}"
        except NotAccepted:
            outcome = "not_accepted"
        except Uncertain:
            outcome = "uncertain"
        except NoAnswer:  # (a PortLost cannot happen on the virtual port)
            outcome = "uncertain"
        self.sent[cid] = (type(msg).NAME, outcome)
        self.outcomes[outcome.split("_")[0] if outcome.startswith("refused") else outcome] += 1
        return reply

    def status(self, role: Role = Role.CLINICIAN):
        try:
            st = self.lr.client.status(role)
            self.reads["answered"] += 1
            return st
        except (NoAnswer, Refused):
            self.reads["unanswered"] += 1
            return None


def run_seed(seed: int, noise_hours: int = 24) -> SeedResult:
    t_wall = time.monotonic()
    params = {"noise_hours": noise_hours}
    lr = LinkRig(seed)
    sc = scenario(seed, noise_hours, lr.model.watchdog_window_ms)
    ck = Checks()
    host = _Host(lr, first_id=1_000 + seed % 1000 * 1_000_000)
    rx = reference_prescription()
    stroke_ng = lr.model.stroke_nl * rx["concentration_ng_per_ml"] // 1_000_000
    window = lr.model.watchdog_window_ms
    notes: dict[str, Any] = {"scenario": sc.describe()}

    # 1. Set up, no noise: record the fill, program, start; run to 01:00.
    for msg in (
        RefillBegin(command_id=host.new_id()),
        RefillComplete(
            command_id=host.new_id(),
            withdrawn_nl=0,
            added_nl=FILL_NL,
            drug=rx["drug"],
            concentration_ng_per_ml=rx["concentration_ng_per_ml"],
        ),
        Program(command_id=host.new_id(), **rx),
        Start(command_id=host.new_id()),
    ):
        host.command(msg)
    ck.ok("set_up", all(o == "acked" for _, o in host.sent.values()), f"set-up commands: {host.sent}")
    t_start = lr.rig.now_ms
    g_start = lr.truth()
    t0 = HOUR_MS
    lr.run_to(t0)

    # 2. Noise, with therapy going on.
    g_noise0 = lr.truth()
    lr.sim(SimInjectFault(fault=sc.kind, link=sc.link, value=sc.delay_ms, rate_ppm=sc.rate_ppm, seed=sc.noise_seed))
    events = sorted(
        [(t0 + p, "press") for p in sc.presses_ms]
        + [(t0 + p, "reprogram") for p in sc.reprogram_ms]
        + [(t0 + h * HOUR_MS, "status") for h in range(3, sc.noise_hours, 3)]
    )
    t_noise_end = t0 + sc.noise_hours * HOUR_MS
    for at, what in events:
        lr.run_to(at)
        if what == "press":
            host.command(BolusRequest(command_id=host.new_id()), Role.PATIENT)
        elif what == "reprogram":
            host.command(Program(command_id=host.new_id(), **rx))
        else:
            host.status()
    g_noise1 = lr.run_to(t_noise_end)
    noise_resets = sum(1 for e in lr.rig.hw.events if e.what == "watchdog_expired")
    lr.sim(SimClearFault(fault=sc.kind))
    lr.port.tick(60_000)  # delayed host bytes still held come out now
    lr.rig.advance(0)

    # 3. A noise-free day (from an hour after the noise, when any owed basal is paid).
    g_a = lr.run_to(t_noise_end + HOUR_MS)
    g_b = lr.run_to(t_noise_end + 25 * HOUR_MS)
    st = host.status()
    day_expected = basal_ng(g_a.time_ms, g_b.time_ms)
    day_delivered = g_b.delivered_ng - g_a.delivered_ng
    noisy_expected = basal_ng(g_noise0.time_ms, g_noise1.time_ms)
    noisy_delivered = g_noise1.delivered_ng - g_noise0.delivered_ng
    transient = sc.link is Link.HOST or sc.rate_ppm <= TRANSIENT_MAX_PPM
    if transient:
        ck.ok(
            "therapy_continues",
            noisy_delivered >= 0.95 * noisy_expected,
            f"during the noise {noisy_delivered} ng delivered for {noisy_expected:.0f} ng of basal",
        )
    ck.ok(
        "therapy_continues",
        st is not None and st.state is TherapyState.RUNNING and not st.alarms,
        f"after the noise: {_status_text(st)}",
    )
    ck.ok(
        "therapy_continues",
        abs(day_delivered - day_expected) <= max(0.01 * day_expected, 2 * stroke_ng),
        f"the day after the noise delivered {day_delivered} ng for {day_expected:.0f} ng",
    )

    # 4. The pump link lost altogether, then back.
    t_loss = lr.rig.now_ms + sc.loss_offset_ms
    g_l0 = lr.run_to(t_loss)
    boots0 = lr.rig.hw.boot_count
    lr.sim(SimInjectFault(fault=Fault.LINK_DROP, link=Link.PUMP, value=0, rate_ppm=1_000_000, seed=sc.noise_seed))
    g_l1 = lr.run_to(t_loss + window + 1)
    g_l2 = lr.run_to(t_loss + sc.loss_ms)
    ck.ok(
        "pump_link_loss_stops_motor",
        g_l2.strokes_total == g_l1.strokes_total and g_l1.motor is not MotorState.RUNNING,
        f"strokes {g_l1.strokes_total} one window into the loss, {g_l2.strokes_total} at its end",
    )
    ck.ok("pump_link_loss_stops_motor", not g_l2.controller_alive, "the controller counted alive with no link")
    ck.ok(
        "pump_link_loss_stops_motor",
        g_l2.tones_total - g_l0.tones_total >= max(1, sc.loss_ms // window - 1),
        f"{g_l2.tones_total - g_l0.tones_total} hardware alarm tones in {sc.loss_ms} ms of loss",
    )
    lr.sim(SimClearFault(fault=Fault.LINK_DROP))
    t_back = lr.rig.now_ms
    g_r1 = lr.run_to(t_back + window + 60_000)
    ck.ok("pump_link_loss_recovers", g_r1.controller_alive, "no controller alive a window after the link returned")
    g_r2 = lr.run_to(t_back + HOUR_MS)
    burst = g_r2.delivered_ng - g_l2.delivered_ng
    ck.ok(
        "pump_link_loss_recovers",
        burst <= basal_ng(t_back, t_back + HOUR_MS) + 2 * stroke_ng,
        f"{burst} ng in the hour after the link returned (basal {basal_ng(t_back, t_back + HOUR_MS):.0f} ng)",
    )
    g_r3 = lr.run_to(t_back + 25 * HOUR_MS)
    st2 = host.status()
    rec_expected = basal_ng(g_r2.time_ms, g_r3.time_ms)
    rec_delivered = g_r3.delivered_ng - g_r2.delivered_ng
    ck.ok(
        "pump_link_loss_recovers",
        st2 is not None and st2.state in (TherapyState.RUNNING, TherapyState.HALTED),
        f"after the loss: {_status_text(st2)}",
    )
    ck.ok(
        "pump_link_loss_recovers",
        abs(rec_delivered - rec_expected) <= max(0.01 * rec_expected, 2 * stroke_ng),
        f"the day after the loss delivered {rec_delivered} ng for {rec_expected:.0f} ng",
    )
    log = lr.client.read_log()
    ck.ok(
        "pump_link_loss_recovers",
        any(e.event is LogEvent.WATCHDOG_RESET and e.time_s * 1000 >= t_loss for e in log),
        "no WATCHDOG_RESET logged after the loss",
    )

    # 5. The final account.
    g_end = lr.truth()
    _check_commands(ck, host, lr, log)
    rx_now = lr.client.read_prescription()
    ck.ok(
        "only_sent_commands_executed",
        rx_now.present and {k: getattr(rx_now, k) for k in rx} == rx,
        "the prescription in force is not the one sent",
    )
    bolus_ids = [e.arg0 for e in log if e.event is LogEvent.BOLUS_STARTED]
    allowed = basal_ng(t_start, g_end.time_ms) + len(bolus_ids) * rx["bolus_dose_ng"]
    total = g_end.delivered_ng - g_start.delivered_ng
    ck.ok(
        "no_overdose",
        total <= allowed * 1.01 + 4 * stroke_ng,
        f"{total} ng delivered in all; the schedule and {len(bolus_ids)} boluses allow {allowed:.0f} ng",
    )
    limit = rx["max_dose_24h_ng"] * 1.01 + 2 * stroke_ng
    worst = _worst_24h(lr.samples)
    ck.ok("no_overdose", worst <= limit, f"{worst} ng in a rolling 24 h (hard limit {rx['max_dose_24h_ng']} ng)")
    st_end = host.status()
    err = None if st_end is None else st_end.reservoir_nl - g_end.reservoir_nl
    used = FILL_NL - g_end.reservoir_nl
    ck.ok(
        "estimate_matches_truth",
        err is not None and abs(err) <= max(0.01 * used, 10 * lr.model.stroke_nl),
        f"firmware reservoir estimate off the physical by {err} nL after {used} nL",
    )

    hw_events = Counter(e.what for e in lr.rig.hw.events)
    counters = {
        "commands": len(host.sent),
        "sim_hours": g_end.time_ms // HOUR_MS,
        "watchdog_resets": hw_events["watchdog_expired"],
        "watchdog_resets_in_noise": noise_resets,
        "alarm_tones_in_noise": g_noise1.tones_total - g_noise0.tones_total,
        "boots": lr.rig.hw.boot_count,
        "boots_during_loss": lr.rig.hw.boot_count - boots0,
        "strokes": g_end.strokes_total,
        "delivered_ng": g_end.delivered_ng,
        "noisy_delivered_ng": noisy_delivered,
        "noisy_basal_ng": round(noisy_expected),
        "host_bytes_sent": lr.port.bytes_out,
        "host_bytes_received": lr.port.bytes_in,
        "delivery_shortfalls_logged": sum(1 for e in log if e.event is LogEvent.DELIVERY_SHORTFALL),
        "accepted_commands": len(lr.accepted),
        **{f"outcome_{k}": v for k, v in sorted(host.outcomes.items())},
        **{f"bolus_{k}": v for k, v in sorted(host.decisions.items())},
        **{f"status_{k}": v for k, v in sorted(host.reads.items())},
        **{k: v for k, v in lr.noise_counts().items() if v},
    }
    counters["bolus_granted"] = counters.get("bolus_granted", 0)
    return SeedResult(
        campaign="link",
        seed=seed,
        passed=ck.passed,
        checks=ck.results,
        counters=counters,
        failure=f"{sc.describe()}: " + "; ".join(ck.failures) if ck.failures else None,
        reproduce=reproduce_command("link", seed, params),
        wall_s=round(time.monotonic() - t_wall, 3),
        notes=notes,
    )


def _status_text(st) -> str:
    if st is None:
        return "STATUS unanswered"
    alarms = ", ".join(AlarmId(a.alarm).name.lower() for a in st.alarms) or "none"
    return f"state {st.state.name.lower()}, alarms {alarms}"


def _worst_24h(samples: list[tuple[int, int]]) -> int:
    worst = 0
    j = 0
    for t, d in samples:
        while samples[j][0] < t - DAY_MS:
            j += 1
        worst = max(worst, d - samples[j][1])
    return worst


def _check_commands(ck: Checks, host: _Host, lr: LinkRig, log) -> None:
    accepted = Counter(cid for cid, _, _ in lr.accepted)
    twice = sorted(cid for cid, n in accepted.items() if n > 1)
    ck.ok("no_command_executed_twice", not twice, f"command ids accepted more than once: {twice}")
    for ev in (LogEvent.BOLUS_REQUEST, LogEvent.BOLUS_STARTED, LogEvent.PROGRAM_ACCEPTED, LogEvent.REFILL_BEGIN):
        ids = Counter(e.arg0 for e in log if e.event is ev)
        dup = sorted(cid for cid, n in ids.items() if n > 1)
        ck.ok("no_command_executed_twice", not dup, f"{ev.name} logged more than once for ids {dup}")
        foreign = sorted(cid for cid in ids if cid not in host.sent)
        ck.ok("only_sent_commands_executed", not foreign, f"{ev.name} logged for ids never sent: {foreign}")
    for cid, ack, _ in lr.accepted:
        sent = host.sent.get(cid)
        ck.ok("only_sent_commands_executed", sent is not None, f"command id {cid} ({ack}) accepted but never sent")
        if sent is not None:
            ck.ok(
                "only_sent_commands_executed",
                ack == f"{sent[0]}_ACK",
                f"command id {cid} sent as {sent[0]} but accepted as {ack}",
            )
    for cid, (name, outcome) in host.sent.items():
        n = accepted[cid]
        if outcome in ("acked", "confirmed"):
            ck.ok("host_view_matches_pump", n == 1, f"{name} {cid}: the client saw it {outcome}, accepted {n} times")
        elif outcome == "not_accepted" or outcome.startswith("refused"):
            ck.ok("host_view_matches_pump", n == 0, f"{name} {cid}: the client concluded {outcome}, accepted {n} times")


__all__ = ["CELLS", "LinkRig", "RigClient", "Scenario", "VirtualPort", "basal_ng", "run_seed", "scenario"]
