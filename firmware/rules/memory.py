"""The controller's memory, doubted against the hardware (SR-042, SR-044).

The pump hardware keeps counters that only ever go up: its boot count and its stroke
odometer, both in POWER_ON. The NVM records the boot count of each boot, the odometer as
last reported, and the runs it commanded. An NVM that is blank although the boot count
says the controller booted before, or older than the odometer proves (ahead of every
stroke the recorded runs could have made), cannot be vouched for: a restored old copy
would bring back old lockouts, bolus counts and auth counters. That is a critical memory
error, never a new pump. Counters behind the NVM's are the other way round: the hardware
restarted from older state (a clock error, SR-042).

Boots the NVM did not record prove nothing: a controller that dies before its first
commit (a crash loop, or a dead controller the watchdog resets every window) boots
without a trace, so the boot count can show the hardware older, never the NVM.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import MemoryProof


@dataclass(frozen=True)
class MemoryFacts:
    nvm_blank: bool
    hw_boot_count: int
    nvm_boot_count: int | None  # the boot NVM last recorded; None when it holds none
    hw_odometer: int
    nvm_odometer: int | None  # the odometer as last reported; None when it holds none
    unreported_bound: int  # strokes the runs NVM recorded could have made unreported


@dataclass(frozen=True)
class Outdated:
    proof: MemoryProof
    by: int  # earlier boots, or strokes beyond what the NVM allows


def outdated(f: MemoryFacts) -> Outdated | None:
    """SR-044: what proves the NVM older than the hardware, or None."""
    if f.nvm_blank:
        if f.hw_boot_count > 1:
            return Outdated(MemoryProof.BLANK_AFTER_BOOTS, f.hw_boot_count - 1)
        return None
    if f.nvm_odometer is not None:
        ahead = f.hw_odometer - f.nvm_odometer - f.unreported_bound
        if ahead > 0:
            return Outdated(MemoryProof.ODOMETER_AHEAD, ahead)
    return None


def hardware_older(f: MemoryFacts) -> bool:
    """SR-042: the hardware's counters are behind what NVM saw them reach."""
    if f.nvm_blank:
        return False
    if f.nvm_boot_count is not None and f.hw_boot_count <= f.nvm_boot_count:
        return True
    return f.nvm_odometer is not None and f.hw_odometer < f.nvm_odometer
