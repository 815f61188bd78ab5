"""What the firmware knows of the catheter (SR-040, SR-049).

The catheter's volume is what the clinician entered in the prescription (from the
catheter model and its trimmed length), never read from the pump hardware, which a real
pump cannot know. Its contents are tracked as (nL, ng/mL) segments, tip first, so that
drug is counted where it reaches the patient, at the tip: after a refill at a new
concentration the old drug is pushed out first (bridging), and a priming stroke pushes
out whatever the catheter held.

Its state (protocol CatheterState):
  * UNKNOWN: contents not known (no volume entered, or the volume changed). Counted as
    holding the reservoir's drug, so priming into it is drug to the patient. Once its
    volume has been pushed through, it holds the reservoir's drug: PRIMED.
  * EMPTY: declared replaced (CATHETER_REPLACED): an empty segment (0 ng/mL) of its
    volume, which pushes no drug out of the tip. PRIMED once that segment is out.
  * PRIMED: holds what the reservoir pushed into it.
"""

from __future__ import annotations

from collections import deque

from protocol.codes import CatheterState


class Catheter:
    """The catheter's volume, state and contents (segments tip first)."""

    def __init__(self, volume_nl: int = 0, concentration_ng_per_ml: int = 0) -> None:
        self.volume_nl = volume_nl
        self.segments: deque[list[int]] = deque()
        self.unknown_left_nl = volume_nl  # UNKNOWN until this much more has been pushed through
        self.replaced_at_ms: int | None = None  # when last declared replaced (pump time)
        if volume_nl:
            self.segments.append([volume_nl, concentration_ng_per_ml])

    # ------------------------------------------------------------ state

    @property
    def state(self) -> CatheterState:
        if self.volume_nl == 0 or self.unknown_left_nl > 0:
            return CatheterState.UNKNOWN
        if any(conc == 0 for _, conc in self.segments):
            return CatheterState.EMPTY
        return CatheterState.PRIMED

    def program(self, volume_nl: int, reservoir_ng_per_ml: int) -> None:
        """The prescription names the catheter's volume. Unchanged, nothing changes. A
        catheter declared empty and not yet pushed into takes the new volume and stays
        empty (the clinician may declare the new catheter before programming its volume).
        Otherwise what it holds is no longer known: counted as the reservoir's drug."""
        if volume_nl == self.volume_nl:
            return
        if self.untouched_empty:
            self.replaced(volume_nl)
            return
        self.volume_nl = volume_nl
        self.unknown_left_nl = volume_nl
        self.segments = deque([[volume_nl, reservoir_ng_per_ml]]) if volume_nl else deque()

    def replaced(self, volume_nl: int, now_ms: int | None = None) -> None:
        """A new, empty catheter (implant or revision surgery), as the clinician declares."""
        if now_ms is not None:
            self.replaced_at_ms = now_ms
        self.volume_nl = volume_nl
        self.unknown_left_nl = 0
        self.segments = deque([[volume_nl, 0]]) if volume_nl else deque()

    @property
    def untouched_empty(self) -> bool:
        return self.unknown_left_nl == 0 and len(self.segments) == 1 and self.segments[0][1] == 0

    # ------------------------------------------------------------ strokes

    def push(self, nl: int, concentration_ng_per_ml: int) -> int:
        """Push nl in at the reservoir's concentration; return the fg that left the tip."""
        self.unknown_left_nl = max(0, self.unknown_left_nl - nl)
        if not self.segments:
            return nl * concentration_ng_per_ml
        last = self.segments[-1]
        if last[1] == concentration_ng_per_ml:
            last[0] += nl
        else:
            self.segments.append([nl, concentration_ng_per_ml])
        out = 0
        need = nl
        while need:
            seg = self.segments[0]
            take = min(need, seg[0])
            out += take * seg[1]
            seg[0] -= take
            need -= take
            if seg[0] == 0:
                self.segments.popleft()
        return out

    def segments_tip_first(self) -> tuple[tuple[int, int], ...]:
        """What the catheter holds, as frozen facts for the guard."""
        return tuple((nl, conc) for nl, conc in self.segments)

    @property
    def tip_concentration(self) -> int:
        return self.segments[0][1] if self.segments else 0

    @property
    def bridging(self) -> bool:
        return len(self.segments) > 1

    # ------------------------------------------------------------ NVM

    def to_data(self) -> list:
        return [self.volume_nl, self.unknown_left_nl, [list(s) for s in self.segments], self.replaced_at_ms]

    @staticmethod
    def from_data(data: list) -> Catheter:
        c = Catheter()
        if data and isinstance(data[0], list):  # an NVM written before the catheter had a state
            c.segments = deque(list(s) for s in data)
            c.volume_nl = c.unknown_left_nl = sum(s[0] for s in data)
            return c
        c.volume_nl, c.unknown_left_nl, segs, *rest = data
        c.replaced_at_ms = rest[0] if rest else None
        c.segments = deque(list(s) for s in segs)
        return c
