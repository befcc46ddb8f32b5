"""Files and directories appear only when complete: written under a temporary name beside
their destination, then renamed. Whether a directory can be made and written. And the one
sha256 of a file."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(dest: str | os.PathLike, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path in `dest`'s directory to write; on success it gets the normal
    file mode (mkstemp's is 0600) and is renamed to `dest`, on any failure it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_directory(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a new, private directory beside `dest` to fill. On success its modes become
    those of a plain mkdir (see `normal_modes`) and it is renamed to `dest`, unless the
    block put it in place itself (file by file into an existing `dest`, or racing another
    writer); on any failure it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        if tmp.exists():
            normal_modes(tmp)
            tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def existing_ancestor(path: str | os.PathLike) -> Path:
    """`path` itself when it exists, else its nearest ancestor that does."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def directory_problem(directory: str | os.PathLike) -> str | None:
    """Why `directory` cannot be made (if missing) and written by this user, or None."""
    existing = existing_ancestor(directory)
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def normal_modes(directory: str | os.PathLike) -> None:
    """Give a directory made by mkdtemp (0700) and its files the modes a plain mkdir and
    open() would (0777 / 0666 less the umask), so that a worker running as another user
    can read a checkpoint; call it before renaming the directory into place."""
    directory = Path(directory)
    mask = _umask()
    for path in directory.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    os.chmod(directory, 0o777 & ~mask)


def fsync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
