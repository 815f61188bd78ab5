"""Kill campaign: the emulator process itself SIGKILLed at random instants (issue 13, item 1).

`thecal emulator` (the firmware in its process, therapy running at the drug's daily
maximum, so strokes come every few simulated seconds) is killed with SIGKILL, process
group and all, at a random instant: in lockstep part-way through a long `sim advance`,
in realtime (at high speed) while the host polls the ground truth. It is restarted on the
same state directory, and after each restart:

  * the hardware's stroke count (ground truth) is within one stroke of an independent
    count: the odometer as the firmware last committed it to its NVM (read from a copy
    of the NVM file while no process runs). The firmware learns strokes only from the
    hardware's reports, so the hardware may be one stroke ahead (a report written, the
    firmware killed before its commit), never behind;
  * the pump's time is never earlier than the latest time seen before the kill, by the
    host (ground-truth answers) and by the firmware (its NVM's record of how far time
    had got);
  * the firmware, judging for itself at boot, logged no clock or odometer going back and
    no NVM older than the hardware.

Before the checkpoint (emulator/journal.py), pump.json was written only once a second
and after sim-control frames: the first lockstep kill found the hardware some hundreds
of strokes behind the firmware, and the realtime clock went back.

10 kills per clock by default (20 in all); `--long` runs 50 per clock.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from firmware.board.filenvm import NVM_FILE, FileNvm
from firmware.config import FirmwareConfig
from protocol import codec
from protocol.codes import LogEvent, Role, TherapyState
from protocol.messages import SimAdvance
from tests.harness import EmulatorProcess, Procs, PumpHost, write_model

MG = 1_000_000
DAY = 86_400_000
BACK = (LogEvent.CLOCK_WENT_BACK, LogEvent.ODOMETER_WENT_BACK, LogEvent.NVM_OUTDATED)


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def firmware_record(state_dir: Path, scratch: Path) -> tuple[int, int]:
    """(odometer, pump time in ms) as the firmware last committed them: its NVM record
    `delivery` (firmware/persist.py: the odometer at 6, the clock [now, local, skew,
    offset] at 9). Read from a copy: loading erases torn slots, and the test must not
    write the pump's file."""
    copy = scratch / "nvm-copy.bin"
    shutil.copyfile(state_dir / NVM_FILE, copy)
    nvm = FileNvm(copy, FirmwareConfig().log_capacity)
    try:
        data = nvm.load() or {}
    finally:
        nvm.close()
    delivery = data.get("delivery")
    if delivery is None:
        return 0, 0
    now_ms, _local_ms, skew_ms, _offset_s = delivery[9]
    return delivery[6] or 0, now_ms - skew_ms


class Campaign:
    def __init__(self, procs: Procs, clock: str, seed: int) -> None:
        self.procs = procs
        self.rng = random.Random(seed)
        self.args = ("--clock", "realtime", "--speed", "3000") if clock == "realtime" else ()
        # Exact strokes, and a reservoir no campaign empties (14 mg/day at 5 mg/mL is
        # 2.8 mL a day, a stroke about every 15 s).
        self.model = write_model(
            procs.tmp, "kill.toml", stroke_error_sd_ppm=0, reservoir_capacity_ul=1_000_000, initial_fill_ul=1_000_000
        )
        self.state_dir = procs.tmp / "state"
        self.seed = seed
        self.seen_ms = 0  # the latest pump time the host has been told
        self.log_from = 0
        self.deviations: list[int] = []
        self.pump = self.start()
        self.pump.fill(1_000_000_000, 5 * MG)
        self.pump.program(basal=((0, 14 * MG),), max_dose_24h_ng=15 * MG)
        self.pump.start()
        self.seen_ms = self.pump.truth().time_ms
        self.first_strokes = self.pump.truth().strokes_total

    def start(self) -> PumpHost:
        emu = self.procs.emulator(
            *self.args, split=False, firmware=True, model=self.model, seed=self.seed, state_dir=self.state_dir
        )
        return PumpHost(emu.sim, emu, None, self.model)

    def kill(self) -> None:
        emu: EmulatorProcess = self.pump.emulator
        os.killpg(emu.pid, signal.SIGKILL)  # first: kill_group closes stdin, a clean stop
        emu.proc.wait()
        emu.kill_group()

    def lockstep_trial(self) -> None:
        """A long advance, killed part-way (or, now and then, before it starts)."""
        c = self.pump.client
        c._seq = (c._seq + 1) & 0xFFFF
        c.send_raw(codec.encode(SimAdvance(duration_ms=30 * DAY), c._seq, c._signers[Role.SIM]))
        time.sleep(self.rng.uniform(0.0, 0.6))

    def realtime_trial(self) -> None:
        """The host polls the ground truth until a random instant."""
        until = time.monotonic() + self.rng.uniform(0.05, 0.8)
        while time.monotonic() < until:
            self.seen_ms = max(self.seen_ms, self.pump.truth().time_ms)
            time.sleep(self.rng.uniform(0.0, 0.02))

    def trial(self, n: int, realtime: bool) -> None:
        self.realtime_trial() if realtime else self.lockstep_trial()
        self.kill()
        fw_odometer, fw_ms = firmware_record(self.state_dir, self.procs.tmp)
        command_id = self.pump.command_id
        self.pump = self.start()
        self.pump.command_id = command_id  # a command id is never used twice
        gt = self.pump.truth()
        deviation = gt.strokes_total - fw_odometer
        self.deviations.append(deviation)
        assert 0 <= deviation <= 1, (
            f"kill {n}: the hardware restarted with {gt.strokes_total} strokes, the firmware had counted {fw_odometer}"
        )
        assert gt.time_ms >= self.seen_ms, f"kill {n}: pump time went back from {self.seen_ms} to {gt.time_ms} ms"
        assert gt.time_ms >= fw_ms, f"kill {n}: pump time {gt.time_ms} ms is before the firmware's {fw_ms} ms"
        log = self.pump.log(self.log_from)
        back = [(e.event.name, e.arg0, e.arg1) for e in log if e.event in BACK]
        assert not back, f"kill {n}: the firmware found the hardware gone back: {back}"
        self.log_from = log[-1].seq + 1 if log else self.log_from
        self.seen_ms = gt.time_ms
        # Therapy goes on: a kill may leave an alarm to acknowledge before it resumes.
        st = self.pump.status()
        if st.state is TherapyState.HALTED:
            for a in st.alarms:
                self.pump.ack(a.alarm)


@pytest.mark.parametrize("clock", ["lockstep", "realtime"])
def test_sigkill_of_the_emulator_loses_no_stroke_and_never_turns_time_back(procs, clock, request):
    kills = 50 if request.config.getoption("--long") else 10
    campaign = Campaign(procs, clock, seed=13 + (clock == "realtime"))
    for n in range(kills):
        campaign.trial(n, clock == "realtime")
    strokes = campaign.pump.truth().strokes_total - campaign.first_strokes
    # Killed while strokes were being made, or the campaign proves little.
    assert strokes > 10 * kills, strokes
    print(f"{clock}: {kills} kills, {strokes} strokes, deviations {sorted(set(campaign.deviations))}")
