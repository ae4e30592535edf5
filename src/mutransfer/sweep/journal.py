"""The journal file: Optuna's append-only log of a sweep, made safe against failed writes.

Every change to a study is one JSON line appended to the journal. A write cut short (disk full,
a file-size limit, a quota) leaves a *torn* line without its newline; Optuna skips a torn last
line when reading, but the next append lands on the same line, and from then on every read of
the journal fails with ``JSONDecodeError`` — finished trials recoverable only by hand.

Here:

- ``JournalBackend.append_logs`` undoes its own failed write (truncates the file back to where
  the write began, which needs no free space) and raises ``StorageWriteError``, so nothing
  claims "saved" for a record that is not there; before appending it sets aside any torn tail
  left by another process.
- ``repair_journal`` (run when a sweep, report or transfer opens the journal) keeps every
  complete record, moves the torn bytes to a side file ``<journal>.torn-<time>``, and says so
  in one line. A journal damaged by an older version (a torn line followed by more records)
  is repaired too: the record glued to the torn bytes is recovered from the line's end.

Both run under the journal's lock (``FlockLock``), like Optuna's own appends.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock  # the lock interface

from .errors import SweepError

RECORD_START = b'{"op_code":'
"""How every Optuna journal record begins (``json.dumps`` of a dict whose first key is it)."""


class StorageWriteError(SweepError):
    """A record could not be written to the sweep's storage (disk full, file-size limit)."""


class FlockLock(BaseJournalFileLock):
    """An exclusive ``flock`` on a side file; one holder at a time, across processes and
    threads (each acquisition opens its own descriptor).

    Optuna's default lock is a lock *file* (a symlink); a worker killed with ``kill -9`` while it
    holds it leaves it behind, and every other worker then waits for its grace period — or, with
    a relative journal path, forever (the stale-lock check follows the link, which dangles, and
    never fires). An ``flock`` is released by the kernel when its process dies.
    """

    def __init__(self, lock_path: Path) -> None:
        self._path = str(lock_path)
        self._guard = threading.Lock()
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        self._guard.acquire()
        try:
            fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o644)
        except BaseException:
            self._guard.release()
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            self._guard.release()
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        import fcntl

        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self._guard.release()


def journal_lock(path: Path) -> BaseJournalFileLock:
    """The lock guarding a journal: ``flock`` where the OS has it (see ``FlockLock``)."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # Windows
        from optuna.storages.journal import JournalFileOpenLock

        return JournalFileOpenLock(str(path))
    return FlockLock(path.with_name(path.name + ".flock"))


class JournalBackend(JournalFileBackend):
    """Optuna's journal file backend whose appends never leave a torn line behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = journal_lock(path)
        super().__init__(str(path), lock_obj=self.lock)

    def append_logs(self, logs: list[dict[str, object]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        self.lock.acquire()
        try:
            _set_aside_torn_tail(self.path)
            start = self.path.stat().st_size if self.path.exists() else 0
            try:
                with open(self.path, "ab") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                _truncate(self.path, start)
                raise StorageWriteError(
                    f"could not write to the sweep's journal {self.path}: {exc.strerror or exc} "
                    "(out of disk space, or a file-size limit). The record was not written and "
                    "nothing half-written is left: every trial finished before it is kept. Free "
                    "space and run the same command to resume."
                ) from exc
        finally:
            self.lock.release()


def _truncate(path: Path, size: int) -> None:
    with contextlib.suppress(OSError):  # then the next append or open sets the bytes aside
        os.truncate(path, size)


def _set_aside_torn_tail(path: Path) -> int:
    """Move the bytes after the last newline to a side file; returns how many (lock held)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # find the last newline: read backwards in blocks
        end = size
        block = 1 << 16
        cut = 0
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            index = chunk.rfind(b"\n")
            if index >= 0:
                cut = start + index + 1
                break
            end = start
        fh.seek(cut)
        torn = fh.read()
    _write_side_file(path, torn)
    os.truncate(path, cut)
    return len(torn)


def _write_side_file(path: Path, data: bytes) -> Path:
    side = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    with open(side, "ab") as fh:
        fh.write(data)
    return side


def repair_journal(path: Path) -> str | None:
    """Make a damaged journal readable again; returns one line saying what was done, or None.

    Keeps every complete record. A torn tail is moved to a side file. A torn line in the middle
    (an append that landed after a torn tail, by older versions) is split: its last complete
    record is kept, the torn bytes before it go to the side file. Holds the journal's lock.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = journal_lock(path)
    lock.acquire()
    try:
        return _repair_locked(path)
    finally:
        lock.release()


def _repair_locked(path: Path) -> str | None:
    tail = _set_aside_torn_tail(path)
    with open(path, "rb") as fh:
        lines = fh.readlines()
    kept: list[bytes] = []
    torn: list[bytes] = []
    recovered = 0
    for line in lines:
        if _is_record(line):
            kept.append(line)
            continue
        start = line.rfind(RECORD_START)
        if start > 0 and _is_record(line[start:]):
            kept.append(line[start:])
            torn.append(line[:start] + b"\n")
            recovered += 1
        else:
            torn.append(line)
    if torn:
        side = _write_side_file(path, b"".join(torn))
        tmp = path.with_name(path.name + ".repairing")
        with open(tmp, "wb") as fh:
            fh.writelines(kept)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        side = None
    if not tail and not torn:
        return None
    parts = []
    if tail:
        parts.append(f"a torn last record ({tail} bytes)")
    if torn:
        parts.append(
            f"{len(torn)} damaged line(s)"
            + (f", recovering {recovered} record(s) glued to them" if recovered else "")
        )
    where = side or path.with_name(path.name + ".torn-*")
    return (
        f"repaired the sweep journal {path}: set aside {' and '.join(parts)} "
        f"(a write cut short, e.g. by a full disk) in {where}; all {len(kept)} complete "
        "records are kept"
    )


def _is_record(line: bytes) -> bool:
    if not line.endswith(b"\n") or not line.startswith(RECORD_START):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
