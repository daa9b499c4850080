"""The plugin killed (SIGKILL) after each step of prepare and unprepare recovers on restart;
1,000 prepare/unprepare cycles leave nothing behind; SIGTERM removes the sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from dra_driver.cli import Settings
from dra_driver.prepare import FAILPOINTS
from e2e.apiserver import APIServer

from .cdi_schema import check_cdi_spec
from .helpers import (
    DRIVER,
    checkpoint_records,
    claim,
    driver_args,
    exists,
    files_under,
    read_text,
    request,
    result,
    running_driver,
    settings,
    write_text,
)
from .kubelet import Claim, Kubelet, find_registration_socket

PREPARE_STEPS = [f for f in FAILPOINTS if not f.startswith("unprepare-")]
UNPREPARE_STEPS = [f for f in FAILPOINTS if f.startswith("unprepare-")]


@asynccontextmanager
async def plugin_process(args: list[str], failpoint: str | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m dra_driver`` as a real process (the DaemonSet's way), stopped with SIGTERM at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    if failpoint:
        env["TESSERA_FAILPOINT"] = failpoint
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dra_driver", *args, env=env, stderr=asyncio.subprocess.PIPE
    )
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


async def wait_ready(s: Settings, proc: asyncio.subprocess.Process) -> None:
    try:
        await find_registration_socket(s.registry_dir, timeout=20)
    except TimeoutError:
        assert proc.stderr is not None
        proc.kill()
        raise AssertionError((await proc.stderr.read()).decode()) from None


def leftovers(s: Settings) -> list[str]:
    """Everything a claim leaves on disk (CDI specs, claim dirs, temp files of atomic writes)."""
    out = [f"cdi/{f}" for f in files_under(s.cdi_dir)]
    out += [f"checkpoint/{f}" for f in files_under(s.checkpoint_dir)]
    out += [f"claims/{d}" for d in os.listdir(os.path.join(s.host_lib_dir, "claims"))]
    out += [f"plugin/{f}" for f in os.listdir(s.plugin_dir) if f not in ("checkpoint", "plugin.lock", "dra.sock")]
    return out


@pytest.mark.parametrize("step", PREPARE_STEPS)
async def test_killed_during_prepare_recovers(api: APIServer, root: str, kubeconfig: str, step: str) -> None:
    args = driver_args(root, kubeconfig, "2xH100")
    s = settings(root, kubeconfig, "2xH100")
    c = claim(
        "crash", [result("gpu-1", memory="8Gi", cores="20")], [request(capacity={"memory": "8Gi", "cores": "20"})]
    )
    api.store.put(c)
    who = Claim("default", "crash", c["metadata"]["uid"])

    async with plugin_process(args, failpoint=step) as proc:
        await wait_ready(s, proc)
        kubelet = await Kubelet(s.registry_dir).register()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await kubelet.prepare(who, timeout=20)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        await kubelet.close()
        assert await proc.wait() == -signal.SIGKILL
    state = checkpoint_records(s)[who.uid]["state"]
    assert state == ("PrepareCompleted" if step == "after-completed" else "PrepareStarted")

    # The kubelet's stale socket files are still there; the restarted plugin replaces them.
    assert exists(s.dra_socket)
    async with plugin_process(args) as proc:
        await wait_ready(s, proc)
        kubelet = await Kubelet(s.registry_dir).register()
        answer = (await kubelet.prepare(who)).claims[who.uid]
        assert answer.error == ""
        (dev,) = answer.devices
        share = c["status"]["allocation"]["devices"]["results"][0]["shareID"]
        assert list(dev.cdi_device_ids) == [f"k8s.{DRIVER}/claim={who.uid}-gpu-1-{share}"]
        assert dev.share_id == share
        spec = json.loads(read_text(os.path.join(s.cdi_dir, f"k8s.{DRIVER}-claim_{who.uid}.json")))
        check_cdi_spec(spec)
        env = dict(e.split("=", 1) for e in spec["devices"][0]["containerEdits"]["env"])
        assert (env["CUDA_DEVICE_MEMORY_LIMIT_0"], env["CUDA_DEVICE_SM_LIMIT_0"]) == ("8192m", "20")
        assert checkpoint_records(s)[who.uid]["state"] == "PrepareCompleted"
        assert (await kubelet.prepare(who)).claims[who.uid] == answer
        assert (await kubelet.unprepare(who)).claims[who.uid].error == ""
        await kubelet.close()
    assert leftovers(s) == []
    assert checkpoint_records(s) == {}
    assert not exists(s.dra_socket) and not exists(s.registration_socket)


@pytest.mark.parametrize("step", UNPREPARE_STEPS)
async def test_killed_during_unprepare_recovers(api: APIServer, root: str, kubeconfig: str, step: str) -> None:
    args = driver_args(root, kubeconfig, "2xH100")
    s = settings(root, kubeconfig, "2xH100")
    c = claim("crash", [result("gpu-0", memory="8Gi")])
    api.store.put(c)
    who = Claim("default", "crash", c["metadata"]["uid"])
    async with plugin_process(args, failpoint=step) as proc:
        await wait_ready(s, proc)
        kubelet = await Kubelet(s.registry_dir).register()
        assert (await kubelet.prepare(who)).claims[who.uid].error == ""
        api.store.delete("resourceclaims", "default", "crash")  # unprepare must not need it
        with pytest.raises(grpc.aio.AioRpcError):
            await kubelet.unprepare(who, timeout=20)
        await kubelet.close()
        assert await proc.wait() == -signal.SIGKILL
    async with plugin_process(args) as proc:
        await wait_ready(s, proc)
        kubelet = await Kubelet(s.registry_dir).register()
        assert (await kubelet.unprepare(who)).claims[who.uid].error == ""
        await kubelet.close()
    assert leftovers(s) == []
    assert checkpoint_records(s) == {}


async def test_sigterm_removes_sockets_and_stale_sockets_are_replaced(
    api: APIServer, root: str, kubeconfig: str
) -> None:
    s = settings(root, kubeconfig)
    for path in (s.dra_socket, s.registration_socket):
        write_text(path, "stale")
    async with plugin_process(driver_args(root, kubeconfig)) as proc:
        await asyncio.sleep(0)
        kubelet = await Kubelet(s.registry_dir).register()  # may find the stale file first: retry
        await kubelet.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    assert not exists(s.dra_socket) and not exists(s.registration_socket)


async def test_1000_prepare_unprepare_cycles_leave_nothing_behind(api: APIServer, root: str, kubeconfig: str) -> None:
    s = settings(root, kubeconfig, "2xH200")
    claims = [claim(f"cycle-{i}", [result(f"gpu-{i % 2}", memory="1Gi")]) for i in range(1000)]
    for obj in claims:
        api.store.put(obj)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        for obj in claims:
            who = Claim("default", obj["metadata"]["name"], obj["metadata"]["uid"])
            assert (await kubelet.prepare(who)).claims[who.uid].error == ""
            assert (await kubelet.unprepare(who)).claims[who.uid].error == ""
        await kubelet.close()
    assert leftovers(s) == []
    assert checkpoint_records(s) == {}
