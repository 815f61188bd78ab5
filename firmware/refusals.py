"""Refusals and authentication failures on their way into the event log: each kind within
its budget of entries, the rest counted and logged as one summary (SR-056,
rules/refusal_log.py).

Therapy records (programs, refills, boluses, alarms, state changes, deliveries) go
straight to the log (outbox.record); only the noise a sender can make at will comes
through here. The counts waiting for budget are held in RAM, seven at most: a reset loses
those of the last interval, never an entry already logged. A count costs no NVM write;
only the entries that reach the log do.
"""

from __future__ import annotations

from protocol.codes import LogEvent

from .clock import Clock
from .config import FirmwareConfig
from .outbox import Outbox
from .rules import refusal_log
from .rules.budget import full
from .rules.refusal_log import KindLog

AUTH_EVENTS = (LogEvent.AUTH_FAILED, LogEvent.REPLAY_REJECTED)
REFUSAL_EVENTS = (LogEvent.NOT_PERMITTED, LogEvent.COMMAND_REFUSED, LogEvent.PROGRAM_REFUSED, LogEvent.BOLUS_REQUEST)


class RefusalLog:
    def __init__(self, clock: Clock, config: FirmwareConfig, outbox: Outbox) -> None:
        self.clock = clock
        self.config = config
        self.outbox = outbox
        # By kind: (the summary event, its arg0: the key id bucket or the event counted).
        self.kinds: dict[tuple[LogEvent, int], KindLog] = {}

    def auth_failure(self, key_bucket: int, event: LogEvent, key_id: int, msg_type: int) -> None:
        """A frame that failed authentication: AUTH_FAILED or REPLAY_REJECTED, counted per
        key id bucket (a key the pump holds, or 0 for the rest: auth.OTHER_KEYS)."""
        assert event in AUTH_EVENTS
        self._note((LogEvent.AUTH_FAILURES_SUMMARY, key_bucket), event, key_id, msg_type)

    def refused(self, event: LogEvent, arg0: int, arg1: int) -> None:
        """An authentic request refused (a denied bolus request included)."""
        assert event in REFUSAL_EVENTS
        self._note((LogEvent.REFUSALS_SUMMARY, int(event)), event, arg0, arg1)

    def _note(self, kind: tuple[LogEvent, int], event: LogEvent, arg0: int, arg1: int) -> None:
        cfg, now = self.config, self.clock.now_ms
        k = self.kinds.get(kind) or KindLog(full(cfg.refusal_log_burst, now))
        v = refusal_log.log_refusal(k, now, cfg.refusal_log_burst, cfg.refusal_log_every_ms)
        self.kinds[kind] = v.kind
        if v.summary:
            self.outbox.record(kind[0], kind[1], v.summary)
        if v.one_by_one:
            self.outbox.record(event, arg0, arg1)

    def service(self) -> int | None:
        """Log the counts whose kind has budget again; when the next one can be (None: no
        count is waiting). Called at every wake-up, so a count is logged when its time
        comes even if that kind is never refused again."""
        cfg, now = self.config, self.clock.now_ms
        due = None
        for kind, k in self.kinds.items():
            if not k.unlogged:
                continue
            k, count = refusal_log.summary_due(k, now, cfg.refusal_log_burst, cfg.refusal_log_every_ms)
            self.kinds[kind] = k
            if count:
                self.outbox.record(kind[0], kind[1], count)
            at = refusal_log.summary_at_ms(k, cfg.refusal_log_burst, cfg.refusal_log_every_ms)
            if at is not None and (due is None or at < due):
                due = at
        return due
