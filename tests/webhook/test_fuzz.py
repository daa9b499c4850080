"""Property tests: 10,000 random and mangled reviews and pods, each answered with a well-formed AdmissionReview.

Reviews go through the real aiohttp application (in-process client, plain HTTP for speed) to a
webhook that creates its templates in the API server stand-in. For every answer: HTTP 200, an
``admission.k8s.io/v1`` review with the request's uid, ``allowed`` a bool, a denial with a message,
a patch that applies to the object sent; a patched pod sent again passes unchanged; and no review
ever ends in the internal-error path.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import json
import logging
import os
import random
import uuid
from typing import Any

import jsonpatch
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vendors
from e2e.apiserver import APIServer
from kubeapi import KubeClient
from webhook import logs
from webhook.convert import CONVERTED_ANNOTATION, TEMPLATE_ANNOTATION, Converter
from webhook.metrics import ERROR, Metrics
from webhook.server import Webhook
from webhook.templates import TemplateStore

from .conftest import seed_pods

VARIANTS = 20
"""Reviews per hypothesis example: the drawn one, then cheap seeded manglings of it (drawing is the slow part)."""
EXAMPLES = int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "500"))
DELETE = object()
NASTY: list[Any] = [
    None, True, 0, -1, 2**63, 2**64, 1.5, -0.0, 1e308, "", "x", "-1", "10Gi", "1e999", "\u0000", "ü" * 3,
    [], {}, [[[[]]]], {"a": {"b": {}}}, "nvidia.com/gpu", "tessera-00000000000000000000", "A" * 300,
]  # fmt: skip


PLAUSIBLE = [0, 1, 2, "1", "2", 30, "50", 100, 512, "10240"]


def _random_edit(rnd: random.Random, obj: Any) -> None:
    paths = _paths(obj)[1:]
    if not paths:
        return
    values = [p for p in paths if "limits" in p[:-1] and isinstance(p[-1], str)]
    if values and rnd.random() < 0.5:  # a different, mostly valid, amount: the pod often still converts
        *parent_path, last = rnd.choice(values)
        parent = obj
        for key in parent_path:
            parent = parent[key]
        parent[last] = rnd.choice(PLAUSIBLE)
        return
    *parent_path, last = rnd.choice(paths)
    parent = obj
    for key in parent_path:
        parent = parent[key]
    roll = rnd.random()
    if roll < 0.3:
        del parent[last]
    elif roll < 0.5 and isinstance(parent, dict):
        parent[rnd.choice(["nvidia.com/gpu", "claims", "env", "name", "x", "uid"])] = rnd.choice(NASTY)
    elif roll < 0.6 and isinstance(parent, list) and parent:
        parent.append(copy.deepcopy(rnd.choice(parent)))
    else:
        parent[last] = copy.deepcopy(rnd.choice(NASTY))


def variants(body: bytes, seed: int) -> list[bytes]:
    """``body`` and VARIANTS - 1 seeded manglings of it (of the JSON when it is JSON, else of the bytes)."""
    rnd = random.Random(seed)
    out = [body]
    try:
        base = json.loads(body)
    except ValueError:
        base = None
    for _ in range(VARIANTS - 1):
        if base is None or rnd.random() < 0.05:
            raw = bytearray(body)
            for _ in range(rnd.randint(1, 4)):
                if raw:
                    raw[rnd.randrange(len(raw))] = rnd.randrange(256)
            out.append(bytes(raw))
            continue
        doc = copy.deepcopy(base)
        for _ in range(rnd.randint(0 if rnd.random() < 0.2 else 1, 3)):
            _random_edit(rnd, doc)
        out.append(json.dumps(doc).encode())
    return out


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10,
)

RESOURCES = [
    "nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpumem-percentage", "nvidia.com/gpucores",
    "nvidia.com/gpucore", "nvidia.com/priority", "volcano.sh/vgpu-number", "volcano.sh/vgpu-memory",
    "volcano.sh/vgpu-cores", "nvidia.com/mig-1g.5gb", "huawei.com/Ascend910", "huawei.com/Ascend910-memory",
    "cambricon.com/vmlu", "cambricon.com/mlu.smlu.vmemory", "hygon.com/dcunum", "iluvatar.ai/vcuda-core",
    "cpu", "memory", "example.com/foo",
]  # fmt: skip
resource_values = st.one_of(
    st.integers(-3, 150),
    st.sampled_from(["1", "2", "0", "-1", "100", "10240", "abc", "1.5", "10Gi", ""]),
    st.floats(-2, 200, allow_nan=False),
    json_values,
)
resource_maps = st.dictionaries(st.sampled_from(RESOURCES), resource_values, max_size=4)
names = st.one_of(st.sampled_from(["main", "side", "a", "b", "Bad_Name", "x" * 70]), st.text(max_size=6))
env = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(
        ["CUDA_TASK_PRIORITY", "CUDA_DEVICE_MEMORY_LIMIT_0", "CUDA_DEVICE_SM_LIMIT", "CUDA_DISABLE_CONTROL",
         "LD_PRELOAD", "PATH"]), st.text(max_size=5))},
    optional={"value": st.sampled_from(["0", "1", "2", "/usr/local/tessera/libvgpu.so", "x"]),
              "valueFrom": st.just({"fieldRef": {"fieldPath": "metadata.name"}})},
)  # fmt: skip
claim_refs = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["x", "tessera"])}), max_size=2)
containers = st.fixed_dictionaries(
    {"name": names, "image": st.just("busybox")},
    optional={
        "resources": st.fixed_dictionaries(
            {}, optional={"limits": resource_maps, "requests": resource_maps, "claims": claim_refs}
        ),
        "env": st.lists(env, max_size=3),
        "securityContext": st.fixed_dictionaries({"privileged": st.booleans()}),
    },
)
ANNOTATION_KEYS = [
    "nvidia.com/use-gputype", "nvidia.com/nouse-gputype", "nvidia.com/use-gpuuuid", "nvidia.com/nouse-gpuuuid",
    "nvidia.com/numa-bind", "hami.io/node-scheduler-policy", "hami.io/gpu-scheduler-policy",
    TEMPLATE_ANNOTATION, CONVERTED_ANNOTATION, "tessera.dev/webhook", "tessera.dev/other", "example.com/x",
]  # fmt: skip
annotation_values = st.one_of(
    st.sampled_from(["A100", "H200,l4", "true", "false", "spread", "binpack,numa", "mutex", "ignore", "",
                     "tessera-00000000000000000000", "{}", '{"main": {"requests": ["main"]}}', "GPU-1,GPU-2"]),
    st.text(max_size=10),
)  # fmt: skip
metadata = st.fixed_dictionaries(
    {"name": names},
    optional={
        "annotations": st.dictionaries(st.sampled_from(ANNOTATION_KEYS), annotation_values, max_size=4),
        "labels": st.dictionaries(st.sampled_from(["tessera.dev/webhook", "app"]), st.sampled_from(["ignore", "x"])),
        "generateName": st.just("job-"),
    },
)
pods = st.fixed_dictionaries(
    {
        "apiVersion": st.just("v1"),
        "kind": st.just("Pod"),
        "metadata": metadata,
        "spec": st.fixed_dictionaries(
            {"containers": st.lists(containers, max_size=3)},
            optional={
                "initContainers": st.lists(containers, max_size=2),
                "nodeName": st.sampled_from(["", "node-1"]),
                "resourceClaims": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["x", "tessera"])},
                        optional={"resourceClaimTemplateName": st.sampled_from(["t", "tessera-00000000000000000000"])},
                    ),
                    max_size=2,
                ),
                "schedulerName": st.just("volcano"),
            },
        ),
    }
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*prefix, i)))
    return out


def mangle(obj: Any, edits: list[tuple[int, Any]]) -> Any:
    """Replace or delete the subtrees at (pseudo-randomly chosen) paths."""
    obj = copy.deepcopy(obj)
    for index, value in edits:
        paths = _paths(obj)[1:]
        if not paths:
            return obj
        *parent_path, last = paths[index % len(paths)]
        parent = obj
        for key in parent_path:
            parent = parent[key]
        if value is DELETE:
            del parent[last]
        else:
            parent[last] = value
    return obj


SEEDS = list(seed_pods().values())
edits = st.lists(st.tuples(st.integers(0, 10_000), st.one_of(st.just(DELETE), json_values)), max_size=3)
mangled_pods = st.one_of(
    pods,
    st.builds(mangle, pods, edits),
    st.builds(mangle, st.sampled_from(SEEDS), edits),
    st.sampled_from(SEEDS),
)
# Plausible pods: valid names and mostly valid values, so that many reviews convert.
valid_values = st.one_of(st.integers(0, 4), st.sampled_from(["1", "2", "1024", "30", "50", "100"]))
good_values = st.one_of(valid_values, valid_values, valid_values, resource_values)
plausible_containers = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["main", "side", "init-a", "worker"]),
        "image": st.just("busybox"),
        "resources": st.fixed_dictionaries(
            {"limits": st.dictionaries(st.sampled_from([*RESOURCES[:10], "cpu"]), good_values, max_size=3)},
            optional={"claims": claim_refs},
        ),
    },
    optional={"env": st.lists(env, max_size=1)},
)
plausible_pods = st.builds(
    lambda meta, cs, init: {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": list({c["name"]: c for c in cs}.values()),
                 **({"initContainers": [dict(init, name="prep")]} if init else {})},
    },
    metadata,
    st.lists(plausible_containers, min_size=1, max_size=3),
    st.one_of(st.none(), plausible_containers),
)  # fmt: skip
mangled_pods = st.one_of(plausible_pods, plausible_pods, mangled_pods, st.builds(mangle, plausible_pods, edits))
reviews = st.fixed_dictionaries(
    {
        "apiVersion": st.just("admission.k8s.io/v1"),
        "kind": st.just("AdmissionReview"),
        "request": st.fixed_dictionaries(
            {
                "uid": st.builds(lambda: str(uuid.uuid4())),
                "operation": st.sampled_from(["CREATE"] * 8 + ["UPDATE", "DELETE"]),
                "resource": st.sampled_from([{"group": "", "version": "v1", "resource": "pods"}] * 8
                                            + [{"group": "", "version": "v1", "resource": "configmaps"}]),
                "namespace": st.sampled_from(["default"] * 8 + ["missing-ns", ""]),
                "object": mangled_pods,
            },
            optional={
                "dryRun": st.sampled_from([True, False, False]),
                "name": names,
            },
        ),
    }
)  # fmt: skip
bodies = st.one_of(
    st.builds(lambda r: json.dumps(r).encode(), reviews),
    st.builds(lambda r: json.dumps(r).encode(), reviews),
    st.builds(lambda r: json.dumps(r).encode(), reviews),
    st.builds(lambda r, e: json.dumps(mangle(r, e)).encode(), reviews, edits),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.binary(max_size=64),
)


def _uid(body: bytes) -> str:
    try:
        data = json.loads(body)
        uid = data["request"]["uid"]
        return uid if isinstance(uid, str) else ""
    except Exception:
        return ""


def _object(body: bytes) -> Any:
    return json.loads(body)["request"]["object"]


async def _send(client: TestClient, body: bytes) -> dict[str, Any]:
    resp = await client.post("/mutate", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert isinstance(response["allowed"], bool)
    assert response["uid"] == _uid(body)
    if not response["allowed"]:
        message = response["status"]["message"]
        assert isinstance(message, str) and message.strip()
        assert "patch" not in response
    return dict(response)


async def _check(client: TestClient, body: bytes, seen: collections.Counter[str]) -> None:
    response = await _send(client, body)
    seen["reviews"] += 1
    if not response["allowed"]:
        seen["denied"] += 1
        return
    if "patch" not in response:
        seen["allowed"] += 1
        return
    seen["patched"] += 1
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    request = json.loads(body)["request"]
    new = jsonpatch.apply_patch(copy.deepcopy(request["object"]), ops)
    request["object"] = new
    request["uid"] = str(uuid.uuid4())
    again = await _send(client, json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                            "request": request}).encode())  # fmt: skip
    seen["reviews"] += 1
    assert again["allowed"] and "patch" not in again, f"not idempotent: {again}"


def test_random_and_mangled_reviews_are_answered_well_formed(tmp_path, monkeypatch: pytest.MonkeyPatch):
    # Thousands of denials are expected; keep only errors (an internal error logs its traceback).
    monkeypatch.setattr(logs.logger(), "level", logging.ERROR)
    seen: collections.Counter[str] = collections.Counter()
    with asyncio.Runner() as runner:

        async def start() -> tuple[APIServer, KubeClient, TestClient, Metrics]:
            api = APIServer(validate=False)  # schema checks of what we create are in test_server.py
            await api.start()
            client = await KubeClient.connect(api.write_kubeconfig(tmp_path / "kubeconfig"))
            metrics = Metrics()
            webhook = Webhook(
                Converter(vendors.admission_vendors()),
                client=client,
                metrics=metrics,
                templates=TemplateStore(client, metrics, deadline=2.0),
                inventory_refresh=0,
            )
            test_client = TestClient(TestServer(webhook.app()))
            await test_client.start_server()
            return api, client, test_client, metrics

        api, kube, client, metrics = runner.run(start())

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(bodies, st.integers(0, 2**32))
        def check(body: bytes, seed: int) -> None:
            async def run_batch() -> None:
                for variant in variants(body, seed):
                    await _check(client, variant, seen)

            runner.run(run_batch())

        try:
            check()
        finally:

            async def stop() -> None:
                await client.close()
                await kube.close()
                await api.stop()

            runner.run(stop())
    errors = sum(s.value for m in metrics.reviews.collect() for s in m.samples if s.labels.get("outcome") == ERROR)
    assert errors == 0, f"{errors} reviews ended in the internal-error path (see the log); {dict(seen)}"
    assert seen["reviews"] >= VARIANTS * EXAMPLES, seen
    # The generators reach every kind of answer, not only denials.
    for kind in ("denied", "allowed", "patched"):
        assert seen[kind] >= seen["reviews"] // 50, seen
