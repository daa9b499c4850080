"""Claims with allocations, as kube-scheduler writes them, and a driver running in-process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from dra_driver.cli import Settings, settings_from_args
from dra_driver.daemon import Driver
from e2e.apiserver import APIServer

from .kubelet import find_registration_socket

DRIVER = "nvidia.tessera.dev"
NODE = "node1"


def result(
    device: str,
    request: str = "gpu",
    *,
    share: bool = True,
    memory: str | None = None,
    cores: str | None = None,
    driver: str = DRIVER,
    pool: str = NODE,
) -> dict[str, Any]:
    """One allocation result; with ``share`` it has a shareID and consumedCapacity (every capacity)."""
    out: dict[str, Any] = {"request": request, "driver": driver, "pool": pool, "device": device}
    if share:
        out["shareID"] = str(uuid.uuid4())
        out["consumedCapacity"] = {"memory": memory or "143771Mi", "cores": cores or "1", "shares": "1"}
    return out


def request(name: str = "gpu", *, count: int = 1, capacity: Mapping[str, str] | None = None) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": DRIVER, "allocationMode": "ExactCount", "count": count}
    if capacity:
        exactly["capacity"] = {"requests": dict(capacity)}
    return {"name": name, "exactly": exactly}


def claim(
    name: str,
    results: Sequence[Mapping[str, Any]],
    requests: Sequence[Mapping[str, Any]] | None = None,
    *,
    namespace: str = "default",
    config: Sequence[Mapping[str, Any]] = (),
    uid: str | None = None,
    allocated: bool = True,
) -> dict[str, Any]:
    """A ResourceClaim with ``status.allocation`` filled as the scheduler would."""
    obj: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
        "spec": {"devices": {"requests": list(requests if requests is not None else [request()])}},
    }
    if allocated:
        obj["status"] = {
            "allocation": {
                "devices": {"results": [dict(r) for r in results], "config": [dict(c) for c in config]},
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
                    ]
                },
            }
        }
    return obj


def sharing_config(source: str = "FromClaim", requests: Sequence[str] = (), **params: Any) -> dict[str, Any]:
    parameters = {"apiVersion": "tessera.dev/v1alpha1", "kind": "SharingConfig", **params}
    entry: dict[str, Any] = {"source": source, "opaque": {"driver": DRIVER, "parameters": parameters}}
    if requests:
        entry["requests"] = list(requests)
    return entry


def driver_args(root: str, kubeconfig: str, devices: str = "4xH200", *extra: str, vendor: str = "nvidia") -> list[str]:
    return [
        "--driver", vendor,
        "--backend", "mock",
        "--mock-devices", devices,
        "--node-name", NODE,
        "--kubeconfig", kubeconfig,
        "--plugin-dir", os.path.join(root, "plugins", f"{vendor}.tessera.dev"),
        "--registry-dir", os.path.join(root, "registry"),
        "--cdi-dir", os.path.join(root, "cdi"),
        "--host-lib-dir", os.path.join(root, "lib"),
        "--metrics-port", "0",
        "--healthz-port", "0",
        "--log-format", "text",
        "--api-timeout", "2",
        *extra,
    ]  # fmt: skip


def settings(root: str, kubeconfig: str, devices: str = "4xH200", *extra: str, vendor: str = "nvidia") -> Settings:
    return settings_from_args(driver_args(root, kubeconfig, devices, *extra, vendor=vendor), environ={})


@asynccontextmanager
async def running_driver(s: Settings):  # type: ignore[no-untyped-def]
    driver = Driver(s)
    await driver.start()
    try:
        assert driver.publisher is not None
        await asyncio.wait_for(driver.publisher.published.wait(), timeout=10)
        yield driver
    finally:
        await driver.stop()


CAPLESS = ("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--")
"""Runs a command as root without any capability, as the chart runs the driver (the tests run as
root with every capability, which would hide permission problems)."""


@asynccontextmanager
async def plugin_process(
    args: list[str], failpoint: str | None = None, *, capless: bool = False, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m dra_driver`` as a real process (the DaemonSet's way), stopped with SIGTERM at the end;
    ``capless``: as root without capabilities, as the chart runs it."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    child_env.update(env or {})
    if failpoint:
        child_env["TESSERA_FAILPOINT"] = failpoint
    argv = [*(CAPLESS if capless else ()), sys.executable, "-m", "dra_driver", *args]
    # The log goes to a file (a pipe nobody reads would block a chatty driver).
    with tempfile.NamedTemporaryFile(prefix="driver-", suffix=".log", delete=False) as log:
        proc = await asyncio.create_subprocess_exec(*argv, env=child_env, stderr=log)
    _LOGS[proc.pid] = log.name
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        os.unlink(_LOGS.pop(proc.pid))


_LOGS: dict[int, str] = {}


def driver_log(proc: asyncio.subprocess.Process) -> str:
    """What a :func:`plugin_process` driver logged so far."""
    with open(_LOGS[proc.pid], encoding="utf-8", errors="replace") as f:
        return f.read()


async def wait_ready(s: Settings, proc: asyncio.subprocess.Process) -> None:
    try:
        await find_registration_socket(s.registry_dir, timeout=20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(driver_log(proc)) from None


def files_under(path: str) -> list[str]:
    out: list[str] = []
    for base, _, files in os.walk(path):
        out.extend(os.path.relpath(os.path.join(base, f), path) for f in files)
    return sorted(out)


async def add_node(api: APIServer, name: str = NODE) -> None:
    api.store.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def exists(path: str) -> bool:
    return os.path.exists(path)


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def checkpoint_records(s: Settings) -> dict[str, Any]:
    """Claim UID -> the record's ``claim`` part, from ``<plugin-dir>/checkpoint/<uid>.json``."""
    out: dict[str, Any] = {}
    if not os.path.isdir(s.checkpoint_dir):
        return out
    for name in sorted(os.listdir(s.checkpoint_dir)):
        if not name.endswith(".json"):
            continue  # records moved aside (``.damaged``)
        with open(os.path.join(s.checkpoint_dir, name), encoding="utf-8") as f:
            record = json.load(f)
        assert record["kind"] == "DRAClaimCheckpoint" and name == f"{record['uid']}.json", name
        out[record["uid"]] = record["claim"]
    return out
