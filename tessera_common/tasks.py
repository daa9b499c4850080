"""Stopping background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, ignore_errors: bool = False) -> None:
    """Cancel every task, then wait for each to finish. A task's own error (other than its
    cancellation) is raised, unless ``ignore_errors``."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    ignored: tuple[type[BaseException], ...] = (asyncio.CancelledError, Exception) if ignore_errors else (
        asyncio.CancelledError,
    )
    for task in pending:
        with contextlib.suppress(*ignored):
            await task
