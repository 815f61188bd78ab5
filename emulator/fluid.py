"""The fluid path: reservoir, catheter dead volume, occlusion and leaks; the ground truth.

Volumes are nL; drug is tracked as mass in fg (1e-6 ng) so that mixing on refill and the
old drug still in the catheter are exact integers. What leaves the catheter tip is what
the patient received: `delivered_nl` / `delivered_fg` are the test oracle.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

FG_PER_NG = 1_000_000
NL_PER_ML = 1_000_000


def fg_for(volume_nl: int, concentration_ng_per_ml: int) -> int:
    # ng/mL * nL = 1e-6 ng = 1 fg
    return volume_nl * concentration_ng_per_ml


@dataclass(frozen=True)
class StrokeResult:
    moved_nl: int  # left the reservoir
    delivered_nl: int  # left the catheter tip into the patient
    stalled: bool


class FluidPath:
    def __init__(
        self,
        capacity_nl: int,
        reservoir_nl: int,
        reservoir_fg: int,
        dead_volume_nl: int,
        catheter_fg: int,
        pa_per_nl: int,
        stall_pa: int,
        vent_nl_per_s: int,
    ) -> None:
        self.capacity_nl = capacity_nl
        self.reservoir_nl = reservoir_nl
        self.reservoir_fg = reservoir_fg
        # (volume nL, drug fg) segments, inlet on the right, tip on the left.
        self.catheter: deque[list[int]] = deque()
        if dead_volume_nl:
            self.catheter.append([dead_volume_nl, catheter_fg])
        self.pa_per_nl = pa_per_nl
        self.stall_pa = stall_pa
        self.vent_nl_per_s = vent_nl_per_s
        self.occluded = False
        self.leak_ppm = 0
        self.pending_nl = 0  # held behind an occlusion, raising the pressure
        self.pending_fg = 0
        self.delivered_nl = 0
        self.delivered_fg = 0
        self.leaked_nl = 0
        self.pocket_nl = 0  # refills that missed the reservoir
        self._vent_remainder = 0  # nL*ms not yet vented
        self._settled_ms = 0

    @property
    def pressure_pa(self) -> int:
        return self.pending_nl * self.pa_per_nl

    @property
    def concentration_ng_per_ml(self) -> int:
        if self.reservoir_nl == 0:
            return 0
        return self.reservoir_fg // self.reservoir_nl

    def settle(self, now_ms: int) -> None:
        """Vent pressure held behind a cleared occlusion up to now (linear, exact)."""
        elapsed = now_ms - self._settled_ms
        self._settled_ms = now_ms
        if self.occluded or self.pending_nl == 0 or elapsed <= 0:
            self._vent_remainder = 0
            return
        total = self.vent_nl_per_s * elapsed + self._vent_remainder
        vent_nl = min(self.pending_nl, total // 1000)
        self._vent_remainder = total - vent_nl * 1000 if vent_nl < self.pending_nl else 0
        vent_fg = self.pending_fg * vent_nl // self.pending_nl
        self.pending_nl -= vent_nl
        self.pending_fg -= vent_fg
        self.delivered_nl += vent_nl
        self.delivered_fg += vent_fg

    def vent_done_at(self, now_ms: int) -> int | None:
        """When the held volume will have vented (for the scheduler), or None."""
        if self.occluded or self.pending_nl == 0:
            return None
        need = self.pending_nl * 1000 - self._vent_remainder
        return now_ms + -(-need // self.vent_nl_per_s)

    def stroke(self, volume_nl: int) -> StrokeResult:
        """One stroke of `volume_nl` (already including the mechanism's error)."""
        if volume_nl > 0 and (self.pending_nl + volume_nl) * self.pa_per_nl > self.stall_pa:
            return StrokeResult(0, 0, stalled=True)
        v = min(volume_nl, self.reservoir_nl)
        if v <= 0:
            return StrokeResult(0, 0, stalled=False)
        fg_in = self.reservoir_fg * v // self.reservoir_nl
        self.reservoir_nl -= v
        self.reservoir_fg -= fg_in
        out_nl, out_fg = self._through_catheter(v, fg_in)
        if self.occluded:
            self.pending_nl += out_nl
            self.pending_fg += out_fg
            return StrokeResult(v, 0, stalled=False)
        leak_nl = out_nl * self.leak_ppm // 1_000_000
        leak_fg = out_fg * leak_nl // out_nl if out_nl else 0
        self.leaked_nl += leak_nl
        self.delivered_nl += out_nl - leak_nl
        self.delivered_fg += out_fg - leak_fg
        return StrokeResult(v, out_nl - leak_nl, stalled=False)

    def _through_catheter(self, v: int, fg: int) -> tuple[int, int]:
        if not self.catheter:
            return v, fg
        last = self.catheter[-1]
        if last[1] * v == fg * last[0]:
            # Same concentration as the last segment: merge, so a long run at one
            # concentration is one segment and the state stays small.
            last[0] += v
            last[1] += fg
        else:
            self.catheter.append([v, fg])
        out_nl = out_fg = 0
        need = v
        while need:
            seg = self.catheter[0]
            if seg[0] <= need:
                need -= seg[0]
                out_nl += seg[0]
                out_fg += seg[1]
                self.catheter.popleft()
            else:
                take_fg = seg[1] * need // seg[0]
                seg[0] -= need
                seg[1] -= take_fg
                out_nl += need
                out_fg += take_fg
                need = 0
        return out_nl, out_fg

    def refill(self, withdraw_nl: int, add_nl: int, concentration_ng_per_ml: int, into_pocket: bool) -> int:
        """Needle withdraws up to `withdraw_nl`, then injects `add_nl`. Returns withdrawn nL."""
        w = min(withdraw_nl, self.reservoir_nl)
        w_fg = self.reservoir_fg * w // self.reservoir_nl if self.reservoir_nl else 0
        self.reservoir_nl -= w
        self.reservoir_fg -= w_fg
        if into_pocket:
            self.pocket_nl += add_nl
        else:
            room = self.capacity_nl - self.reservoir_nl
            a = min(add_nl, room)
            self.pocket_nl += add_nl - a  # overfill spills into the pocket
            self.reservoir_nl += a
            self.reservoir_fg += fg_for(a, concentration_ng_per_ml)
        return w

    def replace_catheter(self, volume_nl: int) -> None:
        """A new catheter holding no drug (what fills it first is what the pump pushes)."""
        self.catheter = deque([[volume_nl, 0]]) if volume_nl else deque()
        self.pending_nl = self.pending_fg = 0  # (held in the old catheter, removed with it)

    def catheter_segments(self) -> list[list[int]]:
        return [list(s) for s in self.catheter]
