"""The pump's own signing counter never repeats or goes back, across resets (SR-058).

Answers and events are signed under the pump key with a counter a host checks events
by (each above the last it saw). Writing the counter to NVM for every frame would wear
it out, so counters are reserved a block at a time: NVM holds the top of the block in
use, and after a reset signing goes on above it. A reset wastes at most one block.
"""

from __future__ import annotations

BLOCK = 1 << 16  # a u64 counter allows 2**48 resets at one block each


def reservation(counter: int, reserved: int) -> int | None:
    """SR-058: the new top of the reserved block that must be in NVM before a frame
    signed with `counter` goes out; None when `reserved` already covers it."""
    if counter <= reserved:
        return None
    return counter + BLOCK - 1
