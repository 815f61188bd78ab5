"""Several host programs on one emulator, and its memory under a flood (issue 13, items 4
and 5): the pty and any number of connections to the state directory's `host.sock`; each
answer goes to its sender, events go to everyone; a client that never reads costs the
emulator a bounded amount of memory, never more.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
import tty
from pathlib import Path

import pytest

from emulator.clock import Scheduler
from emulator.hostlink import OUT_LIMIT_BYTES, SOCKET_NAME, HostEndpoints, connect
from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import MessageFamily, Role, TherapyState
from protocol.framing import wrap_body
from protocol.messages import (
    HOST_LINK_TYPES,
    RefillBegin,
    SimGroundTruth,
    SimGroundTruthAck,
    SimSetSpeedAck,
    Status,
    StatusAck,
    TherapyStateChanged,
)
from protocol.schema import family_of
from tests.harness import PYTHON, REPO, Procs, program_message, write_model

REQUESTS = 150  # per client in the three-client test


@pytest.fixture
def procs(tmp_path):
    with Procs(tmp_path) as p:
        yield p


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RawClient:
    """A host program at the byte level: sends signed frames, decodes what comes back and
    keeps all of it, so a test sees every frame routed to it (the Client library would
    hide a stray answer)."""

    def __init__(self, fd: int, write, close) -> None:
        self.fd = fd
        self.write = write
        self._close = close
        self.rx = codec.MessageDecoder(HOST_LINK_TYPES)
        self.responses: list[tuple[int, object]] = []  # (seq, message)
        self.events: list[object] = []

    @classmethod
    def on_socket(cls, path: Path) -> RawClient:
        s = connect(path)
        return cls(s.fileno(), s.sendall, s.close)

    @classmethod
    def on_pty(cls, path: str) -> RawClient:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        return cls(fd, write, lambda: os.close(fd))

    def send(self, msg, seq: int, signer: FrameSigner) -> None:
        self.write(codec.encode(msg, seq, signer))

    def pump(self, wait_s: float) -> None:
        if not select.select([self.fd], [], [], wait_s)[0]:
            return
        data = os.read(self.fd, 65536)
        for item in self.rx.feed(data):
            if isinstance(item, codec.Received):
                if family_of(item.frame.msg_type) is MessageFamily.HOST_EVENT:
                    self.events.append(item.message)
                else:
                    self.responses.append((item.frame.seq, item.message))

    def wait_responses(self, n: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.responses) < n and time.monotonic() < deadline:
            self.pump(0.05)

    def close(self) -> None:
        self._close()


def signer(keys, role: Role) -> FrameSigner:
    return FrameSigner(role, keys[role], counter=time.time_ns() // 1000)


def test_three_host_clients_at_once_each_answer_reaches_its_sender_and_events_reach_all(procs, tmp_path):
    """The pty and two socket connections send requests at the same time, all with the
    same sequence numbers (so matching by seq could not hide a misrouted answer): each
    gets exactly its own answers, of its own request's type, and nothing else. Before,
    only the pty existed, and two programs on it lost 211 of 600 answers to each other."""
    emu = procs.emulator(split=False, firmware=True, model=write_model(tmp_path, stroke_error_sd_ppm=0))
    sd = emu.state_dir
    keys = emu.keys()
    clients = {
        "pty": (RawClient.on_pty(emu.host), SimGroundTruth(tones_from=0), SimGroundTruthAck, Role.SIM),
        "socket-1": (RawClient.on_socket(sd / SOCKET_NAME), Status(), StatusAck, Role.CLINICIAN),
        "socket-2": (RawClient.on_socket(sd / SOCKET_NAME), Status(), StatusAck, Role.PATIENT),
    }
    try:

        def storm(name: str) -> None:
            c, msg, _, role = clients[name]
            s = signer(keys, role)
            for seq in range(1, REQUESTS + 1):
                c.send(msg, seq, s)
                c.pump(0)

        threads = [threading.Thread(target=storm, args=(n,)) for n in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for name, (c, _, ack, _) in clients.items():
            c.wait_responses(REQUESTS)
            c.pump(0.2)  # anything more that was (wrongly) on its way
            assert sorted(seq for seq, _ in c.responses) == list(range(1, REQUESTS + 1)), name
            assert {type(m) for _, m in c.responses} == {ack}, name
            c.events.clear()  # (the pty holds the boot's state change from before it was opened)

        # An event goes to every client: entering the refill state is one.
        socket1 = clients["socket-1"][0]
        s = signer(keys, Role.CLINICIAN)
        socket1.send(program_message(7), 1000, s)
        socket1.send(RefillBegin(command_id=8), 1001, s)
        socket1.wait_responses(REQUESTS + 2)
        for name, (c, *_) in clients.items():
            deadline = time.monotonic() + 10
            while not c.events and time.monotonic() < deadline:
                c.pump(0.05)
            assert [(type(e), e.new_state) for e in c.events] == [(TherapyStateChanged, TherapyState.REFILL)], name
        assert [seq for seq, _ in socket1.responses[REQUESTS:]] == [1000, 1001]
        assert len(clients["socket-2"][0].responses) == REQUESTS and len(clients["pty"][0].responses) == REQUESTS
    finally:
        for c, *_ in clients.values():
            c.close()


def signed_status(keys, role: Role, n: int) -> list[bytes]:
    """n STATUS requests, each fresh (a replayed one is refused before the firmware does
    its work, and answered only within the key id's NAK budget)."""
    s = signer(keys, role)
    return [codec.encode(Status(), i & 0xFFFF, s) for i in range(1, n + 1)]


def served_and_bounded(emu, keys, rss_before_kib: int, during: str) -> None:
    """Another program, on the socket, is still answered at once; and the emulator has
    grown by less than the stated bound (docs/performance.md)."""
    other = RawClient.on_socket(emu.state_dir / SOCKET_NAME)
    other.send(Status(), 1, signer(keys, Role.PATIENT))
    other.wait_responses(1, 30)
    assert [type(m) for _, m in other.responses] == [StatusAck]
    other.close()
    grown = rss_kib(emu.proc.pid) - rss_before_kib
    assert grown < 8 * 1024, f"the emulator grew {grown} KiB {during}"


def test_a_pty_client_that_writes_and_never_reads_costs_the_emulator_bounded_memory(procs, tmp_path):
    """100,000 STATUS requests on the pty, no answer read. Before, every request left a
    cancelled wake timer in the emulator's queue (time stood still in lockstep): its
    memory grew about 25 MB over this flood and was never released."""
    emu = procs.emulator(split=False, firmware=True, model=write_model(tmp_path))
    keys = emu.keys()
    frames = signed_status(keys, Role.CLINICIAN, 100_000)
    before = rss_kib(emu.proc.pid)
    pty = RawClient.on_pty(emu.host)
    try:
        for f in frames:
            pty.write(f)
        served_and_bounded(emu, keys, before, "over a 100,000-frame flood")
    finally:
        pty.close()


def test_a_socket_client_that_never_reads_loses_its_oldest_answers_not_the_emulators_memory(procs, tmp_path):
    emu = procs.emulator(split=False, firmware=True, model=write_model(tmp_path))
    keys = emu.keys()
    frames = signed_status(keys, Role.CLINICIAN, 60_000)  # some 5 MB of answers, never read
    before = rss_kib(emu.proc.pid)
    sock = connect(emu.state_dir / SOCKET_NAME)
    try:
        for f in frames:
            sock.sendall(f)
        served_and_bounded(emu, keys, before, "holding a non-reader's answers")
    finally:
        sock.close()
    deadline = time.monotonic() + 10
    while "frames it never read were dropped" not in emu.stderr and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "is not reading: dropping its oldest unread frames" in emu.stderr
    assert "frames it never read were dropped" in emu.stderr


def test_host_endpoints_drop_a_non_readers_oldest_whole_frames_and_keep_the_newest(tmp_path):
    """The queue of a client that does not read: bounded, frames dropped whole and oldest
    first, so what the client reads when it wakes up decodes cleanly and ends with the
    newest frame."""
    master, slave = os.openpty()
    reports: list[str] = []
    ends = HostEndpoints(master, tmp_path / SOCKET_NAME, reports.append)
    client = connect(tmp_path / SOCKET_NAME)
    try:
        ends.readable(ends.listener.fileno())  # accept it
        (fd,) = ends.clients
        cid = ends.clients[fd].cid
        frames = [wrap_body(codec.encode_to_body(SimSetSpeedAck(speed_milli=i), i & 0xFFFF)) for i in range(20_000)]
        for f in frames:
            ends.send(f, cid)
        c = ends.clients[fd]
        assert c.out_bytes <= OUT_LIMIT_BYTES + len(frames[0])
        assert c.dropped_frames > 0 and reports == [
            f"host client {cid} is not reading: dropping its oldest unread frames"
        ]
        got: list[int] = []
        broken = 0
        rx = codec.MessageDecoder(HOST_LINK_TYPES)
        client.setblocking(False)
        while True:
            ends.writable(fd)
            try:
                data = client.recv(65536)
            except BlockingIOError:
                if not ends.clients[fd].out:
                    break
                continue
            for item in rx.feed(data):
                if isinstance(item, codec.Received):
                    got.append(item.message.speed_milli)
                else:
                    broken += 1
        assert broken == 0 and got[-1] == len(frames) - 1 and got == sorted(got)
        assert len(got) + c.dropped_frames == len(frames)
    finally:
        client.close()
        ends.close()
        os.close(slave)
    assert not (tmp_path / SOCKET_NAME).exists()


def test_a_host_socket_that_cannot_be_made_leaves_the_pty_serving_and_says_so(tmp_path):
    master, slave = os.openpty()
    tty.setraw(slave)
    reports: list[str] = []
    ends = HostEndpoints(master, tmp_path / "no-such-dir" / SOCKET_NAME, reports.append)
    try:
        assert ends.listener is None and ends.read_fds() == [master]
        assert len(reports) == 1 and "the host link is on the pty only" in reports[0]
        ends.send(b"\x00frame\x00", None)  # events still reach the pty
        assert os.read(slave, 100) == b"\x00frame\x00"
    finally:
        ends.close()
        os.close(slave)
        os.close(master)


def test_the_scheduler_holds_the_timers_pending_not_every_one_ever_cancelled():
    """Each SLEEP_UNTIL replaces the wake timer; with time standing still the cancelled
    ones used to stay queued until their due time, without bound."""
    sched = Scheduler()
    live = sched.at(10_000, lambda: None)
    t = sched.at(5_000, lambda: None)
    for i in range(100_000):
        t.cancel()
        t = sched.at(5_000 + i % 7, lambda: None)
    assert sched.queued() < 1_000
    assert sched.pending() == 2
    assert sched.next_due_ms() == t.at_ms
    assert sched.run_next(20_000) and sched.run_next(20_000) and not sched.run_next(20_000)
    assert not live.cancelled


def test_thecal_events_follow_json_runs_beside_ordinary_commands(procs, tmp_path):
    """The first user of several clients: a follower prints each event as a JSON line
    while the CLI programs and refills the pump through the same emulator."""
    emu = procs.emulator(split=False, firmware=True, model=write_model(tmp_path))
    sd = str(emu.state_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    follower = subprocess.Popen(
        [PYTHON, "-m", "tools.cli", "--state-dir", sd, "events", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        sock = emu.state_dir / SOCKET_NAME
        time.sleep(0.5)  # (the follower connects; an event before that is not its)

        def cli(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [PYTHON, "-m", "tools.cli", "--state-dir", sd, *argv],
                capture_output=True,
                text=True,
                cwd=REPO,
                env=env,
                timeout=60,
            )

        assert sock.exists()
        assert cli("program", str(REPO / "examples" / "morphine.toml")).returncode == 0
        assert cli("refill", "--fill", "18 mL").returncode == 0
        assert cli("start").returncode == 0
        out = b""
        fd = follower.stdout.fileno()
        while out.count(b"\n") < 3 and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                out += os.read(fd, 65536)
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(e["event"], e["old_state"], e["new_state"]) for e in lines] == [
            ("therapy_state_changed", "stopped", "refill"),
            ("therapy_state_changed", "refill", "stopped"),
            ("therapy_state_changed", "stopped", "running"),
        ]
        assert all(isinstance(e["time_s"], int) for e in lines)
        assert follower.poll() is None  # still following
    finally:
        os.killpg(follower.pid, 9)
        follower.wait(10)
