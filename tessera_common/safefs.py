"""File operations on directories a tenant can write to. Blocking; call them from a worker thread.

A claim directory (``<host-lib-dir>/claims/<uid>``) is mounted read-write into the claim's
containers, so anything can be in it: symbolic links to anywhere, FIFOs (an ``open`` for reading
blocks until a writer comes), sockets, device nodes, huge files, directories without write or search
permission, trees deeper than ``PATH_MAX``. The driver runs as root but without capabilities (no
``CAP_DAC_OVERRIDE``, no ``CAP_FOWNER``): permission bits bind it like any other user, except on
files it owns. Every function here therefore

* resolves paths one component at a time from a directory it trusts, with ``O_NOFOLLOW`` on each
  (never follows a link the tenant placed; never leaves the trusted directory);
* opens files with ``O_NONBLOCK`` and checks with ``fstat`` that the file is a regular file (a
  FIFO or device is refused, never waited on), of a bounded size and, where the caller created it,
  owned by this process's user;
* removes trees through directory file descriptors (``unlinkat``), descending without following
  links, making directories it owns writable when the tenant took the permission away.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
MAX_DEPTH = 64
"""Directories deeper than this are moved up to the top of the tree being removed before descending
further, so removing any tree holds a bounded number of descriptors."""
TEMP_PREFIX = ".tessera-tmp-"
"""Prefix of the temporary files of :func:`write_beneath`; the same as :mod:`.files` uses."""


class UnsafeFileError(OSError):
    """A path is not what the caller may read: a link, a FIFO, a device, too large, another owner."""


def _unsafe(path: str, what: str) -> UnsafeFileError:
    return UnsafeFileError(errno.EPERM, f"{path}: {what}; refused")


def components(relative: str) -> list[str]:
    """The components of a relative path, refusing empty, ``.``, ``..`` and absolute paths."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{relative!r} is not a plain relative path (no '', '.', '..' components)")
    return parts


def open_dir(path: str) -> int:
    """Open a directory the caller trusts (its own, not a tenant's): the last component must not be a
    link. The caller closes the descriptor."""
    return os.open(path, _DIR_FLAGS)


@contextlib.contextmanager
def opened_dir(path: str) -> Iterator[int]:
    fd = open_dir(path)
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir_at(dir_fd: int, relative: str, *, create: int | None = None) -> int:
    """Open ``relative`` under the directory ``dir_fd``, one component at a time with ``O_NOFOLLOW``.

    ``create``: make missing directories with this mode (``mkdirat``; the umask applies), and replace
    a link or a non-directory in the way by a directory (the tree is ours to lay out). Without it, a
    link or a non-directory on the way fails with ``ELOOP``/``ENOTDIR``. The caller closes the result."""
    fd = os.dup(dir_fd)
    try:
        for part in components(relative):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if create is None or exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    raise
                if exc.errno != errno.ENOENT:
                    remove_at(fd, part)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, create, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_regular(dir_fd: int, relative: str, *, max_bytes: int, owner: int | None, name: str) -> tuple[int, int]:
    """Open a regular file under ``dir_fd`` for reading without following links or blocking; the
    descriptor and the file's size. Refuses what :func:`read_at` refuses. The caller closes it."""
    parent, _, leaf = relative.rpartition("/")
    components(relative)
    pfd = open_dir_at(dir_fd, parent) if parent else os.dup(dir_fd)
    try:
        try:
            fd = os.open(leaf, _READ_FLAGS, dir_fd=pfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _unsafe(name, "is a symbolic link") from None
            raise
    finally:
        os.close(pfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _unsafe(name, f"is not a regular file ({_kind(st.st_mode)})")
        if owner is not None and st.st_uid != owner:
            raise _unsafe(name, f"is owned by uid {st.st_uid}, not {owner}")
        if st.st_size > max_bytes:
            raise _unsafe(name, f"holds {st.st_size} bytes, more than {max_bytes}")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_at(dir_fd: int, relative: str, *, max_bytes: int, owner: int | None = None, label: str | None = None) -> bytes:
    """Read a regular file under ``dir_fd`` without following links and without blocking.

    Refuses (:class:`UnsafeFileError`) anything that is not a regular file, a file larger than
    ``max_bytes``, and, given ``owner``, a file another user owns. ``label`` names the file in
    errors (default: ``relative``)."""
    name = label or relative
    fd, _ = _open_regular(dir_fd, relative, max_bytes=max_bytes, owner=owner, name=name)
    try:
        data = _read_up_to(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise _unsafe(name, f"grew past {max_bytes} bytes while being read")
    return data


def read_head_beneath(root: str, relative: str, *, length: int, max_bytes: int) -> tuple[bytes, int]:
    """The first ``length`` bytes of ``root/relative`` and the file's size, with the checks of
    :func:`read_at` (a file larger than ``max_bytes`` is refused): for a reader that needs only a
    file's head (a region's header and device records, not its process slots)."""
    name = os.path.join(root, relative)
    with opened_dir(root) as dir_fd:
        fd, size = _open_regular(dir_fd, relative, max_bytes=max_bytes, owner=None, name=name)
    try:
        return _read_up_to(fd, min(length, max_bytes)), size
    finally:
        os.close(fd)


def read_beneath(root: str, relative: str, *, max_bytes: int, owner: int | None = None) -> bytes:
    """:func:`read_at` from the trusted directory ``root``."""
    with opened_dir(root) as fd:
        return read_at(fd, relative, max_bytes=max_bytes, owner=owner, label=os.path.join(root, relative))


def write_beneath(root: str, relative: str, data: bytes, *, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    """Replace ``root/relative`` atomically with ``data`` (temporary file, ``renameat``), creating
    missing directories on the way, without following links. Whatever the tenant left at that name
    (a link, a FIFO, a directory) is replaced, never written through. Not fsynced: for files that are
    rebuilt from a durable record."""
    parent, _, leaf = relative.rpartition("/")
    components(relative)
    with opened_dir(root) as rfd:
        dfd = open_dir_at(rfd, parent, create=dir_mode) if parent else os.dup(rfd)
    try:
        tmp = TEMP_PREFIX + secrets.token_hex(8)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            try:
                os.rename(tmp, leaf, src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError as exc:
                if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
                remove_at(dfd, leaf)  # a directory in the way
                os.rename(tmp, leaf, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)


def make_dir_at(dir_fd: int, name: str, mode: int) -> None:
    """Create directory ``name`` under ``dir_fd`` (or keep the one there) and give it ``mode``
    regardless of the umask. A link or a file at ``name`` fails (``ELOOP``/``ENOTDIR``)."""
    components(name)
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


# -- removal --------------------------------------------------------------------------------------


@dataclass
class _Frame:
    fd: int
    names: list[str]
    name: str
    """This directory's name in its parent."""


def remove_at(dir_fd: int, name: str) -> bool:
    """Remove ``name`` under ``dir_fd`` whatever it is (file, link, FIFO, socket, tree of any depth
    and modes), through directory descriptors, never following a link. ``False`` if it was gone.

    Directories this process's user owns are made writable and searchable when the tenant took that
    away; a directory another user owns and denies us raises ``PermissionError`` naming it."""
    components(name)
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        pass
    except PermissionError:
        _make_writable(dir_fd, ".")
        try:
            os.unlink(name, dir_fd=dir_fd)
            return True
        except IsADirectoryError:
            pass
    try:
        top = _open_for_removal(dir_fd, name)
    except FileNotFoundError:
        return False
    _remove_tree(top, name)
    _rmdir(dir_fd, name)
    return True


def remove_beneath(root: str, name: str) -> bool:
    """:func:`remove_at` from the trusted directory ``root``."""
    try:
        with opened_dir(root) as fd:
            return remove_at(fd, name)
    except FileNotFoundError:
        return False


def _remove_tree(top: int, top_name: str) -> None:
    """Empty the directory ``top`` (closed on return) iteratively: depth-first, with at most
    :data:`MAX_DEPTH` open levels; deeper directories are moved up under ``top`` and emptied later."""
    stack = [_Frame(top, _names(top), top_name)]
    try:
        while stack:
            frame = stack[-1]
            if not frame.names:
                stack.pop()
                os.close(frame.fd)
                if stack:
                    _rmdir(stack[-1].fd, frame.name)
                continue
            name = frame.names.pop()
            if _unlink(frame.fd, name):
                continue
            try:
                child = _open_for_removal(frame.fd, name)
            except FileNotFoundError:
                continue
            if len(stack) >= MAX_DEPTH:
                # Too deep: move it up under the top directory and come back to it from there.
                os.close(child)
                moved = f".tessera-deep-{secrets.token_hex(6)}"
                try:
                    os.rename(name, moved, src_dir_fd=frame.fd, dst_dir_fd=stack[0].fd)
                except PermissionError:  # moving a directory rewrites its "..": it must be writable
                    _make_writable(frame.fd, name)
                    os.rename(name, moved, src_dir_fd=frame.fd, dst_dir_fd=stack[0].fd)
                stack[0].names.append(moved)
                continue
            stack.append(_Frame(child, _names(child), name))
    finally:
        for frame in stack:
            with contextlib.suppress(OSError):
                os.close(frame.fd)


def _names(fd: int) -> list[str]:
    return os.listdir(fd)


def _unlink(dir_fd: int, name: str) -> bool:
    """Unlink a non-directory; ``True`` when ``name`` is gone, ``False`` when it is a directory."""
    for attempt in range(2):
        try:
            os.unlink(name, dir_fd=dir_fd)
            return True
        except FileNotFoundError:
            return True
        except IsADirectoryError:
            return False
        except PermissionError:
            if attempt:
                raise
            _make_writable(dir_fd, ".")
    return False


def _rmdir(dir_fd: int, name: str) -> None:
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except PermissionError:
        _make_writable(dir_fd, ".")
        os.rmdir(name, dir_fd=dir_fd)


def _open_for_removal(dir_fd: int, name: str) -> int:
    """Open directory ``name`` for listing; if its owner (we) took read or search away, give it back."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        _make_writable(dir_fd, name)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _make_writable(dir_fd: int, name: str) -> None:
    """``chmod 0700`` the directory ``name`` under ``dir_fd`` (``"."``: ``dir_fd`` itself) if this
    process's user owns it; without ``CAP_FOWNER`` nothing else is possible. The directory is reached
    through an ``O_PATH`` descriptor (no permission needed, no link followed) and changed through
    ``/proc/self/fd``, so the mode lands on that very directory."""
    path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(path_fd)
        if st.st_uid != os.geteuid():
            raise PermissionError(
                errno.EACCES,
                f"a directory owned by uid {st.st_uid} (mode {stat.S_IMODE(st.st_mode):o}) denies the driver "
                "access, and without CAP_FOWNER it cannot change that",
            )
        os.chmod(f"/proc/self/fd/{path_fd}", 0o700)
    finally:
        os.close(path_fd)


def _kind(mode: int) -> str:
    checks: list[tuple[Callable[[int], bool], str]] = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    ]
    return next((what for check, what in checks if check(mode)), f"mode {mode:o}")
