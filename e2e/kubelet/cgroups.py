"""Kubelet-like cgroups for the harness's process containers (test harness only).

A real kubelet runs every container in a cgroup whose path names the pod UID and the container ID
(``.../kubepods/besteffort/pod<uid>/<container id>`` with the cgroupfs driver); the driver's
watchdog finds a process's pod from it. The harness does the same for its process containers,
where no process escapes a resource limit it had: in the cgroup v2 hierarchy (its limits are
hierarchical; on this kind of machine the controllers are on v1 hierarchies and v2 is mounted at
``/sys/fs/cgroup/unified``), else in the v1 named hierarchy ``name=systemd``, which controls
nothing; never in a v1 hierarchy with a controller; and always below the harness's own cgroup, so
whatever limits apply to the harness still apply to its containers. The tree is
``<own cgroup>/tessera-e2e-<node>-<random>/kubepods/besteffort/pod<uid>/<container id>``.

A container's process enters its cgroup before it runs anything: it is started as ``sh -c 'echo $$ >
<cgroup>/cgroup.procs && exec "$@"'``. When no such hierarchy exists or it cannot be written,
:meth:`HarnessCgroups.create` raises :class:`CgroupError` and the kubelet falls back to its PID map
(see :mod:`.kubelet`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import time
from dataclasses import dataclass


class CgroupError(Exception):
    """No usable cgroup hierarchy; the message says why."""


@dataclass(frozen=True)
class Hierarchy:
    mount: str
    own: str
    """This process's cgroup in the hierarchy (``/`` for the root)."""
    version: int


def _mounts() -> list[tuple[str, str, str, str]]:
    """(mount point, root, fstype, super options) of every cgroup mount, from mountinfo."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                out.append((fields[4], fields[3], tail[0], tail[2]))
    return out


def _own_paths() -> dict[str, str]:
    """Controller list (``""`` for v2) -> this process's cgroup path."""
    out = {}
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out[controllers] = path
    return out


def find_hierarchy() -> Hierarchy:
    """The cgroup v2 hierarchy, else the v1 ``name=systemd`` one; :class:`CgroupError` if neither shows
    this process's cgroup."""
    own = _own_paths()
    problems = []
    for mount, root, fstype, options in sorted(_mounts(), key=lambda m: m[2] != "cgroup2"):
        if fstype == "cgroup2":
            # v2 limits are hierarchical: below our own cgroup, every limit of ours still applies.
            path = own.get("")
        elif "name=systemd" in options.split(","):
            path = own.get("name=systemd")
        else:
            continue
        if path is None or root != "/" or ".." in path.split("/"):
            problems.append(f"{mount}: this process's cgroup is not visible there ({path!r})")
            continue
        return Hierarchy(mount, path, 2 if fstype == "cgroup2" else 1)
    raise CgroupError("no usable cgroup hierarchy: " + ("; ".join(problems) or "no cgroup mounts"))


class HarnessCgroups:
    """One node's kubepods tree; :meth:`close` removes it (killing anything left in it)."""

    def __init__(self, root: str) -> None:
        self.root = root

    @classmethod
    def create(cls, node: str) -> HarnessCgroups:
        hierarchy = find_hierarchy()
        base = os.path.join(hierarchy.mount, hierarchy.own.lstrip("/"))
        root = os.path.join(base, f"tessera-e2e-{node}-{secrets.token_hex(4)}")
        try:
            os.makedirs(os.path.join(root, "kubepods", "besteffort"))
        except OSError as exc:
            raise CgroupError(f"cannot create {root}: {exc.strerror}") from exc
        return cls(root)

    def pod_dir(self, pod_uid: str) -> str:
        return os.path.join(self.root, "kubepods", "besteffort", f"pod{pod_uid}")

    def container_dir(self, pod_uid: str, container_id: str) -> str:
        path = os.path.join(self.pod_dir(pod_uid), container_id)
        os.makedirs(path, exist_ok=True)
        return path

    @staticmethod
    def enter(argv: list[str], cgroup: str) -> list[str]:
        """``argv`` started so that it runs in ``cgroup`` from its first instruction."""
        procs = os.path.join(cgroup, "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def remove_container(self, pod_uid: str, container_id: str) -> None:
        _remove(os.path.join(self.pod_dir(pod_uid), container_id))

    def remove_pod(self, pod_uid: str) -> None:
        pod = self.pod_dir(pod_uid)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(pod):
                if os.path.isdir(os.path.join(pod, name)):
                    _remove(os.path.join(pod, name))
        _remove(pod)

    def close(self) -> None:
        """Remove the whole tree, deepest first, killing processes left in it."""
        for base, dirs, _ in sorted(os.walk(self.root), key=lambda w: -w[0].count("/")):
            del dirs
            _remove(base)


def _remove(path: str) -> None:
    """rmdir a cgroup; processes still in it (exiting, or left behind) are killed first."""
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
        for pid in _procs(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def _procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
            return [int(line) for line in f if line.strip()]
    except OSError:
        return []
