"""The journal: an append-only local file of settled records, the ledger's source of truth.

A record is appended (one `write()`) the moment its call settles, so it survives the process
being killed; `fsync` runs every `fsync_seconds`, so it also survives the machine going down
after that. The writer copies records from the journal to the database and, once everything in
the file is in the database, truncates it. Each process owns one journal file, held by an
exclusive `flock`; the files of a process that died are unlocked, and the next process to start
replays them. A journal whose file is deleted or replaced (its directory removed, say) still
reads through its open descriptor, so what it held can be rewritten to a new file.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PREFIX = "journal-"
_SUFFIX = ".jsonl"
# Records the database refused, kept for an operator to look at (not a journal: never replayed).
REJECTED_FILE = "rejected.jsonl"
# How much of a journal is read at once when it is copied to a new file: a journal left to grow
# through a long database outage must not be read into memory whole.
_COPY_CHUNK_BYTES = 1 << 20


class JournalFile:
    """One locked journal file: appends at its end, reads whole lines from an offset."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor = descriptor

    @classmethod
    def create(cls, directory: Path) -> JournalFile:
        """A new, locked journal file in `directory` (made if missing); `OSError` if it cannot."""
        made = not directory.is_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{_PREFIX}{uuid.uuid4().hex}{_SUFFIX}"
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The file's name must outlive a machine crash as its fsynced lines do, and so must
            # the directory's name if it was made just now (after being deleted, say).
            _sync_directory(directory)
            if made:
                _sync_directory(directory.parent)
        except OSError:
            os.close(descriptor)
            path.unlink(missing_ok=True)
            raise
        return cls(path, descriptor)

    @classmethod
    def claim(cls, path: Path) -> JournalFile | None:
        """Lock another process's journal, if that process is gone; None if it is alive."""
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        return cls(path, descriptor)

    def append(self, line: bytes) -> None:
        """Append one line; `OSError` (a full disk, say) if it could not be written whole."""
        written = os.write(self._descriptor, line)
        if written != len(line):
            # A short write leaves a torn line; cut it off again so the file stays whole.
            os.ftruncate(self._descriptor, os.fstat(self._descriptor).st_size - written)
            raise OSError(f"journal {self.path} took {written} of {len(line)} bytes")

    def size(self) -> int:
        return os.fstat(self._descriptor).st_size

    def read_lines(self, offset: int, max_lines: int, max_bytes: int = 4 << 20) -> list[bytes]:
        """Up to `max_lines` whole lines from `offset` (each with its newline)."""
        data = os.pread(self._descriptor, max_bytes, offset)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        return data[: end + 1].splitlines(keepends=True)[:max_lines]

    def successor(self, offset: int) -> JournalFile:
        """A new journal in this one's directory (made again if it is gone) holding this one's
        bytes from `offset`, fsynced; `OSError` if it cannot be made."""
        successor = JournalFile.create(self.path.parent)
        try:
            while chunk := os.pread(self._descriptor, _COPY_CHUNK_BYTES, offset):
                successor.append(chunk)
                offset += len(chunk)
            successor.sync()
        except OSError:
            successor.close(delete=True)
            raise
        return successor

    def in_place(self) -> bool:
        """Whether `path` still names this file: False once it, or its directory, was deleted,
        moved or replaced (what is appended then is lost with the process)."""
        try:
            named = os.stat(self.path)
        except OSError:  # gone, or a directory on the way is gone or no longer a directory
            return False
        held = os.fstat(self._descriptor)
        # While the descriptor is open its inode cannot be reused, so equal numbers are this file.
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def truncate(self) -> None:
        os.ftruncate(self._descriptor, 0)

    def sync(self) -> None:
        os.fsync(self._descriptor)

    def close(self, delete: bool) -> None:
        """Close (releasing the lock), deleting the file if asked and `path` still names it: a
        file put in its place is someone else's."""
        if delete and self.in_place():
            self.path.unlink(missing_ok=True)
        os.close(self._descriptor)


def set_aside(directory: Path, line: bytes) -> Path:
    """Append a refused record's line to the directory's rejected file, durably; its path."""
    directory.mkdir(parents=True, exist_ok=True)  # it may have been deleted while running
    path = directory / REJECTED_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line)  # one write of a whole line: processes may share the file
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return path


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def orphaned_journals(directory: Path, own: Path) -> Iterator[Path]:
    """Journal files other than `own`, oldest first (their owners may be alive or gone)."""
    if not directory.is_dir():
        return iter(())
    paths = [
        path for path in directory.glob(f"{_PREFIX}*{_SUFFIX}") if path != own and path.is_file()
    ]
    return iter(sorted(paths, key=lambda path: path.stat().st_mtime))


@contextmanager
def claimed(path: Path) -> Iterator[JournalFile | None]:
    """A dead process's journal, locked for the duration of the block (None if not claimable)."""
    journal = JournalFile.claim(path)
    try:
        yield journal
    finally:
        if journal is not None:
            journal.close(delete=journal.size() == 0)
