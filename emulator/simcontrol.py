"""Sim-control: the requests only the emulator answers (advance, speed, faults, ground
truth, power cycle, the physical refill, a new catheter). emulator/rig.py checks each
frame's sim key and counter and hands the decoded request here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.codes import Fault, Link, NakReason, ResetCause
from protocol.messages import (
    Message,
    SimAdvance,
    SimAdvanceAck,
    SimClearFault,
    SimClearFaultAck,
    SimGroundTruth,
    SimGroundTruthAck,
    SimInjectFault,
    SimInjectFaultAck,
    SimPowerCycle,
    SimPowerCycleAck,
    SimRefill,
    SimRefillAck,
    SimReplaceCatheter,
    SimReplaceCatheterAck,
    SimSetSpeed,
    SimSetSpeedAck,
    Tone,
)

from .fluid import FG_PER_NG
from .noise import NOISE_FAULTS

if TYPE_CHECKING:
    from .rig import Rig

TONE_PAGE = 32
MAX_CATHETER_NL = 2_000_000  # far beyond any implanted catheter


class SimRefused(Exception):
    def __init__(self, reason: NakReason, field: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field


def handle(rig: Rig, msg: Message) -> Message:
    """Answer one sim-control request, or raise SimRefused naming what is wrong."""
    hw = rig.hw
    if isinstance(msg, SimAdvance):
        if rig.speed_milli:
            raise SimRefused(NakReason.WRONG_STATE, "", "advance is for lockstep; set speed 0 first")
        if msg.duration_ms > 400 * 86_400_000:
            raise SimRefused(NakReason.OUT_OF_RANGE, "duration_ms", "advance at most 400 days at a time")
        return SimAdvanceAck(time_ms=rig.advance(msg.duration_ms))
    if isinstance(msg, SimSetSpeed):
        if msg.speed_milli > 1_000_000_000:
            raise SimRefused(NakReason.OUT_OF_RANGE, "speed_milli", "speed at most 1,000,000x")
        rig.speed_milli = msg.speed_milli
        return SimSetSpeedAck(speed_milli=msg.speed_milli)
    if isinstance(msg, SimInjectFault):
        _inject(rig, msg)
        return SimInjectFaultAck(fault=msg.fault)
    if isinstance(msg, SimClearFault):
        if msg.fault in NOISE_FAULTS:
            for ch in rig.noise.values():
                ch.clear(msg.fault)
        else:
            hw.clear(msg.fault)
            rig.exchange()
        return SimClearFaultAck(fault=msg.fault)
    if isinstance(msg, SimGroundTruth):
        f = hw.fluid
        tones = hw.beeper.since(msg.tones_from, TONE_PAGE)
        return SimGroundTruthAck(
            time_ms=hw.now_ms,
            delivered_nl=f.delivered_nl,
            delivered_ng=f.delivered_fg // FG_PER_NG,
            reservoir_nl=f.reservoir_nl,
            outlet_pressure_pa=min(f.pressure_pa, 0x7FFFFFFF),
            motor=hw.motor_state,
            strokes_total=hw.odometer & 0xFFFFFFFF,
            battery_mv=min(hw.battery.mv, 0xFFFF),
            controller_alive=hw.controller_alive,
            tones_total=hw.beeper.total,
            tones=tuple(Tone(time_ms=x.time_ms, pattern=x.pattern) for x in tones),
        )
    if isinstance(msg, SimPowerCycle):
        if msg.off_ms > 86_400_000:
            raise SimRefused(NakReason.OUT_OF_RANGE, "off_ms", "power off at most one day")
        hw.power_off_controller("power cycle")
        if rig.speed_milli == 0:
            hw.advance_idle(hw.now_ms + msg.off_ms)
        rig.restart_port()
        rig.responsive = True
        hw.power_on_controller(ResetCause.POWER_CYCLE)
        rig.exchange()
        return SimPowerCycleAck(boot_count=hw.boot_count)
    if isinstance(msg, SimRefill):
        cap = hw.model.reservoir_capacity_ul * 1000
        if msg.add_nl > 2 * cap:
            raise SimRefused(NakReason.OUT_OF_RANGE, "add_nl", f"more than twice the {cap} nL reservoir")
        w = hw.refill(msg.withdraw_nl, msg.add_nl, msg.concentration_ng_per_ml, msg.into_pocket)
        return SimRefillAck(withdrawn_nl=w, reservoir_nl=hw.fluid.reservoir_nl)
    if isinstance(msg, SimReplaceCatheter):
        if msg.volume_nl > MAX_CATHETER_NL:
            raise SimRefused(NakReason.OUT_OF_RANGE, "volume_nl", f"a catheter holds at most {MAX_CATHETER_NL} nL")
        return SimReplaceCatheterAck(volume_nl=hw.replace_catheter(msg.volume_nl))
    raise SimRefused(NakReason.UNKNOWN_TYPE, "", f"{type(msg).NAME} is not a sim-control request")


def _inject(rig: Rig, msg: SimInjectFault) -> None:
    f, v = msg.fault, msg.value
    if f in NOISE_FAULTS:
        if msg.link is Link.NONE:
            raise SimRefused(NakReason.OUT_OF_RANGE, "link", "link noise needs a link: host, pump or both")
        if not 0 < msg.rate_ppm <= 1_000_000:
            raise SimRefused(NakReason.OUT_OF_RANGE, "rate_ppm", "rate must be 1..1000000 ppm")
        if f is Fault.LINK_DELAY and not 0 < v <= 60_000:
            raise SimRefused(NakReason.OUT_OF_RANGE, "value", "delay must be 1..60000 ms")
        links = (Link.HOST, Link.PUMP) if msg.link is Link.BOTH else (msg.link,)
        for i, link in enumerate(links):
            for j, way in enumerate(("in", "out")):
                rig.noise[(link, way)].set(f, msg.rate_ppm, v, msg.seed * 4 + i * 2 + j)
        return
    if f is Fault.BATTERY_MV and not 0 <= v <= 0xFFFF:
        raise SimRefused(NakReason.OUT_OF_RANGE, "value", "battery voltage must be 0..65535 mV")
    if f in (Fault.STROKE_ERROR, Fault.CATHETER_LEAK) and not -500_000 <= v <= 1_000_000:
        raise SimRefused(NakReason.OUT_OF_RANGE, "value", "ppm must be -500000..1000000")
    if f is Fault.CATHETER_LEAK and v < 0:
        raise SimRefused(NakReason.OUT_OF_RANGE, "value", "a leak cannot be negative")
    rig.hw.inject(f, v)
    rig.exchange()
