"""Starting therapy (SR-016, SR-021, SR-041, SR-046, SR-049, SR-052).

START needs therapy stopped, the pump ready to move its drug at all (rules/ready.py: a
prescription naming what the reservoir holds, no high-priority alarm holding therapy, a
fill recorded, a catheter that is not empty) and a reservoir above the empty level. A
refusal for a halt names the alarms that hold therapy and what each still needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import TherapyState

from . import Refusal, ready, wrong_state


@dataclass(frozen=True)
class StartFacts:
    state: TherapyState
    ready: ready.ReadyFacts
    reservoir_empty: bool


def refusal(f: StartFacts) -> Refusal | None:
    if f.state is TherapyState.HALTED and f.ready.holding:
        return wrong_state(f"halted by {ready.held_by(f.ready.holding)}: acknowledge each once its condition is gone")
    if f.state is not TherapyState.STOPPED:
        return wrong_state(f"start needs state stopped, not {f.state.name.lower()}")
    refused = ready.refusal(f.ready, "starting")
    if refused is not None:
        return refused
    if f.reservoir_empty:
        return wrong_state("reservoir at the empty level: refill first")
    return None
