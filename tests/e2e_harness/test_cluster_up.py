"""``python -m e2e.cluster up -f FILE`` as a user runs it: every pod reported, nothing in the file
stops the cluster, and a SIGTERM at any point (start-up included) leaves no process and no state
directory behind. Processes are checked as a tree: every descendant of the command seen before the
signal, and every process on the machine whose command line, environment or working directory
names the state directory."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: quick}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: busybox, command: ["true"]}
---
apiVersion: v1
kind: Pod
metadata: {name: fails}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "echo about to fail; exit 3"],
     resources: {limits: {nvidia.com/gpu: 1, nvidia.com/gpumem: 1024}}}
---
apiVersion: v1
kind: Pod
metadata: {name: too-big}
spec:
  containers:
  - {name: main, image: busybox, command: ["sleep", "600"], resources: {limits: {nvidia.com/gpu: 8}}}
---
apiVersion: v1
kind: Pod
metadata: {name: denied}
spec:
  containers:
  - {name: main, image: busybox, command: ["true"], resources: {limits: {nvidia.com/gpucores: 150}}}
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  containers:
  - {name: main, image: busybox, command: ["sh", "-c", "sleep 600 & sleep 600"],
     resources: {limits: {nvidia.com/gpu: 1, nvidia.com/gpumem: 2048}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: not-served}
spec: {}
---
just: [a, document, without, a, kind]
"""


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a live process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid -> start time."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
            starts[int(entry)] = stat[2]
    out: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in starts and pid not in out:
            out[pid] = starts[pid]
            todo.extend(children.get(pid, []))
    return out


def alive(pids: dict[int, int]) -> list[int]:
    """Those of ``pids`` still running (same start time, not a zombie)."""
    return [p for p, start in pids.items() if (s := _stat(p)) is not None and s[2] == start and s[1] != "Z"]


def exists(path: str) -> bool:
    return os.path.exists(path)


def naming(state: str) -> list[str]:
    """Processes whose command line, environment or working directory names ``state``."""
    found = []
    needle = state.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            stat = _stat(int(entry))
            if stat is None or stat[1] == "Z":
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if needle in cmdline or needle in environ or cwd.startswith(state):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")[:120]
            found.append(f"{entry}: {command}")
    return found


@dataclass
class Up:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    state: str = ""

    async def until(self, pattern: str, timeout: float = 90.0) -> str:
        """Read output until a line matches ``pattern``; that line."""
        assert self.proc.stdout is not None
        for line in self.lines:
            if re.search(pattern, line):
                return line
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + "\n".join(self.lines))
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout=left)
            if not raw:
                raise AssertionError(f"exited before {pattern!r}:\n" + "\n".join(self.lines))
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if not self.state and (m := re.match(r"starting a local cluster in (\S+)", line)):
                self.state = m.group(1)
            if re.search(pattern, line):
                return line

    async def rest(self, timeout: float = 90.0) -> int:
        """Read to the end; the exit status."""
        assert self.proc.stdout is not None
        out = await asyncio.wait_for(self.proc.stdout.read(), timeout=timeout)
        self.lines.extend(out.decode(errors="replace").splitlines())
        return await asyncio.wait_for(self.proc.wait(), timeout=timeout)

    def output(self) -> str:
        return "\n".join(self.lines)


@asynccontextmanager
async def cluster_up(tmp_path: Path) -> AsyncIterator[Up]:
    pods = tmp_path / "pods.yaml"
    pods.write_text(PODS)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "e2e.cluster",
        "up",
        "-f",
        str(pods),
        "-f",
        str(tmp_path / "missing.yaml"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    up = Up(proc)
    try:
        yield up
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop_and_check(up: Up) -> None:
    """SIGTERM now; then no process of the tree and no state directory may be left. The exit status:
    0 once serving, 128 + SIGTERM when stopped before (the output says which it was)."""
    tree = descendants(up.proc.pid)
    up.proc.send_signal(signal.SIGTERM)
    status = await up.rest()
    stopping = up.lines.index("SIGTERM: stopping the cluster")
    serving = any(line.startswith("serving;") for line in up.lines[:stopping])
    assert status == (0 if serving else 128 + signal.SIGTERM), up.output()
    assert up.state and not exists(up.state), f"{up.state} left behind\n{up.output()}"
    left = alive(tree)
    assert not left, f"processes left: {left}\n{up.output()}"
    assert not naming(up.state), naming(up.state)


async def test_up_reports_every_pod_and_stops_cleanly(tmp_path: Path) -> None:
    async with cluster_up(tmp_path) as up:
        await up.until(r"^serving; Ctrl-C stops the cluster$", timeout=180)
        # A pod counts as settled once seen running: a short-lived one may finish after "serving".
        for line in (
            "[pod default/quick] finished Succeeded: main exited 0 (Completed)",
            "[pod default/fails] finished Failed: main exited 3 (Error)",
        ):
            await up.until(re.escape(line))
        await up.until("about to fail")
        out = up.output()
        assert "[pod default/quick] created (no accelerator asked" in out
        assert re.search(r"\[pod default/fails\] claim fails-tessera-\w+ allocated on node-1: gpu-\d", out)
        assert "[pod default/fails] prepared by the driver on node-1" in out
        assert re.search(r"\[pod default/too-big\] pending; the scheduler says: 0/1 nodes are available", out)
        assert (
            '[pod default/denied] denied by the webhook: admission webhook "pods.tessera.dev" denied the request: '
            "container 'main': nvidia.com/gpucores is a percentage of each GPU and must be at most 100" in out
        )
        assert "[pod default/sleeper] running on node-1" in out
        assert "apps/v1/Deployment is not served by the local cluster; skipped" in out
        assert "pods.yaml#7: not a Kubernetes object" in out
        assert "missing.yaml: cannot read it (No such file or directory); skipped" in out
        await stop_and_check(up)
        assert up.lines[-2:] == ["SIGTERM: stopping the cluster", "cluster stopped"]


@pytest.mark.parametrize(
    "point",
    [
        r"^starting a local cluster in ",  # nothing started yet
        r"^chart rendered with helm$",  # the webhook about to start
        r"^webhook ready on ",  # the webhook running, the node's driver being started
        r"^node node-1: nvidia driver registered",  # everything up, the webhook reading the slices
        r"^\[pod default/sleeper\] created",  # the pods being applied
        r"^\[pod default/sleeper\] running on node-1",  # a container running (and its child)
    ],
    ids=["at-start", "chart-rendered", "webhook-ready", "driver-registered", "applying", "container-running"],
)
async def test_sigterm_at_any_point_leaves_nothing(tmp_path: Path, point: str) -> None:
    async with cluster_up(tmp_path) as up:
        await up.until(point, timeout=180)
        await stop_and_check(up)
