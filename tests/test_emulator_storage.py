"""Out of space, read-only (issue 13, item 3): a write the filesystem refuses never ends
the emulator mid-therapy.

In-process, always run: the Emulator object (scripted controller, lockstep driven by the
test) with its state directory's writer or its capture's writes failing as a full or
read-only filesystem fails them. While the condition holds the emulator says so once on
stderr, refuses every host request as BUSY naming it, the hardware refuses new motor
runs (ground truth: the strokes stop at the end of the run in progress), and the
checkpoint keeps what the hardware did; when a save succeeds again it says so and
everything resumes. The firmware's NVM file and a read-only start fail with one line.

On a real filesystem, where the machine allows it: `thecal emulator` in a mount
namespace of its own on a tiny tmpfs (unshare), filled up and freed from outside
through /proc/<pid>/root, remounted read-only, or too small to start on.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import emulator.capture as capture_module
from emulator.capture import read_capture
from emulator.journal import CHECKPOINT_FILE, Journal, load_state
from emulator.scripted import Action
from emulator.server import Emulator, EmulatorOptions
from emulator.state import StateDir
from firmware.board.filenvm import NVM_FILE, FileNvm, NvmFileError
from protocol import codec
from protocol.auth import FrameSigner
from protocol.codes import MessageFamily, NakReason, Role
from protocol.messages import HOST_LINK_TYPES, Message, Nak, SimGroundTruth, Status
from protocol.schema import family_of
from tests.harness import REPO, run
from tools import hil
from tools.client import Client, Refused, load_keys

FAULTS = {
    errno.ENOSPC: "No space left on device",
    errno.EDQUOT: "Disk quota exceeded",
    errno.EROFS: "Read-only file system",
    errno.EACCES: "Permission denied",
    errno.EIO: "Input/output error",
}


class Host:
    """An Emulator object run by the test: started as `thecal emulator` starts it, its
    host port replaced by signed frames in and answers out, time moved by the test."""

    def __init__(self, tmp_path: Path, actions, capture: bool = False) -> None:
        self.sd = tmp_path / "sd"
        opts = EmulatorOptions(
            state_dir=str(self.sd),
            controller="scripted",
            script=tuple(Action.from_dict(a) for a in actions),
            capture=str(tmp_path / "run.pcap") if capture else None,
        )
        self.emu = Emulator(opts, out=lambda line: None)
        self.emu.start()
        self.rig = self.emu.rig
        self.rig.host_send = lambda data, client: self._out(data)
        self.answers: dict[int, Message] = {}
        self.decoder = codec.MessageDecoder(HOST_LINK_TYPES)
        self.signers = {r: FrameSigner(r, k) for r, k in self.emu.keys.items()}
        self.seq = 0
        self.rig.boot()

    def _out(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, codec.Received) and family_of(item.frame.msg_type) is not MessageFamily.HOST_EVENT:
                self.answers[item.frame.seq] = item.message

    def request(self, msg: Message, role: Role = Role.SIM) -> Message:
        self.seq += 1
        self.rig.host_bytes(codec.encode(msg, self.seq, self.signers[role]))
        return self.answers.pop(self.seq)

    @property
    def strokes(self) -> int:
        return self.rig.hw.odometer


def refusing(code: int):
    def write(*args, **kwargs):
        raise OSError(code, FAULTS[code])

    return write


# Runs of 10 strokes 2 s apart, every 30 s from 1 s on.
RUNS = [run(t, 10, 2_000) for t in range(1_000, 300_000, 30_000)]


@pytest.mark.parametrize("code", sorted(FAULTS))
def test_a_state_directory_that_cannot_be_written_stops_new_runs_and_requests_then_resumes(
    tmp_path, capsys, monkeypatch, code
):
    h = Host(tmp_path, RUNS)
    h.rig.advance(9_000)  # half the first run made
    assert h.strokes == 5
    h.emu.save()
    writer = h.emu.state_dir.save_pump
    monkeypatch.setattr(h.emu.state_dir, "save_pump", refusing(code))
    h.emu.save()  # the periodic save
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "storage fault: cannot write" in err and str(h.sd / "pump.json") in err and FAULTS[code] in err
    assert errno.errorcode[code] in err and "refuses host requests" in err
    # Every host request is refused, sim-control too, naming the condition.
    for msg, role in ((SimGroundTruth(tones_from=0), Role.SIM), (Status(), Role.CLINICIAN)):
        nak = h.request(msg, role)
        assert isinstance(nak, Nak) and nak.reason is NakReason.BUSY, nak
        assert nak.detail.startswith("storage fault: cannot write pump.json") and FAULTS[code] in nak.detail
    # Time goes on (the test moves it: the host cannot): the run in progress ends at its
    # bound, no new run starts (runs were due at 31, 61 and 91 s).
    h.rig.advance(91_000)
    assert h.strokes == 10
    assert sum(e.what == "run_refused" for e in h.rig.hw.events) == 3
    h.emu.save()  # still failing: said once
    assert capsys.readouterr().err == ""
    # Nothing committed is lost: a kill now would restart from the checkpoint, which the
    # full disk cannot touch (preallocated), not from the pump.json of 9 s.
    sd = StateDir(h.sd)
    assert load_state(sd, Journal(h.sd / CHECKPOINT_FILE)) == h.rig.state()
    assert sd.load_pump()["time_ms"] == 9_000
    # Space again: the next save says so, and therapy resumes.
    monkeypatch.setattr(h.emu.state_dir, "save_pump", writer)
    h.emu.save()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "storage fault cleared" in err and str(h.sd / "pump.json") in err
    assert h.request(SimGroundTruth(tones_from=0)).strokes_total == 10
    h.rig.advance(40_000)  # the run at 121 s
    assert h.strokes == 20
    h.emu.stop()
    assert sd.load_pump()["odometer_strokes"] == 20


class FullDisk:
    """os for emulator/capture.py as a filling disk sees it: the first write of each
    attempt goes part-way, then ENOSPC (a torn record, unless it is cut back)."""

    def __init__(self) -> None:
        self.full = True

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        if not self.full:
            return os.write(fd, data)
        if len(data) > 100 and not getattr(self, "_once", False):
            self._once = True
            return os.write(fd, data[: len(data) // 3])
        self._once = False
        raise OSError(errno.ENOSPC, FAULTS[errno.ENOSPC])


def test_a_capture_that_cannot_be_written_is_a_storage_fault_and_loses_no_frame(tmp_path, capsys, monkeypatch):
    h = Host(tmp_path, RUNS, capture=True)
    h.rig.advance(10_000)
    disk = FullDisk()
    monkeypatch.setattr(capture_module, "os", disk)
    h.rig.advance(10_000)
    h.emu.save()
    err = capsys.readouterr().err
    assert "storage fault: cannot write" in err and "run.pcap" in err and "ENOSPC" in err
    nak = h.request(SimGroundTruth(tones_from=0))
    assert isinstance(nak, Nak) and nak.reason is NakReason.BUSY and "run.pcap" in nak.detail
    strokes = h.strokes
    h.rig.advance(60_000)
    assert h.strokes == strokes  # (the run in progress had ended at 11 s)
    disk.full = False
    h.emu.save()
    assert "storage fault cleared" in capsys.readouterr().err
    h.rig.advance(30_000)
    h.emu.stop()
    records = read_capture(tmp_path / "run.pcap")  # whole records only: the torn one was cut back
    assert len(records) == h.emu.capture.records and h.emu.capture.dropped == 0
    assert [r["sim_ms"] for r in records] == sorted(r["sim_ms"] for r in records)


def test_the_firmware_nvm_file_is_preallocated_and_a_refusal_is_one_clear_error(tmp_path, monkeypatch):
    nvm = FileNvm(tmp_path / NVM_FILE)
    st = os.stat(tmp_path / NVM_FILE)
    nvm.close()
    # Every block allocated at open: a write through the mapping cannot SIGBUS later.
    assert st.st_blocks * 512 >= st.st_size > 0
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(os, "posix_fallocate", refusing(errno.ENOSPC))
    with pytest.raises(NvmFileError) as e:
        FileNvm(tmp_path / "other" / NVM_FILE)  # (no such directory: the open fails)
    assert "cannot open the firmware's NVM file" in str(e.value) and "No such file" in str(e.value)
    with pytest.raises(NvmFileError) as e:
        FileNvm(tmp_path / "new.bin")
    assert str(e.value) == (
        f"cannot open the firmware's NVM file {tmp_path / 'new.bin'} (No space left on device): "
        "free space on its filesystem"
    )
    assert e.value.errno == errno.ENOSPC
    assert not (tmp_path / "new.bin").exists()  # a file of zeros would read as a firmware that has run
    import gc

    gc.collect()
    assert unraisable == []  # no traceback from FileNvm.__del__


def test_a_state_directory_refused_at_start_is_one_line_without_traceback(tmp_path, monkeypatch, capsys):
    """In-process, the directory's writer refusing (as a read-only filesystem refuses it):
    `thecal emulator` exits 2 with one line naming the directory, the error and what to do."""
    from tools import cli

    monkeypatch.setattr(StateDir, "save_pump", refusing(errno.EROFS))
    rc = cli.main(["emulator", "--state-dir", str(tmp_path / "sd"), "--controller", "scripted"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"thecal emulator: state directory {tmp_path / 'sd'}: cannot write pump.json")
    assert "Read-only file system" in err and "remount its filesystem read-write" in err
    assert not (tmp_path / "sd" / "port").exists()


# ---------------------------------------------------------------- a real tmpfs


def _namespaces_work() -> str | None:
    """None if `unshare --user --map-root-user --mount` can mount a tmpfs here, else why not."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare/nsenter not installed"
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && touch $d/x && mount -o remount,ro $d"
    try:
        r = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", probe],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    return None if r.returncode == 0 else f"no user+mount namespaces here: {r.stderr.decode(errors='replace')[:200]}"


_WHY_NOT = _namespaces_work()
needs_namespaces = pytest.mark.skipif(_WHY_NOT is not None, reason=f"real-filesystem test: {_WHY_NOT}")


def in_namespace(mnt: Path, size: str, script: str, log: Path) -> hil.ManagedProcess:
    """`script` (sh) in a user+mount namespace of its own with a tmpfs of `size` on mnt."""
    mnt.mkdir()
    body = f"mount -t tmpfs -o size={size} tmpfs {mnt} && {script}"
    argv = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", body]
    return hil.ManagedProcess(argv, log, REPO, stdout=subprocess.PIPE)


def emulator_cmd(state_dir: Path, *args: str) -> str:
    return " ".join([sys.executable, "-m", "tools.cli", "emulator", "--state-dir", str(state_dir), *args])


@needs_namespaces
def test_a_real_full_then_freed_filesystem_while_running(tmp_path):
    mnt = tmp_path / "mnt"
    sd = mnt / "state"
    cmd = emulator_cmd(sd, "--exit-on-stdin-eof", "--capture", str(mnt / "run.pcap"))
    # 8 MiB: the firmware's NVM (about 2.7 MB, allocated at start) and the rest fit.
    p = in_namespace(mnt, "8m", f"exec {cmd}", tmp_path / "emu.log")
    try:
        line = hil.read_line(p.proc.stdout.fileno(), 20.0).decode().split()
        assert line and line[0] == "READY", (line, p.stderr_text())
        inside = Path(f"/proc/{p.pid}/root") / str(mnt).lstrip("/")
        keys = load_keys(inside / "state" / "keys.json")
        with Client(line[1], keys, Role.CLINICIAN, timeout_s=10) as c:
            c.sim(SimGroundTruth(tones_from=0))
            filler = inside / "filler"
            with open(filler, "wb") as f:  # fill it to the last page
                try:
                    while True:
                        f.write(b"\xff" * 65536)
                        f.flush()
                except OSError as e:
                    assert e.errno == errno.ENOSPC
            deadline = time.monotonic() + 10
            while "storage fault: cannot write" not in p.stderr_text():
                assert time.monotonic() < deadline and p.alive, p.stderr_text()
                time.sleep(0.1)
            with pytest.raises(Refused) as e:
                c.sim(SimGroundTruth(tones_from=0))
            assert e.value.reason is NakReason.BUSY
            assert e.value.nak.detail.startswith("storage fault: cannot write pump.json (No space left on device)")
            filler.unlink()
            deadline = time.monotonic() + 10
            while "storage fault cleared" not in p.stderr_text():
                assert time.monotonic() < deadline and p.alive, p.stderr_text()
                time.sleep(0.1)
            gt = c.sim(SimGroundTruth(tones_from=0))
            assert gt.controller_alive
        assert p.stop() == 0
        err = p.stderr_text()
        assert "Traceback" not in err and err.count("storage fault:") == 1, err
    finally:
        p.kill_group()


@needs_namespaces
@pytest.mark.parametrize("how", ["read-only", "too small"])
def test_a_real_read_only_or_full_state_directory_at_start_is_one_line(tmp_path, how):
    mnt = tmp_path / "mnt"
    sd = mnt / "state"
    if how == "read-only":
        # A pump that has run here, then its filesystem read-only.
        script = (
            f"{emulator_cmd(sd, '--exit-on-stdin-eof')} </dev/null >/dev/null 2>&1; "
            f"mount -o remount,ro {mnt} && exec {emulator_cmd(sd)}"
        )
        size = "8m"
    else:
        script = f"exec {emulator_cmd(sd)}"
        size = "1m"  # less than the firmware's NVM
    p = in_namespace(mnt, size, script, tmp_path / "emu.log")
    try:
        rc = p.proc.wait(30)
    finally:
        p.kill_group()
    err = p.stderr_text()
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    if how == "read-only":
        assert f"state directory {sd}: cannot write lock (Read-only file system, EROFS)" in err, err
        assert "remount its filesystem read-write" in err
    else:
        assert f"cannot open the firmware's NVM file {sd / NVM_FILE} (No space left on device)" in err, err
        assert "free space" in err
