"""The controller's parts, wired together once: each owns its state, and they reach each
other only downward (engine -> guard -> rules; the supervisor over the engine, the guard
and the alarms). Handlers and the boot take this container; nothing takes the controller.

A reset throws every part away (RAM is gone, as on the real part) and makes a new set;
NVM (firmware/persist.py) is all that carries over.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codes import Role

from .alarms import AlarmSet
from .auth import Auth
from .clock import Clock
from .commands import Commands
from .config import FirmwareConfig
from .druglib import DrugLibrary
from .engine import Engine
from .eventlog import EventLog
from .guard import Guard
from .hardware import Hardware
from .outbox import Outbox
from .refusals import RefusalLog
from .supervisor import Supervisor


@dataclass
class Parts:
    config: FirmwareConfig
    drugs: DrugLibrary
    clock: Clock
    hardware: Hardware
    log: EventLog
    outbox: Outbox
    alarms: AlarmSet
    guard: Guard
    engine: Engine
    supervisor: Supervisor
    refusals: RefusalLog
    auth: Auth
    commands: Commands

    @staticmethod
    def new(keys: dict[Role, bytes], config: FirmwareConfig, drugs: DrugLibrary) -> Parts:
        clock = Clock()
        hardware = Hardware()
        log = EventLog(config.log_capacity)
        outbox = Outbox(clock, log)
        alarms = AlarmSet(config)
        guard = Guard(clock, config, hardware, outbox)
        engine = Engine(clock, config, hardware, outbox, guard)
        refusals = RefusalLog(clock, config, outbox)
        return Parts(
            config=config,
            drugs=drugs,
            clock=clock,
            hardware=hardware,
            log=log,
            outbox=outbox,
            alarms=alarms,
            guard=guard,
            engine=engine,
            supervisor=Supervisor(clock, outbox, alarms, engine, guard, drugs),
            refusals=refusals,
            auth=Auth(clock, config, outbox, refusals, keys),
            commands=Commands(outbox),
        )
