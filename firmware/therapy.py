"""The therapy state machine: BOOT, STOPPED, RUNNING, REFILL, HALTED (the wire's
TherapyState enum, so a state is never a string).

Every transition is guarded and logged; a trigger that is not allowed in the current
state, or whose guard fails, returns False (the caller answers NAK WRONG_STATE), never an
exception on the link. A bolus in progress is a flag (the delivery engine owns it), not a
state of its own: of RUNNING, or of STOPPED for a priming or a single bolus (which START
lets run on); every other change of state ends it. What
a transition does to delivery is the supervisor's (firmware/supervisor.py).

`thecal diagram` (tools/cli.py) writes the diagram as mermaid to
docs/therapy-states.md; a test fails when the committed diagram differs from this table.
"""

from __future__ import annotations

from collections.abc import Callable

from transitions import Machine, MachineError

from protocol.codes import TherapyState

BOOT, STOPPED, RUNNING, REFILL, HALTED = (
    TherapyState.BOOT,
    TherapyState.STOPPED,
    TherapyState.RUNNING,
    TherapyState.REFILL,
    TherapyState.HALTED,
)

# trigger, source(s), dest, guard (a method name on Therapy, or None)
TRANSITIONS: list[dict] = [
    {"trigger": "boot_to_stopped", "source": BOOT, "dest": STOPPED},
    {"trigger": "boot_to_running", "source": BOOT, "dest": RUNNING, "conditions": "can_deliver"},
    {"trigger": "boot_to_refill", "source": BOOT, "dest": REFILL},
    {"trigger": "boot_to_halted", "source": BOOT, "dest": HALTED},
    {"trigger": "start_therapy", "source": STOPPED, "dest": RUNNING, "conditions": "can_deliver"},
    {"trigger": "stop_therapy", "source": [RUNNING, HALTED], "dest": STOPPED},
    {"trigger": "begin_refill", "source": [STOPPED, RUNNING, HALTED], "dest": REFILL},
    {"trigger": "finish_refill_stopped", "source": REFILL, "dest": STOPPED},
    {"trigger": "finish_refill_running", "source": REFILL, "dest": RUNNING, "conditions": "can_deliver"},
    {"trigger": "halt", "source": [RUNNING, STOPPED], "dest": HALTED},
    {"trigger": "recover_running", "source": HALTED, "dest": RUNNING, "conditions": "can_deliver"},
    {"trigger": "recover_stopped", "source": HALTED, "dest": STOPPED},
]


class Therapy:
    """The model the machine drives. `can_deliver` is supplied by the supervisor (a
    prescription is in force, no high-priority alarm stands, the reservoir is above empty);
    `on_change(old, new)` logs and announces each transition."""

    state: TherapyState  # the machine sets it

    def __init__(
        self,
        can_deliver: Callable[[], bool],
        on_change: Callable[[TherapyState, TherapyState], None],
    ) -> None:
        self._can_deliver = can_deliver
        self._on_change = on_change
        self.machine = Machine(
            model=self,
            states=TherapyState,
            transitions=TRANSITIONS,
            initial=BOOT,
            queued=True,
            auto_transitions=False,
            after_state_change="_announce",
            before_state_change="_remember",
        )
        self._from = BOOT

    def can_deliver(self) -> bool:
        return self._can_deliver()

    def _remember(self) -> None:
        self._from = self.state

    def _announce(self) -> None:
        self._on_change(self._from, self.state)

    def fire(self, trigger: str) -> bool:
        """Run a trigger; False if it is not allowed now or its guard failed.

        A queued machine reports True even when a guard refused, so success is judged
        by the state having changed (every transition here changes state)."""
        before = self.state
        try:
            self.trigger(trigger)
        except MachineError:
            return False
        return self.state != before


def mermaid() -> str:
    """The machine as a mermaid state diagram (for docs/therapy-states.md)."""
    from transitions.extensions import GraphMachine

    class _Model:
        def can_deliver(self) -> bool:
            return True

    m = GraphMachine(
        model=_Model(),
        states=TherapyState,
        transitions=TRANSITIONS,
        initial=BOOT,
        auto_transitions=False,
        graph_engine="mermaid",
        show_conditions=True,
        title="Thecal therapy states",
    )
    src = m.get_graph().draw(None)
    # The library writes its title as bare front matter, which mermaid does not accept.
    lines = src.splitlines()
    if lines[:1] == ["---"] and len(lines) > 2 and lines[2] == "---":
        lines = ["---", f"title: {lines[1]}", "---", *lines[3:]]
    return "\n".join(lines) + "\n"


def diagram_document() -> str:
    return (
        "# Therapy state machine\n\n"
        "Generated from firmware/therapy.py by `thecal diagram`; a test fails when this\n"
        "file differs from the machine. Guards are shown in brackets.\n\n"
        "```mermaid\n" + mermaid().rstrip() + "\n```\n"
    )


def write_diagram(path: str, check: bool = False) -> int:
    from pathlib import Path

    p = Path(path)
    text = diagram_document()
    if check:
        current = p.read_text() if p.exists() else ""
        if current != text:
            print(f"{path} differs from the state machine: run `thecal diagram`")
            return 1
        print(f"{path} is up to date")
        return 0
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    print(f"wrote {path}")
    return 0
