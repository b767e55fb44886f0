"""Writing the agent's files safely: private keys 0600, state files not world-readable, and no
symbolic link ever followed when a file is created or replaced.

* ``write_private`` (keys): refuses an existing path unless ``overwrite``, and always refuses a
  symbolic link (a dangling link would otherwise get the key written to its target); writes a
  new file created ``O_EXCL | O_NOFOLLOW`` with mode 0600 beside the target, fsyncs it and
  renames it over the target, so a key is never readable by others, not even for a moment.
* ``write_state`` (status, twins, alarms, commissioning): the same rename dance with mode 0640.
* ``state_dir`` and ``state_db``: the data folder 0750 and SQLite files 0640 (SQLite gives its
  ``-wal`` and ``-shm`` files the database file's mode).
* ``private_umask``: a context in which files created by a library (asyncua's OPC UA key) come
  out 0600.

What it leaves to others: what goes into the files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

PRIVATE, STATE, STATE_DIR = 0o600, 0o640, 0o750


CONFIG_LIMIT = 4 * 1024 * 1024  # a config, point map, trust file or key larger than this


def read_small(path: Path, limit: int = CONFIG_LIMIT) -> bytes:
    """A configuration file's bytes: a regular file of at most ``limit`` bytes. Raises
    ``OSError`` with a reason for anything else -- ``/dev/zero``, a FIFO that would block, a
    folder -- so that reading a config can neither hang nor exhaust memory."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = os.read(fd, limit + 1)
        chunks = [data]
        while data and sum(map(len, chunks)) <= limit:
            data = os.read(fd, limit + 1)
            chunks.append(data)
        out = b"".join(chunks)
    finally:
        os.close(fd)
    if len(out) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // 1024} KiB", str(path))
    return out


def read_config_text(path: Path, limit: int = CONFIG_LIMIT) -> str:
    """``read_small`` decoded as UTF-8; raises ``ValueError`` naming the first bad byte."""
    data = read_small(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"not UTF-8 text (byte {err.start + 1}, line {line})") from None


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise FileExistsError(f"{path} is a symbolic link; refusing to write through it")


def _replace(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; never adds any
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # replaces a link itself, never its target
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """A private key: mode 0600, no link followed, no existing file replaced unless asked."""
    _refuse_link(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite a key (use --force)")
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, data, PRIVATE)


def write_state(path: Path, text: str) -> None:
    """A state file (JSON): mode 0640, replaced atomically, no link followed."""
    _refuse_link(path)
    _replace(path, text.encode(), STATE)


def state_dir(path: Path) -> Path:
    """The data folder, created 0750; an existing one loses its permissions for others."""
    path.mkdir(parents=True, exist_ok=True, mode=STATE_DIR)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o007:
        with contextlib.suppress(PermissionError):
            path.chmod(mode & ~0o007)
    return path


def state_db(path: Path) -> Path:
    """A SQLite database file, created 0640 before SQLite opens it (its -wal and -shm files
    take its mode); an existing one loses its permissions for others."""
    _refuse_link(path)
    state_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, STATE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o007:
            os.fchmod(fd, mode & ~0o007)
    finally:
        os.close(fd)
    return path


def open_state_db(path: Path, *setup: str) -> sqlite3.Connection:
    """A SQLite state database (``state_db``), autocommit, WAL, with ``setup`` statements run;
    raises ``sqlite3.Error`` or ``OSError`` (a full disk) and leaves nothing open then."""
    db = sqlite3.connect(state_db(path), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        for statement in setup:
            db.execute(statement)
    except sqlite3.Error:
        db.close()
        raise
    return db


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created inside are 0600 at most (for libraries that write keys themselves)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


SECRET_LIMIT = 4096


def read_secret(path: Path) -> bytes:
    """A secret (a meter password, a ciphering key): a regular file that only its owner may
    read (mode 0600 or 0400). Raises ``OSError`` with the reason otherwise; the secret itself
    never appears in a message."""
    data = read_small(path, SECRET_LIMIT)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise OSError(errno.EPERM, f"mode {mode:04o}, others may read it: chmod 600 it", str(path))
    return data
