"""Webhook benchmarks (targets in docs/benchmarks.md): conversion in process, and HTTPS under load from another process.

1. In-process conversion latency, per seed pod and for a pod without accelerators (the fast path):
   warm (the memos of :class:`webhook.convert.Converter` hit, as for the replicas of one workload)
   and cold (memos off: every pod is new).
2. HTTPS: ``python -m webhook serve`` in its own process pinned to one core, the API server
   stand-in in a third process, and this process as the load generator: open loop at 1,000
   reviews/s over keep-alive connections (latency counted from the scheduled send time, so
   queueing is not hidden), then a closed loop to find the most reviews/s one core answers.

Targets: conversion p99 <= 200 us, fast path <= 20 us, HTTPS p99 <= 2 ms at 1,000 reviews/s.
Writes ``.bench/webhook.md``. ``python -m bench.webhook --quick`` runs a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from .common import free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".bench" / "webhook.md"
TARGET_CONVERT_P99_US = 200.0
TARGET_FAST_P99_US = 20.0
TARGET_HTTPS_P99_MS = 2.0
RATE = 1000


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def seed_pods() -> list[dict[str, Any]]:
    with open(ROOT / "examples" / "seed-pods.yaml", encoding="utf-8") as handle:
        return [d for d in yaml.safe_load_all(handle) if d]


def plain_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {"name": "web", "image": "nginx", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                 "env": [{"name": "MODE", "value": "prod"}]},
                {"name": "sidecar", "image": "envoy", "resources": {"requests": {"cpu": "100m"}}},
            ]
        },
    }  # fmt: skip


# --- 1. in process ------------------------------------------------------------------------------------


def time_convert(converter: Any, pod: dict[str, Any], inventory: Any, n: int) -> tuple[list[float], list[float]]:
    """Per-call wall time and thread CPU time (us), each sorted. CPU time leaves out the time the
    process was preempted by others, i.e. it is the latency on a core of its own."""
    for _ in range(min(200, n)):
        converter.convert(pod, "default", inventory)
    wall, cpu = [], []
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for _ in range(n):
        c0 = cpu_clock()
        t0 = clock()
        converter.convert(pod, "default", inventory)
        t1 = clock()
        c1 = cpu_clock()
        wall.append((t1 - t0) / 1000)
        cpu.append((c1 - c0) / 1000)
    wall.sort()
    cpu.sort()
    return wall, cpu


def bench_in_process(n: int) -> list[dict[str, Any]]:
    import vendors
    from webhook.convert import Converter
    from webhook.inventory import load_file

    inventory = load_file(str(ROOT / "examples" / "inventory.yaml"))
    rows = []
    pods = [(p["metadata"]["name"], p) for p in seed_pods()] + [("no accelerator (fast path)", plain_pod())]
    for memo in (True, False):
        converter = Converter(vendors.admission_vendors())
        if not memo:
            converter.memo_size = 0
        for name, pod in pods:
            result = converter.convert(pod, "default", inventory)
            outcome = "converted" if result.patch else ("allowed" if result.allowed else "denied")
            wall, cpu = time_convert(converter, pod, inventory, n)
            rows.append(
                {
                    "pod": name,
                    "memo": memo,
                    "outcome": outcome,
                    "p50": percentile(wall, 50),
                    "p99": percentile(wall, 99),
                    "cpu_p50": percentile(cpu, 50),
                    "cpu_p99": percentile(cpu, 99),
                }
            )
    return rows


# --- 2. over HTTPS ------------------------------------------------------------------------------------


def cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return []


@contextlib.contextmanager
def process(args: list[str], *, env: dict[str, str], log: Path, cpu: int | None) -> Iterator[subprocess.Popen[bytes]]:
    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    with open(log, "wb") as sink:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=pin)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``), for CPU cost per review."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def review_bodies(count: int) -> list[bytes]:
    """Reviews cycling through the seed pods and, every other one, a pod without accelerators."""
    pods = seed_pods()
    bodies = []
    for i in range(count):
        pod = plain_pod() if i % 2 else pods[(i // 2) % len(pods)]
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {"username": "bench"},
                "object": pod,
                "dryRun": False,
            },
        }
        bodies.append(json.dumps(review).encode())
    return bodies


async def _wait_ready(session: Any, url: str, ctx: ssl.SSLContext, proc: subprocess.Popen[bytes]) -> None:
    import aiohttp

    for _ in range(400):
        if proc.poll() is not None:
            raise RuntimeError(f"the webhook exited with {proc.returncode}; see .bench/webhook-serve.log")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(url + "/readyz", ssl=ctx) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError("the webhook never became ready; see .bench/webhook-serve.log")


class Connection:
    """One keep-alive HTTPS connection speaking just enough HTTP/1.1 (the load generator must cost
    little CPU, or it, not the server, sets the pace on a small machine)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader, self.writer, self.head = reader, writer, head

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
        head = b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
        return cls(reader, writer, head)

    async def post(self, body: bytes) -> bool:
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in headers.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        answer = await self.reader.readexactly(length)
        return headers.startswith(b"HTTP/1.1 200") and b'"response"' in answer

    def close(self) -> None:
        self.writer.close()


async def open_loop(
    port: int, ctx: ssl.SSLContext, bodies: list[bytes], rate: float, connections: int
) -> dict[str, Any]:
    latencies: list[float] = []
    service: list[float] = []
    errors = 0
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    conns = [await Connection.open(port, ctx) for _ in range(connections)]
    for conn in conns:
        pool.put_nowait(conn)
    for i, body in enumerate(bodies[:200]):  # warm up: connections, templates, memos
        await conns[i % connections].post(body)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    client_cpu = time.process_time()

    async def one(due: float, body: bytes) -> None:
        nonlocal errors
        conn = await pool.get()
        sent = loop.time()
        try:
            ok = await conn.post(body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            ok = False
        pool.put_nowait(conn)
        if not ok:
            errors += 1
        now = loop.time()
        latencies.append((now - due) * 1000)
        service.append((now - sent) * 1000)

    # Open loop: each request is started at its due time by one dispatcher (creating all of them up
    # front would itself delay the first sends by the time it takes to schedule thousands of tasks).
    tasks = []
    for i, body in enumerate(bodies):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, body)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    client_cpu = time.process_time() - client_cpu
    for conn in conns:
        conn.close()
    latencies.sort()
    service.sort()
    return {
        "service_p50": percentile(service, 50),
        "service_p99": percentile(service, 99),
        "client_us": client_cpu / len(bodies) * 1e6,
        "offered": rate,
        "achieved": len(bodies) / elapsed,
        "count": len(bodies),
        "errors": errors,
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": latencies[-1],
    }


async def closed_loop(port: int, ctx: ssl.SSLContext, bodies: list[bytes], concurrency: int, seconds: float) -> float:
    conns = [await Connection.open(port, ctx) for _ in range(concurrency)]
    done = 0
    end = time.monotonic() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.monotonic() < end:
            await conns[k].post(bodies[i % len(bodies)])
            done += 1
            i += concurrency

    start = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    rate = done / (time.monotonic() - start)
    for conn in conns:
        conn.close()
    return rate


def bench_https(seconds: float) -> dict[str, Any]:
    import trustme

    bench_dir = ROOT / ".bench"
    bench_dir.mkdir(exist_ok=True)
    cores = cpus()
    server_cpu = cores[0] if cores else None
    other_cpu = cores[-1] if len(cores) > 1 else None
    if other_cpu is not None:
        os.sched_setaffinity(0, {other_cpu})
    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(f"{tmp}/tls.crt")
        cert.private_key_pem.write_to_path(f"{tmp}/tls.key")
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        api_port, port = free_port(), free_port()
        kubeconfig = f"{tmp}/kubeconfig"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        api_args = [sys.executable, "-m", "e2e.apiserver", "--port", str(api_port), "--kubeconfig-out", kubeconfig,
                    "--log-level", "WARNING"]  # fmt: skip
        with process(api_args, env=base_env, log=bench_dir / "webhook-apiserver.log", cpu=other_cpu):
            for _ in range(400):
                if os.path.exists(kubeconfig):
                    break
                time.sleep(0.05)
            env = {
                **base_env,
                "TESSERA_HOST": "127.0.0.1",
                "TESSERA_PORT": str(port),
                "TESSERA_TLS_CERT_FILE": f"{tmp}/tls.crt",
                "TESSERA_TLS_KEY_FILE": f"{tmp}/tls.key",
                "TESSERA_KUBECONFIG": kubeconfig,
                "TESSERA_LOG_FORMAT": "json",
            }
            serve = [sys.executable, "-m", "webhook", "serve"]
            with process(serve, env=env, log=bench_dir / "webhook-serve.log", cpu=server_cpu) as proc:
                url = f"https://127.0.0.1:{port}"
                bodies = review_bodies(int(RATE * seconds) + 200)

                async def run() -> tuple[dict[str, Any], float, float]:
                    import aiohttp

                    async with aiohttp.ClientSession() as session:
                        await _wait_ready(session, url, ctx, proc)
                    # The load generator must not stall its own schedule: no cyclic GC pass (a full
                    # one over this process's heap takes tens of ms) while it sends.
                    gc.collect()
                    gc.freeze()
                    gc.disable()
                    before = cpu_seconds(proc.pid)
                    try:
                        at_rate = await open_loop(port, ctx, bodies, RATE, connections=16)
                    finally:
                        gc.enable()
                    used = cpu_seconds(proc.pid) - before
                    peak = await closed_loop(port, ctx, bodies, concurrency=8, seconds=max(2.0, seconds / 2))
                    return at_rate, peak, used / (at_rate["count"] + 200) * 1e6

                at_rate, peak, cpu_per_review = asyncio.run(run())
    return {**at_rate, "peak": peak, "cpu_us": cpu_per_review, "server_cpu": server_cpu, "client_cpu": other_cpu}


# --- report ---------------------------------------------------------------------------------------------


def report(rows: list[dict[str, Any]], https: dict[str, Any] | None, n: int, command: str) -> str:
    seeds = [r for r in rows if r["outcome"] == "converted"]
    fast = [r for r in rows if r["pod"].startswith("no accelerator")]

    def worst(key: str, memo: bool, among: list[dict[str, Any]]) -> float:
        return max((r[key] for r in among if r["memo"] == memo), default=float("nan"))

    warm_p99, warm_cpu = worst("p99", True, seeds), worst("cpu_p99", True, seeds)
    cold_p99, cold_cpu = worst("p99", False, seeds), worst("cpu_p99", False, seeds)
    fast_p99, fast_cpu = max(r["p99"] for r in fast), max(r["cpu_p99"] for r in fast)

    def ok(value: float, target: float) -> str:
        return "met" if value <= target else "**missed**"

    lines = [
        "# Webhook benchmark",
        "",
        f"Command: `{command}`; {time.strftime('%Y-%m-%d %H:%M')}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end (a shared machine).",
        "",
        "## Summary against the targets (docs/benchmarks.md)",
        "",
        "| Target | Measured | |",
        "|---|---|---|",
        f"| conversion p99 <= {TARGET_CONVERT_P99_US:.0f} us, worst seed pod, warm | wall {warm_p99:.1f} us, "
        f"CPU {warm_cpu:.1f} us | {ok(warm_p99, TARGET_CONVERT_P99_US)} wall, "
        f"{ok(warm_cpu, TARGET_CONVERT_P99_US)} CPU |",
        f"| same, cold (memos off) | wall {cold_p99:.1f} us, CPU {cold_cpu:.1f} us | "
        f"{ok(cold_p99, TARGET_CONVERT_P99_US)} wall, {ok(cold_cpu, TARGET_CONVERT_P99_US)} CPU |",
        f"| no-accelerator fast path <= {TARGET_FAST_P99_US:.0f} us (p99) | wall {fast_p99:.1f} us, "
        f"CPU {fast_cpu:.1f} us | {ok(fast_p99, TARGET_FAST_P99_US)} wall, {ok(fast_cpu, TARGET_FAST_P99_US)} CPU |",
    ]
    if https:
        lines.append(
            f"| HTTPS p99 <= {TARGET_HTTPS_P99_MS:g} ms at {RATE:,} reviews/s, one core | p99 {https['p99']:.2f} ms "
            f"({https['achieved']:.0f} reviews/s achieved, {https['errors']} errors) | "
            f"{ok(https['p99'], TARGET_HTTPS_P99_MS)} |"
        )
    lines += [
        "",
        f"## In-process conversion ({n:,} calls per pod)",
        "",
        "Warm: the converter's memos hit (the replicas of one workload). Cold: memos off, every pod new. "
        "Wall: elapsed time per call, preemption by other processes included. CPU: the thread's CPU time "
        "per call, i.e. the latency on a core of its own.",
        "",
        "| Pod | Outcome | warm wall p50 / p99 us | warm CPU p50 / p99 us | cold wall p50 / p99 us "
        "| cold CPU p50 / p99 us |",
        "|---|---|---|---|---|---|",
    ]
    for warm in (r for r in rows if r["memo"]):
        cold = next(r for r in rows if not r["memo"] and r["pod"] == warm["pod"])
        lines.append(
            f"| {warm['pod']} | {warm['outcome']} | {warm['p50']:.1f} / {warm['p99']:.1f} | "
            f"{warm['cpu_p50']:.1f} / {warm['cpu_p99']:.1f} | {cold['p50']:.1f} / {cold['p99']:.1f} | "
            f"{cold['cpu_p50']:.1f} / {cold['cpu_p99']:.1f} |"
        )
    if https:
        lines += [
            "",
            "## HTTPS (`python -m webhook serve`, TLS 1.3, keep-alive)",
            "",
            f"Server pinned to CPU {https['server_cpu']}; load generator and API server stand-in on CPU "
            f"{https['client_cpu']}. Half the reviews are seed pods (converted, denied or refused by vendor, "
            f"templates created once then known), half pods without accelerators. Latency counts from the "
            f"scheduled send time.",
            "",
            "| Offered | Achieved | Reviews | Errors | p50 ms | p90 ms | p99 ms | max ms "
            "| send-to-answer p50 / p99 ms |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {https['offered']:.0f}/s | {https['achieved']:.0f}/s | {https['count']:,} | {https['errors']} | "
            f"{https['p50']:.2f} | {https['p90']:.2f} | {https['p99']:.2f} | {https['max']:.2f} | "
            f"{https['service_p50']:.2f} / {https['service_p99']:.2f} |",
            "",
            f"CPU time per review (user + system): server {https['cpu_us']:.0f} us (from /proc), load generator "
            f"{https['client_us']:.0f} us. Closed loop (8 in flight): {https['peak']:.0f} reviews/s on one core.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and a shorter load run")
    parser.add_argument("--no-https", action="store_true", help="in-process conversion only")
    args = parser.parse_args(argv)
    n = 2_000 if args.quick else 20_000
    seconds = 3.0 if args.quick else 10.0
    command = "python -m bench.webhook" + (" --quick" if args.quick else "") + (" --no-https" if args.no_https else "")
    gc.collect()
    rows = bench_in_process(n)
    https = None if args.no_https else bench_https(seconds)
    text = report(rows, https, n, command)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
