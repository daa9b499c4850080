"""Install ``libvgpu.so`` and ``ld.so.preload`` into the host library directory, safely.

Run by the driver DaemonSet's init container as ``python -m isolation.install --source DIR --dest DIR``.

Running containers have ``<dest>/libvgpu.so`` and ``<dest>/ld.so.preload`` bind-mounted (CDI mounts) and
mapped into their processes. Overwriting such a file in place (``cp``, ``open(..., "w")``) truncates the
very inode those processes execute from: they crash with SIGBUS or run half-old, half-new code (HAMi
#727). This installer never writes into an existing file. It writes the new content to a fresh
temporary file in the same directory, fsyncs it and renames it over the old name, which is atomic:
a container started before keeps the old inode (its bind mount pins it), one started after gets the
new file, and nothing ever sees a partial file. A file whose content and mode are already right is
left alone, so a driver restart with the same image changes nothing on the host.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from isolation.env import LIBRARY_NAME, PRELOAD_FILE
from tessera_common import files

LIBRARY_MODE = 0o755
PRELOAD_MODE = 0o644
DIR_MODE = 0o755
LOCK_FILE = ".tessera-install.lock"
ELF_MAGIC = b"\x7fELF"

Action = Literal["installed", "replaced", "unchanged"]


class InstallError(RuntimeError):
    """The installation cannot proceed; the message says what to fix."""


@dataclass(frozen=True)
class Installed:
    path: str
    action: Action
    sha256: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: str) -> str | None:
    """sha256 of a regular file, or ``None`` when there is none at ``path``."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _clear_stale_directory(path: str) -> None:
    """Remove an empty directory squatting on a file name.

    A runtime asked to bind-mount a host file that does not exist yet may create an empty directory
    in its place; the real file can then never be installed. An empty directory holds nothing, so it
    is safe to remove; a non-empty one is somebody's data and is refused.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        try:
            os.rmdir(path)
        except OSError as exc:
            raise InstallError(
                f"{path} is a non-empty directory where a file must go; move it away and restart the driver pod"
            ) from exc
    elif not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
        raise InstallError(f"{path} exists and is not a regular file; remove it and restart the driver pod")


def install_file(dest: str, content: bytes, mode: int) -> Installed:
    """Put ``content`` at ``dest`` with ``mode`` by write-new-then-rename; never modify an existing inode."""
    digest = _sha256(content)
    _clear_stale_directory(dest)
    present = os.path.lexists(dest)
    existing = _file_digest(dest) if present and not os.path.islink(dest) else None
    if existing == digest and stat.S_IMODE(os.stat(dest).st_mode) == mode:
        return Installed(dest, "unchanged", digest)
    files.write_atomic(dest, content, mode=mode)  # a new inode renamed into place, never an in-place write
    return Installed(dest, "replaced" if present else "installed", digest)


def read_library(source_dir: str) -> bytes:
    path = os.path.join(source_dir, LIBRARY_NAME)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InstallError(
            f"{path} not found: the driver image must carry {LIBRARY_NAME} (built by `make -C isolation`)"
        ) from None
    if not data.startswith(ELF_MAGIC):
        raise InstallError(f"{path} is not an ELF shared library; the driver image is broken, rebuild it")
    return data


def install(source_dir: str, dest_dir: str, preload_path: str | None = None) -> list[Installed]:
    """Install the library first, then the preload file that names it (so the name never dangles)."""
    library = read_library(source_dir)
    try:
        os.makedirs(dest_dir, mode=DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise InstallError(f"cannot create {dest_dir}: {exc}; check the host library dir mount") from exc
    if not os.access(dest_dir, os.W_OK):
        raise InstallError(f"{dest_dir} is not writable; the init container must run as the owner of the host dir")
    lib_dest = os.path.join(dest_dir, LIBRARY_NAME)
    preload_line = (preload_path or lib_dest) + "\n"
    # Several driver pods (one per vendor, or an old and a new one during an update) may install at
    # once on a node: an exclusive lock serialises them, so none removes another's temporary file.
    with open(os.path.join(dest_dir, LOCK_FILE), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        files.remove_temp_files(dest_dir)
        return [
            install_file(lib_dest, library, LIBRARY_MODE),
            install_file(os.path.join(dest_dir, PRELOAD_FILE), preload_line.encode(), PRELOAD_MODE),
        ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m isolation.install",
        description=f"Install {LIBRARY_NAME} and {PRELOAD_FILE} into the host library dir without "
        "touching files that running containers have mapped (write new, rename into place).",
    )
    parser.add_argument("--source", required=True, help=f"directory holding the {LIBRARY_NAME} to install")
    parser.add_argument(
        "--dest",
        required=True,
        help="host library dir, mounted at the same path as on the host (the driver's --host-lib-dir)",
    )
    parser.add_argument(
        "--preload-path",
        default=None,
        help=f"path written into {PRELOAD_FILE}: where containers see {LIBRARY_NAME} (default: <dest>/{LIBRARY_NAME})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = install(args.source, args.dest, args.preload_path)
    except (InstallError, OSError) as exc:
        print(json.dumps({"level": "error", "msg": "install failed", "error": str(exc)}), file=sys.stderr)
        return 1
    for r in results:
        print(json.dumps({"level": "info", "msg": f"{r.action} {os.path.basename(r.path)}", "path": r.path,
                          "action": r.action, "sha256": r.sha256}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
