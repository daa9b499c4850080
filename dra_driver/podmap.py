"""Which pod and container a process belongs to, from its cgroup (``/proc/<pid>/cgroup``).

The kubelet puts every container in a cgroup whose path names the pod UID and the container ID, in
one of two layouts (cgroup v1 and v2 alike):

* cgroupfs driver: ``.../kubepods[/besteffort|/burstable]/pod<pod uid>/<container id>``
  (CRI-O: ``crio-<id>``);
* systemd driver: ``.../kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice/
  cri-containerd-<id>.scope`` (``crio-<id>.scope``, ``docker-<id>.scope``).

The first pod component below a ``kubepods`` component wins, and the component after it is the
container: a process of a nested runtime (Docker-in-Docker) or of a sub-cgroup the container made
lands on the outer container, and a sub-cgroup named like another pod cannot pass for that pod.
Paths may be relative to the reader's cgroup namespace (``/../../kubepods...``); only the
components matter. A process outside any pod (host daemons) has no owner.

:class:`OwnerCache` keeps an owner per live process: each process is pinned by a pidfd
(``pidfd_open``), so a PID reused by a new process is never taken for the old one, the exits of all
cached processes are collected with one ``epoll`` call per scan, and a signal goes to the very
process that was looked up (``pidfd_send_signal``). Only new PIDs cost a ``/proc`` read.

Test only: ``--watchdog-pid-map`` names a JSON file ``{"<pid>": {"podUID": ..., "containerID":
...}}`` that the harness kubelet writes for the processes it starts when it cannot create cgroups;
it is consulted (for the process and its ancestors) only for processes whose cgroup names no pod.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import signal
from dataclasses import dataclass

log = logging.getLogger("dra_driver.watchdog")

_POD = re.compile(
    r"(?:kubepods(?:-[a-z]+)*-)?pod"
    r"([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?"
)
_CONTAINER = re.compile(r"(?:(?:cri-containerd|crio|docker|containerd|cri-o)-)?([0-9a-f]{12,64})(?:\.scope)?")


@dataclass(frozen=True)
class Owner:
    pod_uid: str
    container_id: str
    """Empty when the process sits in the pod's own cgroup (no container below it)."""

    @property
    def container(self) -> str:
        """The container ID as ``kubectl describe`` abbreviates it (13 characters)."""
        return self.container_id[:13] or "(pod cgroup)"


def owner_from_path(path: str) -> Owner | None:
    """The pod and container of one cgroup path, or ``None`` outside ``kubepods``. Pure."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    seen_kubepods = False
    for i, part in enumerate(parts):
        if part == "kubepods" or part.startswith(("kubepods.", "kubepods-")):
            seen_kubepods = True
        if not seen_kubepods:
            continue
        match = _POD.fullmatch(part)
        if match is None:
            continue
        container = ""
        if i + 1 < len(parts):
            found = _CONTAINER.fullmatch(parts[i + 1])
            container = found.group(1) if found else ""
        return Owner(match.group(1).replace("_", "-"), container)
    return None


def owner_from_cgroup(text: str) -> Owner | None:
    """The owner from a ``/proc/<pid>/cgroup`` text (every hierarchy; the first that names a pod). Pure."""
    for line in text.splitlines():
        _, _, path = line.partition(":")
        _, _, path = path.partition(":")
        owner = owner_from_path(path)
        if owner is not None:
            return owner
    return None


@dataclass
class _Entry:
    owner: Owner | None
    pidfd: int


class OwnerCache:
    """Owners of live processes, pinned by pidfd; not thread-safe (the watchdog's one thread uses it)."""

    def __init__(self, *, proc_root: str = "/proc", pid_map: str | None = None) -> None:
        self._proc = proc_root
        self._pid_map_path = pid_map
        self._pid_map: dict[int, Owner] = {}
        self._pid_map_stamp: tuple[int, int] | None = None
        self._entries: dict[int, _Entry] = {}
        self._by_fd: dict[int, int] = {}
        self._epoll = select.epoll()
        self._pidfd = hasattr(os, "pidfd_open")

    def owners(self, pids: list[int]) -> dict[int, Owner | None]:
        """The owner of each PID (``None``: not in a pod, or gone)."""
        self._reap()
        out: dict[int, Owner | None] = {}
        for pid in pids:
            entry = self._entries.get(pid)
            if entry is None:
                entry = self._lookup(pid)
            out[pid] = entry.owner if entry is not None else None
        return out

    def signal(self, pid: int, sig: int = signal.SIGKILL) -> bool:
        """Send ``sig`` to the process looked up as ``pid`` (never to a newcomer with its PID)."""
        entry = self._entries.get(pid)
        try:
            if entry is not None and entry.pidfd >= 0:
                signal.pidfd_send_signal(entry.pidfd, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def close(self) -> None:
        for entry in self._entries.values():
            if entry.pidfd >= 0:
                os.close(entry.pidfd)
        self._entries.clear()
        self._by_fd.clear()
        self._epoll.close()

    def __len__(self) -> int:
        return len(self._entries)

    # -- internals ------------------------------------------------------------------------------

    def _reap(self) -> None:
        """Forget the processes that exited since the last scan (one epoll call)."""
        for fd, _ in self._epoll.poll(0):
            pid = self._by_fd.pop(fd, None)
            if pid is not None:
                self._forget(pid)

    def _forget(self, pid: int) -> None:
        entry = self._entries.pop(pid, None)
        if entry is not None and entry.pidfd >= 0:
            with contextlib.suppress(OSError):
                self._epoll.unregister(entry.pidfd)
            self._by_fd.pop(entry.pidfd, None)
            os.close(entry.pidfd)

    def _lookup(self, pid: int) -> _Entry | None:
        pidfd = -1
        if self._pidfd:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                return None
            except OSError:
                pidfd = -1  # too many open files, or no pidfd support: look up every scan instead
        try:
            owner = self._read_owner(pid)
        except OSError:
            if pidfd >= 0:
                os.close(pidfd)
            return None
        entry = _Entry(owner, pidfd)
        if pidfd < 0 or (owner is None and self._pid_map_path):
            # Not cached: without a pidfd a reused PID could not be told apart; and the test PID map may
            # name a process a moment after it started.
            if pidfd >= 0:
                os.close(pidfd)
            return _Entry(owner, -1)
        if _exited(pidfd):  # it exited while we read: its cgroup may be anyone's
            os.close(pidfd)
            return None
        self._entries[pid] = entry
        self._by_fd[pidfd] = pid
        self._epoll.register(pidfd, select.EPOLLIN)
        return entry

    def _read_owner(self, pid: int) -> Owner | None:
        with open(f"{self._proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            owner = owner_from_cgroup(f.read(65536))
        if owner is None and self._pid_map_path:
            owner = self._from_pid_map(pid)
        return owner

    def _from_pid_map(self, pid: int) -> Owner | None:
        """Test only: the harness's PID map, for the process or its nearest mapped ancestor."""
        self._load_pid_map()
        for _ in range(64):
            if pid in self._pid_map:
                return self._pid_map[pid]
            try:
                with open(f"{self._proc}/{pid}/stat", encoding="utf-8", errors="replace") as f:
                    pid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                return None
            if pid <= 1:
                return None
        return None

    def _load_pid_map(self) -> None:
        assert self._pid_map_path is not None
        try:
            st = os.stat(self._pid_map_path)
        except FileNotFoundError:
            self._pid_map = {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._pid_map_stamp:
            return
        try:
            with open(self._pid_map_path, encoding="utf-8") as f:
                data = json.load(f)
            self._pid_map = {
                int(pid): Owner(str(v["podUID"]), str(v.get("containerID", ""))) for pid, v in data.items()
            }
            self._pid_map_stamp = stamp
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("cannot read the test PID map", extra={"path": self._pid_map_path, "error": str(exc)})


def _exited(pidfd: int) -> bool:
    """A pidfd turns readable when its process exits (``poll``: descriptors above 1024 are fine)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))
