"""Placement policies: a seeded simulator, and what occupancy costs at 100 pods/s. Writes ``.bench/placement.md``.

``python -m bench.placement [--quick] [--seeds N] [--spread-seeds N] [--spread-variants] [--api-seconds S]``

1. **Placement.** A reproducible trace (per seed) of pods arriving (Poisson) and leaving (exponential
   lifetimes) on 16 nodes x 8 A100s, mixing whole cards, two whole cards, halves (memory and cores),
   quarters and two halves. Each pod is written the HAMi way and converted by the real webhook
   (``webhook.convert``) with no policy (first fit), binpack (node and GPU) and spread (node and GPU);
   its claim is allocated by the harness allocator (``e2e.allocator``, kube-scheduler's rules with the
   1.35 node score, ties broken at random as kube-scheduler does) from slices built by the driver's
   code (``dra_driver.slices`` with ``dra_driver.occupancy``'s attributes, updated at most once per
   second per node, as the driver does, so the simulated scheduler sees stale occupancy). The anchor
   re-implements HAMi's scores (``pkg/scheduler/policy``: device score with the request, node score
   from the node's use, binpack highest first, spread lowest first) with exact, fresh usage.
   Reported: pods placed before the first rejection; over the arrivals every run placed (the common
   window) the mean free memory stranded on partly used cards, the mean number of idle cards, and the
   evenness of card and node load (Jain's index, 1 = perfectly even); the harness allocator's time
   per pod. **Spread over many seeds:** the spread evenness target is judged on the gap to HAMi's
   scores over seeds 1 to 20 (:data:`SPREAD_SEEDS`), each over its first 130 arrivals, because
   three seeds cannot resolve a gap of the size that separates them. **Bursts:** 16 quarter shares
   10 ms apart on a loaded cluster, of one ReplicaSet, of one Job or of no workload, with and
   without the topology spread constraint the webhook adds (kube-scheduler's PodTopologySpread
   score, its defaults for a ReplicaSet's pods included, is modelled by the allocator). Reported:
   the nodes and cards the burst went to.
2. **Scale, simulated.** 100 pods/s arriving and leaving (1.5 s mean lifetime, shares only) on
   16 x 8 cards: occupancy bucket changes per node and the slice writes the throttle lets through.
3. **Scale, against the API server stand-in.** 16 real :class:`dra_driver.occupancy.OccupancyTracker`
   + :class:`dra_driver.slices.SlicePublisher` pairs (one per simulated node, in this process) while
   a generator creates, allocates and deletes ResourceClaims at 100 pods/s in the stand-in (its own
   process); every ResourceSlice write is counted from a watch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import math
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import jsonpatch

from dra_driver.backends.mock import discover
from dra_driver.occupancy import (
    Attributes,
    OccupancyTracker,
    Throttle,
    attributes_by_pool,
    device_loads,
    device_totals,
    pool_loads,
    pool_results,
)
from dra_driver.slices import SlicePublisher, build_slice_specs
from e2e.allocator import AllocatedState, schedule
from e2e.allocator.spread import HOSTNAME
from vendors import nvidia
from vendors.base import DeviceInfo
from webhook.convert import Converter
from webhook.inventory import Inventory

from .common import api_server, machine, write_report

NAMES = nvidia.NAMES
DRIVER = NAMES.driver
MODEL = "A100"
NODES = 16
CARDS = 8
SPLIT = 10
INTERVAL = 1.0
"""The driver's default occupancy interval: at most one slice write per node per second."""
CARD_MIB = 81920
MEAN_LOAD = 480.0
"""Arrival rate x mean lifetime of the placement traces (pods present on average, were none rejected)."""

# (name, weight, container limits) -- the HAMi way
SHAPES: list[tuple[str, float, dict[str, Any]]] = [
    ("whole", 0.25, {"nvidia.com/gpu": 1}),
    ("2 whole", 0.05, {"nvidia.com/gpu": 2}),
    ("1/2", 0.25, {"nvidia.com/gpu": 1, "nvidia.com/gpumem": CARD_MIB // 2, "nvidia.com/gpucores": 50}),
    ("1/4", 0.40, {"nvidia.com/gpu": 1, "nvidia.com/gpumem": CARD_MIB // 4, "nvidia.com/gpucores": 25}),
    ("2 x 1/2", 0.05, {"nvidia.com/gpu": 2, "nvidia.com/gpumem": CARD_MIB // 2, "nvidia.com/gpucores": 50}),
]
WITHOUT_CONSTRAINTS = " without the webhook's spread constraints"
FRESH = " with fresh occupancy"
"""Key suffixes for :func:`run_model`: the webhook's topology spread constraints dropped; slices
rewritten at every change (no throttle)."""
POLICIES: dict[str, dict[str, str]] = {
    "first fit": {},
    "binpack": {"hami.io/node-scheduler-policy": "binpack", "hami.io/gpu-scheduler-policy": "binpack"},
    "spread": {"hami.io/node-scheduler-policy": "spread", "hami.io/gpu-scheduler-policy": "spread"},
}

Obj = dict[str, Any]


# ------------------------------------------------------------------------------------------ trace
@dataclass(frozen=True)
class Arrival:
    index: int
    time: float
    shape: str
    lifetime: float
    workload: Workload | None = None
    """The controller that made the pod; None: a pod of its own."""


@dataclass(frozen=True)
class Workload:
    """A controller as its pods show it: the owner reference and the label it puts on them."""

    kind: str
    api_version: str
    label: str
    value: str

    def meta(self) -> Obj:
        owner = {"apiVersion": self.api_version, "kind": self.kind, "name": f"w-{self.value}",
                 "uid": f"uid-{self.value}", "controller": True}  # fmt: skip
        return {"labels": {self.label: self.value}, "ownerReferences": [owner]}


REPLICA_SET = Workload("ReplicaSet", "apps/v1", "pod-template-hash", "5d8f7c9b6")
JOB = Workload("Job", "batch/v1", "batch.kubernetes.io/controller-uid", "0c7e2d4a-5b1f-4e8a-9d3c-6f2b1a8e7d40")


def make_trace(
    seed: int, count: int, rate: float, mean_life: float, shapes: Sequence[str] | None = None
) -> list[Arrival]:
    rng = random.Random(seed)
    names = [s[0] for s in SHAPES if shapes is None or s[0] in shapes]
    weights = [s[1] for s in SHAPES if shapes is None or s[0] in shapes]
    now, out = 0.0, []
    for i in range(count):
        now += rng.expovariate(rate)
        out.append(Arrival(i, now, rng.choices(names, weights)[0], rng.expovariate(1 / mean_life)))
    return out


def limits(shape: str) -> dict[str, Any]:
    return next(s[2] for s in SHAPES if s[0] == shape)


# ------------------------------------------------------------------------------------------ cluster model
def cluster_devices() -> dict[str, list[DeviceInfo]]:
    return {
        f"node-{n:02d}": discover(f"{CARDS}x{MODEL}", NAMES, nvidia.VENDOR.mock_models, f"node-{n:02d}")
        for n in range(1, NODES + 1)
    }


@dataclass
class Snapshot:
    """Per-card memory fraction used, per node."""

    cards: dict[str, list[float]]


def window_metrics(snap: Snapshot) -> dict[str, float]:
    loads = [x for cards in snap.cards.values() for x in cards]
    free_total = sum(1 - x for x in loads)
    stranded = sum(1 - x for x in loads if 0 < x < 1)
    nodes = [sum(c) / len(c) for c in snap.cards.values()]
    return {
        "stranded": stranded / free_total if free_total else 0.0,
        "idle": float(sum(1 for x in loads if x == 0)),
        "jain_cards": jain(loads),
        "jain_nodes": jain(nodes),
    }


def jain(values: Sequence[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


class Model:
    """What a placement run needs: place and remove pods, and say how the cards are used."""

    def place(self, arrival: Arrival, now: float) -> bool:
        raise NotImplementedError

    def remove(self, arrival: Arrival, now: float) -> None:
        raise NotImplementedError

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def tick(self, now: float) -> float | None:
        """Work due at ``now`` (deferred slice updates); the next time it wants, or None."""
        return None


class DraModel(Model):
    """Our path: webhook conversion -> claim -> harness allocator over slices with occupancy."""

    def __init__(
        self,
        annotations: Mapping[str, str],
        tie_rng: random.Random | None,
        *,
        interval: float,
        spread_constraints: bool = True,
    ) -> None:
        """``spread_constraints``: keep the topology spread constraints the webhook adds (False: drop
        them, to show what kube-scheduler does without them)."""
        self.devices = cluster_devices()
        self.nodes = [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {HOSTNAME: n}}, "spec": {}}
            for n in self.devices
        ]
        self.spread_constraints = spread_constraints
        self.pods: dict[str, dict[int, Obj]] = {n: {} for n in self.devices}
        self.now = 0.0
        self.totals = {n: device_totals(d, NAMES, SPLIT) for n, d in self.devices.items()}
        self.classes = {
            DRIVER: {
                "metadata": {"name": DRIVER},
                "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}]},
            }
        }
        self.annotations = dict(annotations)
        self.converter = Converter([nvidia.VENDOR], clock=lambda: self.now)
        self.tie_rng = tie_rng
        self.interval = interval
        self.state = AllocatedState()
        self.claims: dict[int, Obj] = {}
        self.on_node: dict[str, dict[int, tuple[Mapping[str, Any], ...]]] = {n: {} for n in self.devices}
        self.throttles = {n: Throttle(interval) for n in self.devices}
        self.due: dict[str, float] = {}
        self.published: dict[str, Attributes] = {}
        self.slices: dict[str, Obj] = {}
        self.seconds: list[float] = []
        self.writes = 0
        for node, attributes in self._attributes().items():
            self._publish(node, attributes, -math.inf)
        self.writes = 0
        self.inventory = Inventory.from_slices(list(self.slices.values()))

    def _pod(self, arrival: Arrival, now: float) -> tuple[Obj, Obj]:
        """The pod as the webhook leaves it when admitted at ``now``, and its claim template."""
        meta: Obj = {"name": f"pod-{arrival.index}", "namespace": "bench", "uid": str(arrival.index)}
        meta["annotations"] = dict(self.annotations)
        if arrival.workload is not None:
            meta.update(arrival.workload.meta())
        written: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {"containers": [{"name": "main", "resources": {"limits": limits(arrival.shape)}}]},
        }
        self.now = now
        result = self.converter.convert(written, "bench", self.inventory)
        assert result.allowed and result.template is not None, result.message
        pod: Obj = jsonpatch.apply_patch(written, list(result.patch))
        if not self.spread_constraints:
            pod["spec"].pop("topologySpreadConstraints", None)
        return pod, result.template

    def _attributes(self) -> dict[str, Attributes]:
        results = [r for held in self.on_node.values() for rs in held.values() for r in rs]
        return attributes_by_pool(pool_loads(results, self.totals))

    def _publish(self, node: str, attributes: Attributes, now: float) -> None:
        self.published[node] = attributes
        self.throttles[node].sent(now)
        self.writes += 1
        (spec,) = build_slice_specs(self.devices[node], NAMES, node, SPLIT, shareable=True, attributes=attributes)
        spec["pool"]["generation"] = self.writes
        self.slices[node] = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                             "metadata": {"name": f"{node}-{DRIVER}"}, "spec": spec}  # fmt: skip

    def _changed(self, now: float) -> None:
        """An allocation changed: every node's driver sees it (ranks are relative) and updates its slice
        when its attributes differ, at once or at the end of its throttle interval."""
        for node, attributes in self._attributes().items():
            if attributes == self.published.get(node):
                continue
            delay = self.throttles[node].delay(now)
            if delay <= 0:
                self._publish(node, attributes, now)
            elif node not in self.due:
                self.due[node] = now + delay

    def tick(self, now: float) -> float | None:
        ready = [node for node, when in self.due.items() if when <= now]
        if ready:
            current = self._attributes()
            for node in ready:
                del self.due[node]
                if current[node] != self.published.get(node):
                    self._publish(node, current[node], now)
        return min(self.due.values(), default=None)

    def place(self, arrival: Arrival, now: float) -> bool:
        pod, template = self._pod(arrival, now)
        claim = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": f"pod-{arrival.index}-tessera", "namespace": "bench", "uid": str(arrival.index)},
            "spec": template["spec"]["spec"],
        }
        started = time.thread_time()
        decision = schedule(
            pod,
            self.nodes,
            [claim],
            self.classes,
            list(self.slices.values()),
            [],
            state=self.state,
            new_share_id=lambda: "s",
            tie_break=self.tie_rng.choice if self.tie_rng else None,
            pods_on={n: list(held.values()) for n, held in self.pods.items()},
        )
        self.seconds.append(time.thread_time() - started)
        if decision.node is None:
            return False
        claim["status"] = {"allocation": decision.allocations[claim["metadata"]["name"]]}
        self.state.add(claim)
        self.claims[arrival.index] = claim
        self.on_node[decision.node][arrival.index] = pool_results(claim, DRIVER, decision.node)
        self.pods[decision.node][arrival.index] = pod
        self._changed(now)
        return True

    def remove(self, arrival: Arrival, now: float) -> None:
        claim = self.claims.pop(arrival.index, None)
        if claim is None:
            return
        self.state.remove(claim)
        for held in self.on_node.values():
            held.pop(arrival.index, None)
        for pods in self.pods.values():
            pods.pop(arrival.index, None)
        self._changed(now)

    def snapshot(self) -> Snapshot:
        cards: dict[str, list[float]] = {}
        for node, held in self.on_node.items():
            results = [r for rs in held.values() for r in rs]
            used = {name: 0.0 for name in self.totals[node]}
            for r in results:
                consumed = r.get("consumedCapacity") or {}
                used[r["device"]] += (
                    float(_bytes(consumed.get("memory", "0"))) / self.totals[node][r["device"]].memory_bytes
                )
            cards[node] = [min(1.0, used[name]) for name in sorted(used, key=lambda s: int(s.split("-")[1]))]
        return Snapshot(cards)


def _bytes(text: str) -> Fraction:
    from tessera_common.quantity import parse_quantity

    return Fraction(parse_quantity(text))


# ------------------------------------------------------------------------------------------ HAMi anchor
@dataclass
class HamiDevice:
    index: int
    count: int = SPLIT
    total_mem: int = CARD_MIB
    total_core: int = 100
    used: int = 0
    used_mem: int = 0
    used_cores: int = 0


@dataclass
class HamiRequest:
    nums: int
    mem: int
    cores: int


def hami_request(shape: str) -> HamiRequest:
    lim = limits(shape)
    nums = int(lim["nvidia.com/gpu"])
    if "nvidia.com/gpumem" in lim:
        return HamiRequest(nums, int(lim["nvidia.com/gpumem"]), int(lim.get("nvidia.com/gpucores", 0)))
    return HamiRequest(nums, CARD_MIB, 100)  # whole card: 100 % memory, and cores 100 injected (HAMi >= 2.7)


class HamiModel(Model):
    """HAMi's scheduler extender scores, re-implemented: device score with the request, devices tried from
    the end of the sorted list (binpack: highest first; spread: lowest first), node score from the use
    before the pod (binpack: highest node wins; spread: lowest); usage exact and fresh."""

    def __init__(self, node_policy: str, gpu_policy: str, tie_rng: random.Random) -> None:
        self.node_policy, self.gpu_policy, self.rng = node_policy, gpu_policy, tie_rng
        self.nodes = {f"node-{n:02d}": [HamiDevice(i) for i in range(CARDS)] for n in range(1, NODES + 1)}
        self.held: dict[int, tuple[str, list[int], HamiRequest]] = {}
        self.seconds: list[float] = []

    @staticmethod
    def device_score(d: HamiDevice, k: HamiRequest) -> float:
        return 10 * ((k.nums + d.used) / d.count + (k.cores + d.used_cores) / d.total_core
                     + (k.mem + d.used_mem) / d.total_mem)  # fmt: skip

    @staticmethod
    def node_score(devices: Sequence[HamiDevice]) -> float:
        return 10 * (sum(d.used for d in devices) / sum(d.count for d in devices)
                     + sum(d.used_cores for d in devices) / sum(d.total_core for d in devices)
                     + sum(d.used_mem for d in devices) / sum(d.total_mem for d in devices))  # fmt: skip

    def fit(self, devices: list[HamiDevice], k: HamiRequest) -> list[int] | None:
        ordered = sorted(devices, key=lambda d: self.device_score(d, k), reverse=self.gpu_policy != "binpack")
        taken: list[int] = []
        for d in reversed(ordered):
            if d.count <= d.used or d.total_mem - d.used_mem < k.mem or d.total_core - d.used_cores < k.cores:
                continue
            if (k.cores == 100 and d.used > 0) or (d.used_cores == d.total_core and k.cores == 0):
                continue
            taken.append(d.index)
            if len(taken) == k.nums:
                return taken
        return None

    def place(self, arrival: Arrival, now: float) -> bool:
        k = hami_request(arrival.shape)
        started = time.thread_time()
        fits = []
        for name, devices in self.nodes.items():
            chosen = self.fit(devices, k)
            if chosen is not None:
                fits.append((self.node_score(devices), name, chosen))
        self.seconds.append(time.thread_time() - started)
        if not fits:
            return False
        best = (max if self.node_policy == "binpack" else min)(s for s, _, _ in fits)
        _, node, chosen = self.rng.choice([f for f in fits if f[0] == best])
        for i in chosen:
            d = self.nodes[node][i]
            d.used, d.used_mem, d.used_cores = d.used + 1, d.used_mem + k.mem, d.used_cores + k.cores
        self.held[arrival.index] = (node, chosen, k)
        return True

    def remove(self, arrival: Arrival, now: float) -> None:
        held = self.held.pop(arrival.index, None)
        if held is None:
            return
        node, chosen, k = held
        for i in chosen:
            d = self.nodes[node][i]
            d.used, d.used_mem, d.used_cores = d.used - 1, d.used_mem - k.mem, d.used_cores - k.cores

    def snapshot(self) -> Snapshot:
        return Snapshot({n: [d.used_mem / d.total_mem for d in ds] for n, ds in self.nodes.items()})


# ------------------------------------------------------------------------------------------ running a trace
@dataclass
class Run:
    name: str
    first_rejection: int | None = None
    placed_total: int = 0
    samples: list[dict[str, float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    writes: int = 0


def play(model: Model, trace: Sequence[Arrival]) -> Iterator[tuple[int, bool, float]]:
    """Play ``trace`` through ``model``: departures before arrivals at the same time, deferred slice
    updates (``tick``) when due. Yields ``(index, placed, time)`` after each arrival; a caller that
    stops early leaves the later events unplayed. Rejected pods are dropped (a real one would wait)."""
    events: list[tuple[float, int, int]] = [(a.time, 1, i) for i, a in enumerate(trace)]
    heapq.heapify(events)
    ticks: set[float] = set()
    while events:
        now, kind, index = heapq.heappop(events)
        placed: bool | None = None
        if kind == 2:
            ticks.discard(now)
        elif kind == 0:
            model.remove(trace[index], now)
        else:
            placed = model.place(trace[index], now)
            if placed:
                heapq.heappush(events, (now + trace[index].lifetime, 0, index))
        due = model.tick(now)
        if due is not None and due not in ticks:
            ticks.add(due)
            heapq.heappush(events, (due, 2, -1))
        if placed is not None:
            yield index, placed, now


def simulate(name: str, model: Model, trace: Sequence[Arrival]) -> Run:
    """The whole of ``trace`` through ``model`` (:func:`play`), with the window metrics after every
    arrival until the first rejection."""
    run = Run(name)
    for index, placed, _ in play(model, trace):
        if placed:
            run.placed_total += 1
            if run.first_rejection is None:
                run.samples.append(window_metrics(model.snapshot()))
        elif run.first_rejection is None:
            run.first_rejection = index
    run.seconds = list(getattr(model, "seconds", []))
    run.writes = int(getattr(model, "writes", 0))
    return run


# ------------------------------------------------------------------------------------------ part 1: report
RUNS: list[tuple[str, str]] = [
    ("first fit, ties at random (kube-scheduler)", "first fit"),
    ("first fit, ties by node name (the harness)", "first fit/name"),
    ("binpack (node and GPU)", "binpack"),
    ("HAMi scores, binpack", "hami binpack"),
    ("spread (node and GPU)", "spread"),
    ("HAMi scores, spread", "hami spread"),
]


def run_model(key: str, seed: int) -> Model:
    rng = random.Random(seed + 1000)
    if key.startswith("hami"):
        policy = key.split()[1]
        return HamiModel(policy, policy, rng)
    if key == "first fit/name":
        return DraModel(POLICIES["first fit"], None, interval=INTERVAL)
    if key.endswith(FRESH):
        return DraModel(POLICIES[key.removesuffix(FRESH)], rng, interval=0.0)
    if key.endswith(WITHOUT_CONSTRAINTS):
        return DraModel(
            POLICIES[key.removesuffix(WITHOUT_CONSTRAINTS)], rng, interval=INTERVAL, spread_constraints=False
        )
    return DraModel(POLICIES[key], rng, interval=INTERVAL)


@dataclass
class Placement:
    rate: float
    arrivals: int
    seeds: list[int]
    runs: dict[str, list[Run]] = field(default_factory=dict)
    windows: list[int] = field(default_factory=list)

    def mean(self, key: str, metric: str) -> list[float]:
        """Per seed: the mean of ``metric`` over that seed's common window."""
        return [
            statistics.mean(s[metric] for s in run.samples[:w])
            for run, w in zip(self.runs[key], self.windows, strict=True)
        ]


def placement(seeds: Sequence[int], arrivals: int, rate: float) -> Placement:
    result = Placement(rate, arrivals, list(seeds), {key: [] for _, key in RUNS})
    for seed in seeds:
        trace = make_trace(seed, arrivals, rate, MEAN_LOAD / rate)
        for label, key in RUNS:
            started = time.monotonic()
            run = simulate(label, run_model(key, seed), trace)
            result.runs[key].append(run)
            print(
                f"  seed {seed}: {label}: {run.first_rejection} placed before the first rejection "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
        window = min(r.first_rejection or len(r.samples) for r in (rs[-1] for rs in result.runs.values()))
        result.windows.append(window)
    return result


def _span(values: Sequence[float], fmt: str) -> str:
    mean = statistics.mean(values)
    if len(values) == 1:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ({format(min(values), fmt)}..{format(max(values), fmt)})"


def placement_report(p: Placement, spread: SpreadGaps | None = None) -> tuple[list[str], list[str]]:
    """The report's lines, and the targets missed (empty when every target is met). ``spread``: the
    spread evenness target is judged on these gaps over many seeds (None: on the means over ``p``'s
    seeds)."""
    lines = [
        f"Seeds {', '.join(map(str, p.seeds))}; {p.arrivals} arrivals per trace at {p.rate:g} pods/s, mean lifetime "
        f"{MEAN_LOAD / p.rate:g} s; 16 nodes x 8 A100 (80 GiB), 10 shares per card; shapes "
        + ", ".join(f"{name} {weight:.0%}" for name, weight, _ in SHAPES)
        + f". Common window: the first {', '.join(map(str, p.windows))} arrivals (every run placed them all). "
        "Mean (min..max over seeds).",
        "",
        "| run | pods placed before the first rejection | stranded free memory (window mean) | idle cards (window "
        "mean) | card evenness (Jain) | node evenness (Jain) | allocator time per pod, p50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in RUNS:
        runs = p.runs[key]
        counts = [float(r.first_rejection or r.placed_total) for r in runs]
        seconds = [s for r in runs for s in r.seconds]
        timing = f"{statistics.median(seconds) * 1000:.1f} ms" if seconds and not key.startswith("hami") else "-"
        lines.append(
            f"| {label} | {_span(counts, '.0f')} | {_span([100 * v for v in p.mean(key, 'stranded')], '.1f')} % | "
            f"{_span(p.mean(key, 'idle'), '.1f')} | {_span(p.mean(key, 'jain_cards'), '.3f')} | "
            f"{_span(p.mean(key, 'jain_nodes'), '.3f')} | {timing} |"
        )
    checks: list[str] = []
    missed: list[str] = []

    def check(met: bool, text: str) -> None:
        checks.append(f"{text} ({'met' if met else 'MISSED'})")
        if not met:
            missed.append(text)

    def placed(key: str) -> list[float]:
        return [float(r.first_rejection or r.placed_total) for r in p.runs[key]]

    bp, hb, ff = placed("binpack"), placed("hami binpack"), placed("first fit")
    worst = min(b / h for b, h in zip(bp, hb, strict=True))
    check(worst >= 0.95, f"binpack pods placed >= 95 % of HAMi's in every seed: worst {worst:.1%}")
    idle_b, idle_h = p.mean("binpack", "idle"), p.mean("hami binpack", "idle")
    worst = min(b / h for b, h in zip(idle_b, idle_h, strict=True))
    check(worst >= 0.95, f"binpack idle cards >= 95 % of HAMi's in every seed: worst {worst:.1%}")
    met = all(b > f for b, f in zip(bp, ff, strict=True)) and all(
        b > f for b, f in zip(idle_b, p.mean("first fit", "idle"), strict=True)
    )
    check(met, "binpack strictly better than first fit (pods placed and idle cards, every seed)")
    for which, (metric, what) in enumerate((("jain_cards", "card"), ("jain_nodes", "node"))):
        ours, anchor = statistics.mean(p.mean("spread", metric)), statistics.mean(p.mean("hami spread", metric))
        text = (
            f"spread {what} evenness at least HAMi's, mean over these {len(p.seeds)} seeds: {ours:.4f} vs {anchor:.4f}"
        )
        if spread is None or not spread.gaps[SPREAD_RUN[0]]:
            check(ours >= anchor, text)
            continue
        checks.append(f"{text} (reported; the target is judged on {spread.seeds} seeds)")
        gap, se = spread.mean_se(SPREAD_RUN[0], which)
        n = len(spread.gaps[SPREAD_RUN[0]])
        check(
            gap >= 0,
            f"spread {what} evenness at least HAMi's, mean gap over {n} seeds: {gap:+.4f} (standard error {se:.4f})",
        )
    ff_time = statistics.median([s for r in p.runs["first fit"] for s in r.seconds])
    for key in ("binpack", "spread"):
        ratio = statistics.median([s for r in p.runs[key] for s in r.seconds]) / ff_time
        check(ratio <= 2.0, f"allocator time per pod, {key} / first fit: {ratio:.2f}x (target <= 2x)")
    lines += ["", "Targets:", "", *[f"- {c}" for c in checks]]
    return lines, missed


# ------------------------------------------------------------------------------------------ part 1b: bursts
BURST = 16
BURST_GAP = 0.01
BURST_WARM = 150


def burst(model: Model, seed: int, workload: Workload | None) -> tuple[int, int, int, int]:
    """A workload scaled up on a loaded cluster: the first :data:`BURST_WARM` arrivals of the seed's
    trace (with their departures), two quiet seconds (every slice rewritten), then :data:`BURST` quarter
    shares of ``workload`` (None: pods of their own) :data:`BURST_GAP` s apart, faster than any slice is
    rewritten. Returns the distinct nodes and cards the burst went to, and the most of its pods on one
    node and on one card."""
    trace = make_trace(seed, BURST_WARM, 1.0, MEAN_LOAD)
    now = next(t for index, _, t in play(model, trace) if index == len(trace) - 1) + 2.0
    model.tick(now)
    before = model.snapshot().cards
    for i in range(BURST):
        t = now + i * BURST_GAP
        model.tick(t)
        model.place(Arrival(10_000 + i, t, "1/4", MEAN_LOAD, workload=workload), t)
    after = model.snapshot().cards
    quarter = 0.25 - 1e-9
    per_card = {
        (node, i): round((load - before[node][i]) / 0.25)
        for node, cards in after.items()
        for i, load in enumerate(cards)
        if load - before[node][i] >= quarter
    }
    per_node: dict[str, int] = {}
    for (node, _), pods in per_card.items():
        per_node[node] = per_node.get(node, 0) + pods
    return len(per_node), len(per_card), max(per_node.values()), max(per_card.values())


BURST_RUNS: list[tuple[str, str, Workload | None]] = [
    ("spread (node and GPU), a ReplicaSet", "spread", REPLICA_SET),
    ("spread, a ReplicaSet, without the webhook's constraints", "spread" + WITHOUT_CONSTRAINTS, REPLICA_SET),
    ("spread, a Job", "spread", JOB),
    ("spread, a Job, without the webhook's constraints", "spread" + WITHOUT_CONSTRAINTS, JOB),
    ("spread, pods of no workload", "spread", None),
    ("spread, pods of no workload, without the webhook's constraints", "spread" + WITHOUT_CONSTRAINTS, None),
    ("HAMi scores, spread", "hami spread", REPLICA_SET),
    ("first fit, a ReplicaSet", "first fit", REPLICA_SET),
    ("binpack (node and GPU), a ReplicaSet", "binpack", REPLICA_SET),
    ("binpack, a ReplicaSet, without the webhook's constraint", "binpack" + WITHOUT_CONSTRAINTS, REPLICA_SET),
    ("HAMi scores, binpack", "hami binpack", REPLICA_SET),
]


def bursts(seeds: Sequence[int]) -> list[str]:
    """The burst figures of :data:`BURST_RUNS`, mean (min..max) over ``seeds``."""
    lines = [
        "| run | nodes it went to | cards it went to | most of its pods on one node | most on one card |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, key, workload in BURST_RUNS:
        figures = [burst(run_model(key, seed), seed, workload) for seed in seeds]
        columns = [_span([float(f[i]) for f in figures], ".1f") for i in range(4)]
        lines.append(f"| {label} | {' | '.join(columns)} |")
    return lines


SPREAD_WINDOW = 130
"""Arrivals over which :func:`spread_seeds` compares every seed (the same window for every run)."""
SPREAD_SEEDS = 20
"""Seeds of the spread evenness target: per-seed gaps to the anchor vary with a standard deviation of
about 0.002, so three seeds cannot tell a gap of 0.001 from none; twenty bring the standard error of
the mean to about 0.0005."""
SPREAD_RUN = ("spread (node and GPU)", "spread")
SPREAD_VARIANTS: list[tuple[str, str]] = [
    ("spread, without the webhook's constraints", "spread" + WITHOUT_CONSTRAINTS),
    ("spread, fresh occupancy (no throttle)", "spread" + FRESH),
]


@dataclass
class SpreadGaps:
    """Per run label, per seed compared: (card, node) evenness gap to HAMi's spread scores."""

    seeds: int
    gaps: dict[str, list[tuple[float, float]]]
    skipped: list[int]

    def mean_se(self, label: str, which: int) -> tuple[float, float]:
        values = [g[which] for g in self.gaps[label]]
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        return statistics.mean(values), se

    def lines(self) -> list[str]:
        out = [
            "| run | seeds | card evenness gap to HAMi's scores, mean (standard error) "
            "| node evenness gap, mean (standard error) |",
            "|---|---:|---:|---:|",
        ]
        for label, g in self.gaps.items():
            if g:
                (cm, cs), (nm, ns) = self.mean_se(label, 0), self.mean_se(label, 1)
                out.append(f"| {label} | {len(g)} | {cm:+.4f} ({cs:.4f}) | {nm:+.4f} ({ns:.4f}) |")
        if self.skipped:
            why = f"a run placed fewer than {SPREAD_WINDOW} before its first rejection"
            out += ["", f"Left out ({why}): {self.skipped}."]
        return out


def spread_seeds(count: int, arrivals: int, rate: float, *, variants: bool = False) -> SpreadGaps:
    """Spread against HAMi's spread scores over seeds 1..``count``: each run's mean card and node
    evenness over the first :data:`SPREAD_WINDOW` arrivals (seeds where a run places fewer before its
    first rejection are left out), as gaps to HAMi's. ``variants``: also :data:`SPREAD_VARIANTS`."""
    runs = [SPREAD_RUN, *(SPREAD_VARIANTS if variants else [])]
    result = SpreadGaps(count, {label: [] for label, _ in runs}, [])

    def evenness(model: Model, trace: Sequence[Arrival]) -> tuple[float, float] | None:
        samples = simulate("", model, trace).samples[:SPREAD_WINDOW]
        if len(samples) < SPREAD_WINDOW:
            return None
        return statistics.mean(x["jain_cards"] for x in samples), statistics.mean(x["jain_nodes"] for x in samples)

    for seed in range(1, count + 1):
        trace = make_trace(seed, arrivals, rate, MEAN_LOAD / rate)
        anchor = evenness(run_model("hami spread", seed), trace)
        figures = [(label, evenness(run_model(key, seed), trace)) for label, key in runs]
        if anchor is None or any(r is None for _, r in figures):
            result.skipped.append(seed)
            continue
        for label, r in figures:
            assert r is not None
            result.gaps[label].append((r[0] - anchor[0], r[1] - anchor[1]))
        print(f"  seed {seed}: " + ", ".join(f"{label} {g[-1][0]:+.4f}/{g[-1][1]:+.4f}"
                                             for label, g in result.gaps.items()), flush=True)  # fmt: skip
    return result


# ------------------------------------------------------------------------------------------ part 2: scale, simulated


def scale_simulated(rate: float, seconds: float, seed: int = 7) -> list[str]:
    """Occupancy attribute changes and throttled slice writes per node under ``rate`` pods/s of churn."""
    rng = random.Random(seed)
    devices = cluster_devices()
    totals = {n: device_totals(d, NAMES, SPLIT) for n, d in devices.items()}
    mean_life = 1.5
    trace = make_trace(seed, int(rate * seconds), rate, mean_life, shapes=("1/2", "1/4"))
    free = {(n, d): Fraction(1) for n in devices for d in totals[n]}
    held: dict[int, tuple[str, str, dict[str, Any]]] = {}
    throttles = {n: Throttle(INTERVAL) for n in devices}
    published: dict[str, Attributes] = {n: {} for n in devices}
    due: dict[str, float] = {}
    writes: dict[str, list[float]] = {n: [] for n in devices}
    changes: dict[str, int] = dict.fromkeys(devices, 0)
    last_attrs = attributes_by_pool(pool_loads([], totals))
    events: list[tuple[float, int, int]] = [(a.time, 1, i) for i, a in enumerate(trace)]
    heapq.heapify(events)
    rejected = 0

    loads = pool_loads([], totals)

    def current() -> dict[str, Attributes]:
        return attributes_by_pool(loads)

    def reload(node: str) -> None:
        loads[node] = device_loads([r for n, _, r in held.values() if n == node], totals[node])

    def publish(node: str, attributes: Attributes, now: float) -> None:
        published[node] = attributes
        throttles[node].sent(now)
        writes[node].append(now)

    while events:
        now, kind, index = heapq.heappop(events)
        if kind == 2:
            attrs = current()
            for node, when in list(due.items()):
                if when <= now:
                    del due[node]
                    if attrs[node] != published[node]:
                        publish(node, attrs[node], now)
            continue
        arrival = trace[index]
        if kind == 0:
            node, device, result = held.pop(index)
            free[(node, device)] += Fraction(1, 2) if arrival.shape == "1/2" else Fraction(1, 4)
            reload(node)
        else:
            size = Fraction(1, 2) if arrival.shape == "1/2" else Fraction(1, 4)
            room = [key for key, left in free.items() if left >= size]
            if not room:
                rejected += 1
                continue
            node, device = rng.choice(room)
            free[(node, device)] -= size
            mib = CARD_MIB * size
            consumed = {"memory": f"{int(mib)}Mi", "cores": str(int(100 * size)), "shares": "1"}
            result = {"driver": DRIVER, "pool": node, "device": device, "shareID": str(index)}
            result["consumedCapacity"] = consumed
            held[index] = (node, device, result)
            reload(node)
            heapq.heappush(events, (now + arrival.lifetime, 0, index))
        attrs = current()
        for node in devices:
            if attrs[node] != last_attrs[node]:
                changes[node] += 1
            if attrs[node] == published[node]:
                continue
            delay = throttles[node].delay(now)
            if delay <= 0:
                publish(node, attrs[node], now)
            elif node not in due:
                due[node] = now + delay
                heapq.heappush(events, (now + delay, 2, -1))
        last_attrs = attrs
    span = max(max(w, default=0.0) for w in writes.values()) + INTERVAL
    per_node = [len(w) / span for w in writes.values()]
    bins = max(
        max((sum(1 for t in w if k <= t < k + 1) for k in range(int(span) + 2)), default=0) for w in writes.values()
    )
    gaps = [b - a for w in writes.values() for a, b in itertools.pairwise(w)]
    change_rate = [c / span for c in changes.values()]
    return [
        f"| simulated, {rate:g} pods/s for {seconds:g} s ({len(trace)} pods, {rejected} found no room), throttle "
        f"{INTERVAL:g} s | {statistics.mean(change_rate):.1f} ({max(change_rate):.1f}) | "
        f"{statistics.mean(per_node):.2f} ({max(per_node):.2f}) | {bins} | {min(gaps):.2f} s |"
    ]


# ------------------------------------------------------------------------------------------ part 3: scale, real API
async def scale_api(kubeconfig: str, rate: float, seconds: float) -> list[str]:
    """16 trackers + publishers against the API server stand-in, claims churned at ``rate`` pods/s."""
    from bench.common import store_claim as store
    from kubeapi import KubeClient, namespaced_path

    metrics = _metrics()
    devices = cluster_devices()
    main = await KubeClient.connect(kubeconfig)
    clients: list[Any] = []
    pairs: list[tuple[SlicePublisher, OccupancyTracker]] = []
    writes: dict[str, list[float]] = {n: [] for n in devices}
    loop = asyncio.get_running_loop()
    try:
        for node in devices:
            await main.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        for node, devs in devices.items():
            client = await KubeClient.connect(kubeconfig)
            clients.append(client)
            publisher = SlicePublisher(client, NAMES, node, devs, SPLIT, metrics, resync_seconds=600)
            publisher.start()
            tracker = OccupancyTracker(client, NAMES, node, devs, SPLIT, publisher.set_attributes, interval=INTERVAL)
            tracker.start()
            pairs.append((publisher, tracker))
        await asyncio.wait_for(asyncio.gather(*(p.published.wait() for p, _ in pairs)), 60)
        await asyncio.sleep(2 * INTERVAL)

        async def count_writes() -> None:
            async for event in main.watch("/apis/resource.k8s.io/v1/resourceslices", timeout_seconds=int(seconds) + 60):
                if event.get("type") == "MODIFIED":
                    node = (event.get("object") or {}).get("spec", {}).get("nodeName")
                    if node in writes:
                        writes[node].append(loop.time())

        counter = asyncio.create_task(count_writes())
        await asyncio.sleep(0.5)
        for w in writes.values():
            w.clear()
        rng = random.Random(11)
        names = list(devices)
        started = loop.time()
        created = 0
        pending: set[asyncio.Task[None]] = set()
        path = namespaced_path("resource.k8s.io/v1", "resourceclaims", "default")

        async def one(index: int) -> None:
            node = rng.choice(names)
            device = f"gpu-{rng.randrange(CARDS)}"
            share = rng.choice((2, 4))
            claim = {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": f"churn-{index}", "namespace": "default"},
                "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                    "deviceClassName": DRIVER, "allocationMode": "ExactCount", "count": 1,
                    "capacity": {"requests": {"memory": f"{CARD_MIB // share}Mi"}}}}]}},
                "status": {"allocation": {"devices": {"results": [{
                    "request": "gpu", "driver": DRIVER, "pool": node, "device": device, "shareID": str(uuid.uuid4()),
                    "consumedCapacity": {"memory": f"{CARD_MIB // share}Mi", "cores": "1", "shares": "1"}}]}}},
            }  # fmt: skip
            await store(main, claim)
            await asyncio.sleep(rng.expovariate(1 / 1.5))
            await main.delete(f"{path}/churn-{index}")

        while loop.time() - started < seconds:
            due = started + created / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            task = asyncio.create_task(one(created))
            pending.add(task)
            task.add_done_callback(pending.discard)
            created += 1
        elapsed = loop.time() - started
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(2 * INTERVAL)
        ended = loop.time()
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
    finally:
        for publisher, tracker in pairs:
            await tracker.stop()
            await publisher.stop()
        for client in clients:
            await client.close()
        await main.close()
    span = ended - started  # the churn, the last claims' lifetimes and two intervals after them
    per_node = [len(w) / span for w in writes.values()]
    bins = max(
        max((sum(1 for t in w if k <= t - started < k + 1) for k in range(int(span) + 2)), default=0)
        for w in writes.values()
    )
    gaps = [b - a for _, tracker in pairs for a, b in itertools.pairwise(tracker.push_times) if a >= started]
    return [
        f"| API server stand-in (own process), {created / elapsed:.0f} pods/s achieved for {elapsed:.0f} s "
        f"({created} claims created, allocated, deleted), 16 trackers + publishers | - | "
        f"{statistics.mean(per_node):.2f} ({max(per_node):.2f}) | {bins} | {min(gaps) if gaps else 0:.2f} s |",
        "",
        "Against the stand-in, writes are counted from a watch of the slices (MODIFIED events, by arrival at the "
        "watching client, so the per-second bins carry its delivery jitter); the gaps are between the ends of two "
        "slice writes of one node as the driver sees them (the next write starts at least the interval after the "
        "previous one ended).",
    ]


def _metrics() -> Any:
    from dra_driver.metrics import DriverMetrics

    return DriverMetrics(NAMES, "bench")


def run_scale_api(rate: float, seconds: float) -> list[str]:
    with api_server("tp") as root:
        return asyncio.run(scale_api(f"{root}/kubeconfig", rate, seconds))


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="traces (seeds 1..N) for the placement part")
    parser.add_argument("--arrivals", type=int, default=340, help="arrivals per placement trace")
    parser.add_argument("--rate", type=float, default=1.0, help="arrivals per second of the placement traces")
    parser.add_argument("--api-seconds", type=float, default=20.0, help="duration of the run against the stand-in")
    parser.add_argument("--quick", action="store_true", help="one seed, 320 arrivals, 8 s against the stand-in")
    parser.add_argument(
        "--spread-seeds",
        type=int,
        default=SPREAD_SEEDS,
        help="judge spread evenness against HAMi's scores over seeds 1..N, each over its first "
        f"{SPREAD_WINDOW} arrivals (about 10 s per seed; 0: on the placement seeds instead)",
    )
    parser.add_argument(
        "--spread-variants",
        action="store_true",
        help="also run spread without the webhook's constraints and with fresh occupancy over those seeds",
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.arrivals, args.api_seconds, args.spread_seeds = 1, 320, 8.0, min(args.spread_seeds, 3)
    print("placement simulator", flush=True)
    p = placement(range(1, args.seeds + 1), args.arrivals, args.rate)
    many: list[str] = []
    spread: SpreadGaps | None = None
    if args.spread_seeds:
        print("spread over many seeds", flush=True)
        spread = spread_seeds(args.spread_seeds, args.arrivals, args.rate, variants=args.spread_variants)
        many = [
            "## Spread over many seeds",
            "",
            f"Seeds 1 to {args.spread_seeds}, each compared with HAMi's spread scores over its first {SPREAD_WINDOW} "
            "arrivals (the same window for every run); the spread evenness target is judged here.",
            "",
            *spread.lines(),
            "",
        ]
    lines, missed = placement_report(p, spread)
    print("bursts", flush=True)
    burst_lines = bursts(p.seeds)
    print("scale", flush=True)
    scale = [
        "| run | occupancy changes per node per second, mean (max) | slice writes per node per second, mean (max) | "
        "most writes of one node in one second | shortest gap between two writes of a node |",
        "|---|---:|---:|---:|---:|",
        *scale_simulated(100.0, 60.0),
        *run_scale_api(100.0, args.api_seconds),
    ]
    text = "\n".join(
        [
            "# Placement policies benchmark",
            "",
            f"Command: `python -m bench.placement{' --quick' if args.quick else ''}` (also run by `make bench`). "
            f"{machine()}. Allocator time is the thread's CPU time.",
            "",
            f"Result: {len(missed)} target(s) MISSED: {'; '.join(missed)}." if missed else "Result: every target met.",
            "",
            "## Placement",
            "",
            *lines,
            "",
            "## A burst of one workload's pods",
            "",
            f"{BURST} quarter shares {BURST_GAP * 1000:g} ms apart (a ReplicaSet or a Job scaled up, or pods "
            f"of their own) after the first {BURST_WARM} arrivals of each seed's trace and two quiet seconds; "
            "mean (min..max over seeds). Reported, no target: within a burst kube-scheduler sees the slices "
            "as they were before it, and counts the pods it placed only through PodTopologySpread (the "
            "webhook's constraint, or its defaults for a ReplicaSet's pods).",
            "",
            *burst_lines,
            "",
            *many,
            "## Occupancy at 100 pods/s on 16 nodes x 8 cards",
            "",
            *scale,
            "",
        ]
    )
    report = "\n".join([f"placement benchmark: {len(missed)} target(s) missed:", *(f"  MISSED: {m}" for m in missed)])
    return write_report("placement", text, ok=not missed, missed=report)


if __name__ == "__main__":
    sys.exit(main())
