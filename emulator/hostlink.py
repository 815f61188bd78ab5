"""The host link's endpoints: the pty, and a Unix socket that any number of host programs
attach to at once.

Client 0 is the pty: point to point, one program at a time, as a real serial line (two
readers on one pty steal each other's bytes). Every connection to `host.sock` in the
state directory is a client of its own; emulator/rig.py sends each answer to the client
that asked and events to every client. The frames are the same on both.

Memory is bounded whatever a client does: the pty's output is the kernel's buffer (what
does not fit is dropped, as a line drops it), and each socket client has an output queue
of at most OUT_LIMIT_BYTES: a client that never reads loses its oldest unread frames,
whole, counted and reported on stderr. At most MAX_CLIENTS connections are served.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PTY = 0
SOCKET_NAME = "host.sock"
OUT_LIMIT_BYTES = 256 * 1024  # per socket client, on top of the kernel's socket buffer
MAX_CLIENTS = 64
# sun_path holds 108 bytes; a longer path is reached through the directory's fd.
SUN_PATH_MAX = 100


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """A path to `path` that fits a Unix socket address: itself, or (for a long one) the
    same name through /proc/self/fd and an open descriptor of its directory (Linux)."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{dfd}/{path.name}"
    finally:
        os.close(dfd)


def connect(path: str | Path) -> socket.socket:
    """A connection to an emulator's host socket (OSError if there is none)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with short_path(Path(path)) as p:
            s.connect(p)
    except OSError:
        s.close()
        raise
    return s


@dataclass(eq=False)
class SocketClient:
    cid: int
    sock: socket.socket
    out: deque[bytes] = field(default_factory=deque)  # whole frames; the head may be part-sent
    out_bytes: int = 0
    head_started: bool = False  # the head frame is partly sent: it cannot be dropped
    dropped_frames: int = 0


class HostEndpoints:
    """The pty master and the listening socket, and the clients on it. The server's select
    loop asks which fds to watch and hands back the ready ones."""

    def __init__(self, pty_master: int, socket_path: Path | None, report: Callable[[str], None]) -> None:
        self.pty = pty_master
        self.report = report
        self.pty_dropped_bytes = 0
        self.clients: dict[int, SocketClient] = {}  # by fd
        self._gone: list[int] = []  # client ids closed since the server last asked
        self._next_cid = 1
        self.socket_path = socket_path
        self.listener: socket.socket | None = None
        if socket_path is not None:
            try:
                self.listener = self._listen(socket_path)
            except OSError as e:
                # The pty still serves: one program at a time rather than none.
                self.socket_path = None
                report(f"no host socket ({socket_path}: {e.strerror or e}); the host link is on the pty only")

    @staticmethod
    def _listen(path: Path) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a dead emulator's (we hold the state directory's lock)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with short_path(path) as p:
                listener.bind(p)
            os.chmod(path, 0o600)  # the keys guard the pump; this guards the line
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        return listener

    # ------------------------------------------------------------ select

    def read_fds(self) -> list[int]:
        fds = [self.pty, *self.clients]
        if self.listener is not None:
            fds.append(self.listener.fileno())
        return fds

    def write_fds(self) -> list[int]:
        return [fd for fd, c in self.clients.items() if c.out]

    def readable(self, fd: int) -> tuple[int, bytes] | None:
        """(client, bytes) read from a ready fd, or None (a new connection, a client gone:
        see `gone`)."""
        if fd == self.pty:
            try:
                return PTY, os.read(fd, 65536)
            except (BlockingIOError, OSError):  # EIO cannot happen while the slave is held
                return None
        if self.listener is not None and fd == self.listener.fileno():
            self._accept()
            return None
        c = self.clients.get(fd)
        if c is None:
            return None
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self._close(c)
            return None
        return c.cid, data

    def writable(self, fd: int) -> None:
        c = self.clients.get(fd)
        if c is not None:
            self._drain(c)

    # ------------------------------------------------------------ clients

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, OSError):
            return
        if len(self.clients) >= MAX_CLIENTS:
            self.report(f"host socket: {MAX_CLIENTS} clients already attached; refused another")
            sock.close()
            return
        sock.setblocking(False)
        c = SocketClient(self._next_cid, sock)
        self._next_cid += 1
        self.clients[sock.fileno()] = c

    def _close(self, c: SocketClient) -> None:
        self.clients.pop(c.sock.fileno(), None)
        if c.dropped_frames:
            self.report(f"host client {c.cid} detached; {c.dropped_frames} frames it never read were dropped")
        c.sock.close()
        self._gone.append(c.cid)

    def take_gone(self) -> list[int]:
        """Clients closed since the last call (the rig forgets their half-frames)."""
        gone, self._gone = self._gone, []
        return gone

    def close(self) -> None:
        for c in list(self.clients.values()):
            self._close(c)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            if self.socket_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()

    # ------------------------------------------------------------ output

    def send(self, data: bytes, client: int | None) -> None:
        """Frames for one client (its id), or for every client (None)."""
        if client is None or client == PTY:
            self._pty_write(data)
        if client is None:
            for c in list(self.clients.values()):
                self._queue(c, data)
        elif client != PTY:
            for c in self.clients.values():
                if c.cid == client:
                    self._queue(c, data)
                    break

    def _pty_write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.pty, view) :]
            except BlockingIOError:
                self.pty_dropped_bytes += len(view)  # nobody reading the port: the line drops it
                return
            except OSError:
                return

    def _queue(self, c: SocketClient, data: bytes) -> None:
        c.out.append(data)
        c.out_bytes += len(data)
        first = 1 if c.head_started else 0
        while c.out_bytes > OUT_LIMIT_BYTES and len(c.out) > first + 1:
            old = c.out[first]
            del c.out[first]
            c.out_bytes -= len(old)
            if not c.dropped_frames:
                self.report(f"host client {c.cid} is not reading: dropping its oldest unread frames")
            c.dropped_frames += 1
        self._drain(c)

    def _drain(self, c: SocketClient) -> None:
        while c.out:
            head = c.out[0]
            try:
                n = c.sock.send(head)
            except BlockingIOError:
                return
            except OSError:
                self._close(c)
                return
            c.out_bytes -= n
            if n < len(head):
                c.out[0] = head[n:]
                c.head_started = True
                return
            c.out.popleft()
            c.head_started = False

    def dropped(self) -> dict[str, int]:
        return {
            "pty_bytes": self.pty_dropped_bytes,
            "socket_frames": sum(c.dropped_frames for c in self.clients.values()),
        }
