"""A process "container runtime": a container is its command run as a local process group.

Output (stdout and stderr together) goes to ``<pod dir>/<container>/<restart>.log``; stopping sends
SIGTERM to the group and SIGKILL after the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO


def rfc3339(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts if ts is not None else time.time()))


@dataclass
class Process:
    container: str
    log_path: str
    proc: asyncio.subprocess.Process
    started_at: str
    exit_code: int | None = None
    finished_at: str | None = None
    signalled: bool = False
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait(self) -> int:
        code = await self.proc.wait()
        if self.exit_code is None:
            # a signal shows as -N from asyncio; report it as a shell would (128 + N)
            self.exit_code = 128 - code if code < 0 else code
            self.finished_at = rfc3339()
            self._done.set()
        return self.exit_code

    async def stop(self, grace: float) -> int:
        if self.exit_code is not None:
            return self.exit_code
        self.signalled = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.wait(), timeout=max(grace, 0.1))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return await self.wait()


async def spawn_uncancelled(
    spawning: Coroutine[Any, Any, asyncio.subprocess.Process],
    record: Callable[[asyncio.subprocess.Process], None],
) -> asyncio.subprocess.Process:
    """Spawn a process and ``record`` it even when the caller is cancelled meanwhile (a signal stopping
    the cluster), so that no child is ever started without its owner knowing it; the cancellation is
    raised once the process is recorded, and the owner's cleanup then stops it."""
    task = asyncio.ensure_future(spawning)
    try:
        proc = await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            record(await task)
        raise
    record(proc)
    return proc


async def start(container: str, argv: Sequence[str], env: Mapping[str, str], cwd: str, log_path: str) -> Process:
    log = _open_log(log_path)
    started: list[asyncio.subprocess.Process] = []
    try:
        proc = await spawn_uncancelled(
            asyncio.create_subprocess_exec(
                *argv,
                env=dict(env),
                cwd=cwd,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            ),
            started.append,
        )
    except asyncio.CancelledError:
        for orphan in started:  # nobody will own it: end it here
            with contextlib.suppress(ProcessLookupError):
                os.killpg(orphan.pid, signal.SIGKILL)
            await asyncio.shield(orphan.wait())
        raise
    finally:
        log.close()
    return Process(container, log_path, proc, rfc3339())


def _open_log(path: str) -> BinaryIO:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "ab")


def tail(path: str, max_bytes: int = 4096) -> str:
    """The end of a log, at most ``max_bytes``, starting at a line boundary when it was cut."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    if size > max_bytes and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]
    return data.decode("utf-8", "replace")
