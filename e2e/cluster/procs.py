"""Child processes of the harness (webhook, drivers): started with their output in a log file,
stopped with SIGTERM (SIGKILL after a grace period); a crash is reported with the log's end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from e2e.kubelet.runtime import spawn_uncancelled


def _open(path: str) -> BinaryIO:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "ab")


def log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


class Child:
    def __init__(self, name: str, argv: Sequence[str], log_path: str, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        log = _open(self.log_path)
        try:
            await spawn_uncancelled(
                asyncio.create_subprocess_exec(
                    *self.argv,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    env=self.env,
                    start_new_session=True,
                ),
                self._record,
            )
        finally:
            log.close()

    def _record(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    def check(self) -> None:
        """Raise with the log's end when the process has exited."""
        if self.proc is not None and self.proc.returncode is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; the end of {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    async def stop(self, grace: float = 5.0, *, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        return self.proc.returncode


def python() -> str:
    """The interpreter running the harness (the project's virtual environment)."""
    return sys.executable
