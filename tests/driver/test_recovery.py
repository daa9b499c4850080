"""The plugin killed (SIGKILL) after each step of prepare and unprepare recovers on restart;
1,000 prepare/unprepare cycles leave nothing behind; SIGTERM removes the sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

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
    driver_log,
    exists,
    files_under,
    plugin_process,
    read_text,
    request,
    result,
    running_driver,
    settings,
    wait_ready,
    write_text,
)
from .kubelet import Claim, Kubelet

PREPARE_STEPS = [f for f in FAILPOINTS if not f.startswith("unprepare-")]
UNPREPARE_STEPS = [f for f in FAILPOINTS if f.startswith("unprepare-")]


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


@pytest.mark.parametrize("flag", ["--metrics-port", "--healthz-port"])
async def test_a_taken_port_stops_start_up_before_the_kubelet_sees_the_plugin(
    api: APIServer, root: str, kubeconfig: str, flag: str
) -> None:
    s = settings(root, kubeconfig)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = driver_args(root, kubeconfig, "2xH100", flag, str(port), "--listen-address", "127.0.0.1")
        async with plugin_process(args) as proc:
            code = await asyncio.wait_for(proc.wait(), timeout=30)
            log = driver_log(proc)
    assert code == 1, log
    assert f"cannot listen on 127.0.0.1:{port}" in log and f"give {flag} a free one" in log, log
    assert "Traceback" not in log
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


async def test_both_records_are_fsynced_before_the_step_they_guard(
    api: APIServer, root: str, kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PrepareStarted`` (file and directory) is on disk before the claim directory is created;
    ``PrepareCompleted`` before the kubelet is answered."""
    s = settings(root, kubeconfig, "2xH100")
    c = claim("durable", [result("gpu-0", memory="1Gi")])
    api.store.put(c)
    uid = c["metadata"]["uid"]
    steps: list[str] = []
    real_fsync, real_mkdir, real_replace = os.fsync, os.mkdir, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        steps.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")

    def mkdir(path: str, *args: object, **kw: object) -> None:
        real_mkdir(path, *args, **kw)  # type: ignore[arg-type]
        steps.append(f"mkdir {path}")

    def replace(src: str, dst: str, *args: object, **kw: object) -> None:
        record = json.loads(read_text(src)) if dst == os.path.join(s.checkpoint_dir, f"{uid}.json") else None
        real_replace(src, dst, *args, **kw)  # type: ignore[arg-type]
        if record is not None:
            steps.append(f"record {record['claim']['state']}")

    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "replace", replace)
        answer = (await kubelet.prepare(Claim("default", "durable", uid))).claims[uid]
        steps.append("answered")
        monkeypatch.undo()
        await kubelet.close()
    assert answer.error == ""
    ckpt = s.checkpoint_dir
    started = steps.index("record PrepareStarted")
    completed = steps.index("record PrepareCompleted")
    claim_dir = steps.index(f"mkdir {uid}")
    assert steps[started - 1].startswith(f"fsync {ckpt}/.tessera-tmp-"), steps  # the file, before its rename
    assert steps[started + 1] == f"fsync {ckpt}", steps  # the rename
    assert started < claim_dir < completed, steps
    assert steps[completed - 1].startswith(f"fsync {ckpt}/.tessera-tmp-") and steps[completed + 1] == f"fsync {ckpt}"
    assert completed + 1 < steps.index("answered")


@pytest.mark.parametrize(
    ("damage", "keep_spec"),
    [("empty", True), ("truncated", True), ("garbage", True), ("empty", False), ("truncated", False)],
)
async def test_a_damaged_record_is_recovered_never_fatal(
    api: APIServer, root: str, kubeconfig: str, damage: str, keep_spec: bool
) -> None:
    """A zero-length, truncated or garbage record (a power cut before fsync on an older version, a
    full disk, a bad sector) is moved aside and the driver starts. With its CDI spec intact, the claim
    rolls forward: its files stay, the next prepare re-reads it from the API server, the unprepare
    removes everything. Without a spec the unfinished prepare is rolled back."""
    args = driver_args(root, kubeconfig, "2xH100")
    s = settings(root, kubeconfig, "2xH100")
    c = claim("damaged", [result("gpu-0", memory="2Gi")])
    other = claim("healthy", [result("gpu-1", memory="1Gi")])
    api.store.put(c)
    api.store.put(other)
    mine, theirs = (Claim("default", o["metadata"]["name"], o["metadata"]["uid"]) for o in (c, other))
    async with plugin_process(args) as proc:
        await wait_ready(s, proc)
        kubelet = await Kubelet(s.registry_dir).register()
        first = await kubelet.prepare(mine, theirs)
        assert all(a.error == "" for a in first.claims.values())
        await kubelet.close()
    record = os.path.join(s.checkpoint_dir, f"{mine.uid}.json")
    spec = os.path.join(s.cdi_dir, f"k8s.{DRIVER}-claim_{mine.uid}.json")
    claim_dir = os.path.join(s.host_lib_dir, "claims", mine.uid)
    text = read_text(record)
    write_text(record, {"empty": "", "truncated": text[: len(text) // 2], "garbage": "\0\x17garbage\n"}[damage])
    if not keep_spec:
        os.unlink(spec)

    async with plugin_process(args) as proc:
        await wait_ready(s, proc)  # it starts
        assert exists(record + ".damaged") and not exists(record)
        assert exists(claim_dir) == keep_spec and exists(spec) == keep_spec
        kubelet = await Kubelet(s.registry_dir).register()
        # The healthy claim is untouched and answered from its record.
        assert (await kubelet.prepare(theirs)).claims[theirs.uid] == first.claims[theirs.uid]
        again = (await kubelet.prepare(mine)).claims[mine.uid]
        assert again == first.claims[mine.uid]
        assert checkpoint_records(s)[mine.uid]["state"] == "PrepareCompleted"
        assert (await kubelet.unprepare(mine, theirs)).claims[mine.uid].error == ""
        await kubelet.close()
        log = driver_log(proc)
    assert "checkpoint record damaged" in log
    assert ("kept" in log) == keep_spec and ("rolled back" in log) == (not keep_spec)
    assert leftovers(s) == [f"checkpoint/{mine.uid}.json.damaged"]


async def test_a_damaged_record_of_an_unprepared_claim_leaves_nothing(
    api: APIServer, root: str, kubeconfig: str
) -> None:
    """The kubelet unprepares a claim whose record was lost: its files, found by UID, go."""
    args = driver_args(root, kubeconfig, "2xH100")
    s = settings(root, kubeconfig, "2xH100")
    c = claim("gone", [result("gpu-0", memory="2Gi")])
    api.store.put(c)
    who = Claim("default", "gone", c["metadata"]["uid"])
    async with plugin_process(args) as proc:
        await wait_ready(s, proc)
        kubelet = await Kubelet(s.registry_dir).register()
        assert (await kubelet.prepare(who)).claims[who.uid].error == ""
        await kubelet.close()
    write_text(os.path.join(s.checkpoint_dir, f"{who.uid}.json"), "")
    api.store.delete("resourceclaims", "default", "gone")
    async with plugin_process(args) as proc:
        await wait_ready(s, proc)
        kubelet = await Kubelet(s.registry_dir).register()
        assert (await kubelet.unprepare(who)).claims[who.uid].error == ""
        await kubelet.close()
    assert leftovers(s) == [f"checkpoint/{who.uid}.json.damaged"]
