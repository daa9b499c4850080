"""What a tenant can put in its claim directory never hangs, blinds or blocks the driver.

The claim directory is mounted read-write into the claim's containers, so the tests write there what
a hostile container would: a FIFO in place of its region file, links to files and directories
outside, sockets, directories without write permission, trees deeper than anything a recursive
walk survives, files of another user. The driver runs the way the chart runs it where permissions
matter: as root without any capability (``setpriv``), over its real gRPC socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from pathlib import Path

import aiohttp
import pytest
from grpc_health.v1 import health_pb2

from dra_driver.identifiers import claim_ref_problem, label_problem, subdomain_problem, uid_problem
from dra_driver.prepare import PREPARE_WORKERS, REMOVED_PREFIX
from e2e.apiserver import APIServer
from tessera_common import safefs

from .helpers import (
    claim,
    driver_args,
    driver_log,
    exists,
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
from .test_observability import check, free_port, sample

OUTSIDE_TEXT = "the tenant wants this gone"


def who(obj: dict[str, object]) -> Claim:
    meta = obj["metadata"]
    assert isinstance(meta, dict)
    return Claim(str(meta["namespace"]), str(meta["name"]), str(meta["uid"]))


def region_path(claim_dir: str) -> str:
    return os.path.join(claim_dir, "gpu.cache")  # the nvidia vendor names it after the request


async def scrape_status(port: int, timeout: float) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return resp.status, await resp.text()


async def test_a_fifo_or_link_in_place_of_the_region_never_blocks_a_scrape_or_a_prepare(
    api: APIServer, root: str, kubeconfig: str
) -> None:
    port = free_port()
    s = settings(root, kubeconfig, "2xH100", "--metrics-port", str(port), "--listen-address", "127.0.0.1")
    tenants = [claim(f"tenant-{i}", [result("gpu-0", memory="1Gi")]) for i in range(3)]
    later = [claim(f"later-{i}", [result("gpu-1", memory="1Gi")]) for i in range(3)]
    for c in (*tenants, *later):
        api.store.put(c)
    secret = os.path.join(root, "host-secret")
    write_text(secret, OUTSIDE_TEXT)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        answer = await kubelet.prepare(*(who(c) for c in tenants))
        assert all(a.error == "" for a in answer.claims.values()), answer
        dirs = [os.path.join(s.host_lib_dir, "claims", who(c).uid) for c in tenants]
        plant_bad_regions(dirs, secret)

        # More scrapes at once than any worker pool has threads: every one answers, at once.
        results = await asyncio.wait_for(
            asyncio.gather(*(scrape_status(port, timeout=10) for _ in range(3 * PREPARE_WORKERS))), timeout=20
        )
        statuses = [status for status, _ in results]
        assert 200 in statuses and set(statuses) <= {200, 503}, statuses
        text = next(body for status, body in results if status == 200)
        assert sample(text, "tessera_container_regions", state="invalid") == 3
        assert sample(text, "tessera_container_regions", state="ok") == 0
        assert OUTSIDE_TEXT not in text

        # Prepares of other claims go through while (and after) the tenants' files are scraped.
        answer = await asyncio.wait_for(kubelet.prepare(*(who(c) for c in later)), timeout=10)
        assert all(a.error == "" for a in answer.claims.values()), answer
        status, _ = await scrape_status(port, timeout=10)
        assert status == 200
        await kubelet.close()
    assert read_text(secret) == OUTSIDE_TEXT


def test_a_head_read_reads_only_the_head_and_refuses_what_a_full_read_refuses(tmp_path: Path) -> None:
    """What a scrape uses for a region: the first bytes and the file's size, never more; a FIFO, a
    link or an oversized file is refused at once (the FIFO never waited on)."""
    root = str(tmp_path)
    with open(tmp_path / "region", "wb") as f:
        f.write(b"h" * 3000 + b"t" * 5000)
    assert safefs.read_head_beneath(root, "region", length=3000, max_bytes=8000) == (b"h" * 3000, 8000)
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "region", tmp_path / "link")
    with open(tmp_path / "huge", "wb") as f:
        f.truncate(1 << 40)
    for name, why in (("fifo", "not a regular file"), ("link", "symbolic link"), ("huge", "more than")):
        with pytest.raises(safefs.UnsafeFileError, match=why):
            safefs.read_head_beneath(root, name, length=3000, max_bytes=8000)
    with pytest.raises(ValueError):
        safefs.read_head_beneath(root, "../region", length=3000, max_bytes=8000)


def plant_bad_regions(dirs: list[str], secret: str) -> None:
    for d in dirs:  # the driver created each region empty; whatever replaced it is what is read
        os.unlink(region_path(d))
    os.mkfifo(region_path(dirs[0]))  # an open() for reading would wait for a writer forever
    os.symlink(secret, region_path(dirs[1]))  # never followed
    with open(region_path(dirs[2]), "wb") as f:  # far larger than a region: never read
        f.truncate(1 << 40)


def plant_odd_files(claim_dir: str, outside: str, *, depth: int = 300) -> None:
    """Everything the issue's tenant left behind, and worse."""
    base = Path(claim_dir)
    (base / "junk").mkdir()
    (base / "junk" / "f").write_text("x")
    os.chmod(base / "junk", 0o555)  # mkdir junk; touch junk/f; chmod 555 junk
    os.mkfifo(base / "fifo")
    os.symlink(outside, base / "link-to-outside-dir")
    os.symlink(os.path.join(outside, "precious"), base / "link-to-outside-file")
    os.symlink("/", base / "link-to-root")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(base / "sock"))
    locked = base / "locked"
    locked.mkdir()
    (locked / "inner").mkdir()
    (locked / "inner" / "f").write_text("x")
    os.chmod(locked / "inner", 0)
    os.chmod(locked, 0o100)  # search only: cannot be listed
    (base / "sticky").mkdir()
    (base / "sticky" / "f").write_text("x")
    os.chmod(base / "sticky", 0o1555)
    deep = os.open(claim_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):  # deeper than PATH_MAX allows to name in one path
            os.mkdir("d" * 40, dir_fd=deep)
            child = os.open("d" * 40, os.O_RDONLY | os.O_DIRECTORY, dir_fd=deep)
            os.close(deep)
            deep = child
            if level % 50 == 49:
                os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=deep)
        os.fchmod(deep, 0o500)
    finally:
        os.close(deep)


async def test_unprepare_removes_whatever_the_tenant_left_without_capabilities(
    api: APIServer, root: str, kubeconfig: str
) -> None:
    args = driver_args(root, kubeconfig, "2xH100")
    s = settings(root, kubeconfig, "2xH100")
    c = claim("odd", [result("gpu-0", memory="1Gi")])
    api.store.put(c)
    outside = os.path.join(root, "outside")
    write_text(os.path.join(outside, "precious"), OUTSIDE_TEXT)
    async with plugin_process(args, capless=True) as proc:
        await wait_ready(s, proc)
        status = read_text(f"/proc/{proc.pid}/status")
        assert "CapEff:\t0000000000000000" in status, "the driver must run without capabilities here"
        kubelet = await Kubelet(s.registry_dir).register()
        assert (await kubelet.prepare(who(c))).claims[who(c).uid].error == ""
        claim_dir = os.path.join(s.host_lib_dir, "claims", who(c).uid)
        plant_odd_files(claim_dir, outside)
        answer = await asyncio.wait_for(kubelet.unprepare(who(c)), timeout=30)
        await kubelet.close()
        assert answer.claims[who(c).uid].error == "", driver_log(proc)
    assert not exists(claim_dir)
    assert os.listdir(os.path.join(s.host_lib_dir, "claims")) == []
    assert read_text(os.path.join(outside, "precious")) == OUTSIDE_TEXT
    assert os.listdir(outside) == ["precious"]


async def test_a_directory_of_another_user_is_set_aside_and_the_unprepare_completes(
    api: APIServer, root: str, kubeconfig: str
) -> None:
    """A non-root tenant's unwritable directory: without CAP_FOWNER nobody but its owner may empty it.
    The share is released all the same; the directory leaves every container's view."""
    args = driver_args(root, kubeconfig, "2xH100")
    s = settings(root, kubeconfig, "2xH100")
    c = claim("other-user", [result("gpu-0", memory="1Gi")])
    api.store.put(c)
    async with plugin_process(args, capless=True) as proc:
        await wait_ready(s, proc)
        kubelet = await Kubelet(s.registry_dir).register()
        assert (await kubelet.prepare(who(c))).claims[who(c).uid].error == ""
        claim_dir = os.path.join(s.host_lib_dir, "claims", who(c).uid)
        plant_foreign_dir(claim_dir)
        answer = await asyncio.wait_for(kubelet.unprepare(who(c)), timeout=30)
        assert answer.claims[who(c).uid].error == ""
        assert (await kubelet.prepare(who(c))).claims[who(c).uid].error == ""  # prepared again, from scratch
        assert (await kubelet.unprepare(who(c))).claims[who(c).uid].error == ""
        await kubelet.close()
        log = driver_log(proc)
    assert "set aside" in log and "CAP_FOWNER" in log
    claims = os.path.join(s.host_lib_dir, "claims")
    (aside,) = [n for n in os.listdir(claims) if n.startswith(REMOVED_PREFIX + who(c).uid)]
    assert not exists(claim_dir)
    # With the permission back (here: a driver that has every capability), the next start removes it.
    os.chmod(os.path.join(claims, aside, "theirs"), 0o755)
    async with running_driver(s):
        pass
    assert os.listdir(claims) == []


def plant_foreign_dir(claim_dir: str) -> None:
    """What a container running as uid 1000 leaves: its directory, not writable, not ours."""
    theirs = Path(claim_dir, "theirs")
    theirs.mkdir()
    (theirs / "f").write_text("x")
    os.chown(theirs / "f", 1000, 1000)
    os.chown(theirs, 1000, 1000)
    os.chmod(theirs, 0o555)


@pytest.mark.parametrize(
    ("namespace", "name", "uid"),
    [
        ("default", "escape", "../../x"),
        ("default", "escape", "0b6f4c1e-9a2d-4f5e-8c3b-7d1a2e4f6a8b/../../x"),
        ("default", "escape", "x"),
        ("../..", "escape", "0b6f4c1e-9a2d-4f5e-8c3b-7d1a2e4f6a8b"),
        ("default", "a/../../b", "0b6f4c1e-9a2d-4f5e-8c3b-7d1a2e4f6a8b"),
    ],
)
async def test_a_path_traversal_claim_is_refused_and_touches_nothing(
    api: APIServer, root: str, kubeconfig: str, namespace: str, name: str, uid: str
) -> None:
    s = settings(root, kubeconfig, "2xH100")
    victims = [f"{root}/x/precious", f"{s.host_lib_dir}/x/precious", f"{s.host_lib_dir}/claims/x/precious"]
    for victim in victims:
        write_text(victim, OUTSIDE_TEXT)
    os.makedirs(s.cdi_dir, exist_ok=True)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        bad = Claim(namespace, name, uid)
        unprepared = (await kubelet.unprepare(bad)).claims[uid].error
        prepared = (await kubelet.prepare(bad)).claims[uid].error
        await kubelet.close()
    if namespace == "default" and name == "escape":
        assert unprepared.startswith("refusing to unprepare ResourceClaim default/escape: claim UID"), unprepared
    assert prepared.startswith("refusing to prepare ResourceClaim"), prepared
    assert "is not a Kubernetes UID" in prepared or "is not an RFC 1123" in prepared
    for victim in victims:
        assert read_text(victim) == OUTSIDE_TEXT
    assert os.listdir(s.cdi_dir) == []


def test_identifier_formats() -> None:
    assert uid_problem("0b6f4c1e-9a2d-4f5e-8c3b-7d1a2e4f6a8b") == ""
    for bad in ("", "..", "../../x", "0b6f4c1e-9a2d-4f5e-8c3b-7d1a2e4f6a8", "0b6f4c1e-9a2d-4f5e-8c3b-7d1a2e4f6a8b\n"):
        assert "is not a Kubernetes UID" in uid_problem(bad), bad
    assert label_problem("request", "gpu-0") == ""
    assert label_problem("request", "a" * 64) and label_problem("request", "Main") and label_problem("request", "a.b")
    assert subdomain_problem("name", "pod-0.main") == ""
    assert subdomain_problem("name", "a/b") and subdomain_problem("name", "..")
    assert claim_ref_problem("default", "c", "0b6f4c1e-9a2d-4f5e-8c3b-7d1a2e4f6a8b") == ""


async def test_liveness_fails_while_the_prepare_workers_are_wedged(api: APIServer, root: str, kubeconfig: str) -> None:
    port = free_port()
    s = settings(root, kubeconfig, "2xH100", "--healthz-port", str(port), "--listen-address", "127.0.0.1")
    c = claim("blocked", [result("gpu-0", memory="1Gi")])
    api.store.put(c)
    async with running_driver(s) as driver:
        assert (await check(port, "liveness")).status == health_pb2.HealthCheckResponse.SERVING
        assert driver.preparer is not None
        release = threading.Event()
        # Whatever wedges them (a hung disk, a bug): every prepare worker stops coming back.
        stuck = [driver.preparer._executor.submit(release.wait) for _ in range(PREPARE_WORKERS)]
        kubelet = await Kubelet(s.registry_dir).register()
        pending = asyncio.ensure_future(kubelet.prepare(who(c)))
        assert (await check(port, "liveness")).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not pending.done()
        release.set()
        for f in stuck:
            await asyncio.wrap_future(f)
        assert (await pending).claims[who(c).uid].error == ""
        assert (await check(port, "liveness")).status == health_pb2.HealthCheckResponse.SERVING
        await kubelet.close()


async def test_vendor_files_replaced_by_the_tenant_are_restored_not_followed(
    api: APIServer, root: str, kubeconfig: str
) -> None:
    """Hygon's vdev config lives in a directory of the claim directory: a tenant that swaps it for a
    link to a host directory, or the file for a FIFO, gets its own file back on the next prepare, and
    the host directory is never written."""
    s = settings(root, kubeconfig, "1xZ100", vendor="hygon")
    driver = "hygon.tessera.dev"
    share = result("dcu-0", memory="8Gi", cores="30", driver=driver)
    c = claim("vdev", [share], [request(capacity={"memory": "8Gi", "cores": "30"})])
    c["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] = driver
    api.store.put(c)
    outside = os.path.join(root, "outside")
    os.makedirs(outside)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        assert (await kubelet.prepare(who(c))).claims[who(c).uid].error == ""
        claim_dir = os.path.join(s.host_lib_dir, "claims", who(c).uid)
        (vdev_dir,) = [os.path.join(claim_dir, n) for n in os.listdir(claim_dir) if n.startswith("hygon-vdev-")]
        (conf,) = [os.path.join(vdev_dir, n) for n in os.listdir(vdev_dir)]
        content = read_text(conf)
        os.unlink(conf)
        os.mkfifo(conf)
        assert (await asyncio.wait_for(kubelet.prepare(who(c)), timeout=10)).claims[who(c).uid].error == ""
        assert stat.S_ISREG(os.lstat(conf).st_mode) and read_text(conf) == content
        os.rename(vdev_dir, os.path.join(claim_dir, "moved"))
        os.symlink(outside, vdev_dir)
        assert (await asyncio.wait_for(kubelet.prepare(who(c)), timeout=10)).claims[who(c).uid].error == ""
        assert not stat.S_ISLNK(os.lstat(vdev_dir).st_mode) and read_text(conf) == content
        assert os.listdir(outside) == []
        assert (await kubelet.unprepare(who(c))).claims[who(c).uid].error == ""
        await kubelet.close()
    assert not exists(claim_dir)


async def test_a_grpc_claim_with_a_bad_uid_is_a_clear_per_claim_error(
    api: APIServer, root: str, kubeconfig: str
) -> None:
    """One bad claim in a request fails alone; the good one is prepared."""
    s = settings(root, kubeconfig, "2xH100")
    good = claim("good", [result("gpu-0", memory="1Gi")])
    api.store.put(good)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        answer = await kubelet.prepare(who(good), Claim("default", "bad", "../../x"))
        await kubelet.close()
    assert answer.claims[who(good).uid].error == ""
    assert "claim UID '../../x' is not a Kubernetes UID" in answer.claims["../../x"].error
