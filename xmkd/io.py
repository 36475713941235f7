"""Small file helpers shared by every writer: atomic writes (temp file in the same folder, then rename); and the
architecture-only switch, under which building a recipe reads none of the files its config names."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO

from xmkd.errors import XmkdError

_ARCHITECTURE_ONLY: ContextVar[bool] = ContextVar("xmkd_architecture_only", default=False)


@contextmanager
def architecture_only() -> Iterator[None]:
    """Within this block, building a recipe reads no file that its config names: weight files (teacher checkpoints,
    ImageNet weights) are not loaded, so modules keep their initial weights, and parts derived from data (class
    weights, instance databases) take neutral values. `xmkd summary` counts parameters this way, before any run
    or dataset exists. Never use it to train."""
    token = _ARCHITECTURE_ONLY.set(True)
    try:
        yield
    finally:
        _ARCHITECTURE_ONLY.reset(token)


def is_architecture_only() -> bool:
    """Whether the caller runs inside `architecture_only()`."""
    return _ARCHITECTURE_ONLY.get()


def check_output(path: str | os.PathLike, folder: bool, what: str) -> Path:
    """Refuse an output path that cannot be written, before the work that would write it starts: a folder output
    (`folder=True`) must be a folder or not exist, a file output must not be a folder, and the nearest existing
    folder above must take a new file (probed with a temporary file, removed at once). Nothing is created.

    Raises XmkdError naming the path, what was expected and the system's reason (e.g. an existing file where a
    folder is wanted, a parent that is a file, a read-only or virtual file system such as /proc)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise XmkdError(f"{path}: exists and is not a folder; expected a folder (or a new path) for {what}")
    if not folder and path.is_dir():
        raise XmkdError(f"{path}: is a folder; expected a file path for {what}")
    anchor = path if folder and path.is_dir() else path.parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise XmkdError(f"{path}: cannot write {what} there: {anchor} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".xmkd-write-probe.", dir=anchor)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise XmkdError(f"{path}: cannot write {what} there: {anchor}: {err.strerror or err}") from None
    return path


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status, since 4.7); else
    set and restored at once (os.umask cannot be read any other way)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: Path) -> int:
    """The permission bits a plain `open(path, "w")` would leave: an existing file's own, else 0o666 less the
    umask. `mkstemp` creates 0o600 whatever the umask, which would hide every output from the user's group."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], fsync: bool = True) -> Path:
    """Call `write(f)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    A crash of the process at any point leaves either the old file or the new one, never a partial file.
    The file gets the mode a plain open() would give it (`new_file_mode`), not mkstemp's 0o600.
    `fsync=False` skips the flush to disk (bulk data that can be regenerated): the rename still keeps
    partial files invisible after a process crash, though not after a power loss.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
