"""Durable file operations: atomic replace with fsync, and tidy removal. Blocking; call via a thread."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile


def fsync_dir(path: str) -> None:
    """Flush a directory entry change (create, rename, unlink) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMP_PREFIX = ".tessera-tmp-"
"""Prefix of the temporary files of atomic writes; leftovers of a crash are removed at start-up."""


def write_atomic(path: str, data: bytes, *, mode: int = 0o644, sync_dir: bool = True, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content, never a mix.

    A temporary file in the same directory is written and (``durable``) fsynced, renamed over
    ``path``, and (``durable`` and ``sync_dir``) the directory is fsynced so that the rename itself
    survives a power cut. Without ``durable`` the write is atomic for readers but may be lost or
    truncated by a power cut: only for files that can be rebuilt from a durable record.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable and sync_dir:
        fsync_dir(directory)


def remove_temp_files(directory: str) -> int:
    """Remove our own leftover temporary files in ``directory`` (a crash during an atomic write)."""
    removed = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(TEMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
                removed += 1
    return removed


def remove_file(path: str, *, durable: bool = True) -> bool:
    """Remove a file (``durable``: and flush the directory); ``False`` if it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if durable:
        fsync_dir(os.path.dirname(path) or ".")
    return True


def remove_tree(path: str) -> bool:
    """Remove a directory tree (not flushed: callers tolerate a resurrected leftover); ``False`` if it
    was already gone."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return False
    return True


def make_shared_dir(path: str, mode: int = 0o777) -> None:
    """Create ``path`` (and parents) and give it ``mode`` regardless of the umask."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)


def remove_stale_socket(path: str) -> None:
    """Remove a leftover socket (or file) at ``path`` so that a server can bind there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise OSError(errno.EISDIR, f"{path} is a directory, not a socket; remove it") from None
    except PermissionError as exc:  # pragma: no cover - depends on host permissions
        raise OSError(exc.errno, f"cannot remove stale socket {path}: {exc.strerror}") from exc
