"""One job at a time per output name: an exclusive lock on the job's files while it runs.

Two identical jobs share a stripe spool and output names; unguarded, the second deleted
the first's spool or assembled its half-finished stripes. A job holds `flock` locks on
`.NAME-DIGEST.lock` beside its spool and beside its outputs. The kernel drops a
lock when its holder dies, however it dies, so:
- a second live job is refused at once, with the holder's pid, host and start time;
- a killed job's successor takes the lock and keeps the stripes its spool holds;
- temporaries (`.NAME-DIGEST.tif.XXXX.partial.tif`) whose lock is free belong to a dead
  job and are swept; a live job's are never touched.
Locks are local-host facts: on a network file system shared by several hosts, flock may
not be honoured across hosts (give each host its own scratch and output directories).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path

from texprod.errors import JobFailure

# .NAME-DIGEST.tif.XXXXXXXX.partial.tif (and .proof.jpg, .thumb.jpg, .repeat.jpg)
TEMPORARY = re.compile(r"^\.(?P<stem>[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{12})"
                       r"\.(?:tif|proof\.jpg|thumb\.jpg|repeat\.jpg)\.[^.]+\.partial\.(?:tif|jpg)$")


class JobBusy(JobFailure):
    """Another live job holds the same outputs."""


def _lock_path(directory: Path, stem: str) -> Path:
    return directory / f".{stem}.lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on `path`, or None if a live process holds it.

    Holders unlink the file when they finish; a lock taken on an unlinked (stale) inode is
    let go and taken again on the current file."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class JobLock:
    """Exclusive locks on a job's output name in each of its directories (held in order)."""

    def __init__(self, stem: str, directories: list[Path]) -> None:
        self.stem = stem
        self.paths = sorted({_lock_path(Path(d), stem) for d in directories})
        self._fds: list[int] = []

    def acquire(self) -> JobLock:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": dt.datetime.now().isoformat(timespec="seconds")})
        try:
            for path in self.paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = _try_lock(path)
                for _ in range(20):  # a sweep holds a dead job's lock for a moment
                    if fd is not None:
                        break
                    time.sleep(0.05)
                    fd = _try_lock(path)
                if fd is None:
                    raise JobBusy(
                        f"output: another texprod job is making {self.stem} now ({_holder(path)}; "
                        f"lock {path}); wait for it to finish, or stop it and run this again "
                        "(a stopped job's canvas is resumed)")
                self._fds.append(fd)
                os.ftruncate(fd, 0)
                os.pwrite(fd, record.encode(), 0)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for path, fd in zip(self.paths, self._fds, strict=False):
            path.unlink(missing_ok=True)  # while still held: a waiter then sees a new inode
            os.close(fd)
        self._fds = []

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def sweep_dead_temporaries(directory: Path) -> list[Path]:
    """Remove the partial files of jobs that died (their lock is free); return them."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    by_stem: dict[str, list[Path]] = {}
    for name in names:
        match = TEMPORARY.match(name)
        if match:
            by_stem.setdefault(match["stem"], []).append(directory / name)
    removed = []
    for stem, paths in by_stem.items():
        lock = _lock_path(directory, stem)
        fd = _try_lock(lock)
        if fd is None:
            continue  # a live job: its temporaries are in use
        try:
            for path in paths:
                path.unlink(missing_ok=True)
                removed.append(path)
        finally:
            lock.unlink(missing_ok=True)
            os.close(fd)
    return removed
