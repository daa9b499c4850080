"""What the benchmark modules share: percentiles, the API server stand-in in a process of its own, the
machine line and the report file (``.bench/<name>.md``)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from kubeapi import KubeClient, namespaced_path


def percentile(samples: list[float], p: float) -> float:
    """The sample at rank ``p`` percent (nearest rank of the sorted samples)."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_api(kubeconfig: str, ready: Any, stop: Any, cpu: int | None = None) -> None:
    """Child process: the API server stand-in (schema validation and webhooks off) until ``stop`` is set;
    ``cpu``: pinned to that CPU."""
    from e2e.apiserver import APIServer

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    async def serve() -> None:
        async with APIServer.running(validate=False, webhooks=False) as api:
            api.write_kubeconfig(kubeconfig)
            ready.set()
            await asyncio.to_thread(stop.wait)

    asyncio.run(serve())


@contextlib.contextmanager
def api_server(prefix: str, *, cpu: int | None = None) -> Iterator[str]:
    """A temporary directory (removed on exit) with the stand-in's kubeconfig at ``<root>/kubeconfig``,
    the stand-in serving from a spawned process of its own meanwhile; yields the directory."""
    root = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=serve_api, args=(f"{root}/kubeconfig", ready, stop, cpu), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the API server stand-in did not start")
        yield root
    finally:
        stop.set()
        server.join(10)
        if server.is_alive():
            server.kill()
        shutil.rmtree(root, ignore_errors=True)


async def store_claim(client: KubeClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Create the claim (in ``default``), then write its allocation as the scheduler does (status subresource)."""
    path = namespaced_path("resource.k8s.io/v1", "resourceclaims", "default")
    created = await client.create(path, {k: v for k, v in obj.items() if k != "status"})
    created["status"] = obj["status"]
    return await client.replace(f"{path}/{created['metadata']['name']}/status", created)


def machine() -> str:
    """``Machine: <arch>, <n> CPUs, Python <v>, load average <l> at the end (other jobs share the machine)``:
    the caller ends the sentence."""
    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share the machine)"
    )


def write_report(name: str, text: str, *, ok: bool, missed: str) -> int:
    """Write ``.bench/<name>.md`` and print it; ``missed`` goes to stderr when a target was missed.
    The exit status: 0, or 1 when a target was missed."""
    os.makedirs(".bench", exist_ok=True)
    with open(f".bench/{name}.md", "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    if not ok:
        print(missed, file=sys.stderr)
    return 0 if ok else 1
