"""Admin policy wins over user config: a tenant's own ResourceClaim cannot loosen isolation beyond the
cluster's sharing policy. Each attack is a claim a user writes by hand (no webhook involved), allocated
as kube-scheduler does (the claim's ``spec.devices.config`` copied with ``source: FromClaim``), and
prepared by the driver over its real gRPC socket."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest

from dra_driver.cli import ConfigError, Settings, settings_from_args
from e2e.apiserver import APIServer
from vendors.base import SharingConfig, SharingPolicy

from .helpers import claim, exists, request, result, running_driver, settings, sharing_config
from .kubelet import Claim, Kubelet
from .test_prepare import cdi_path, env_of, read_json


def user_claim(name: str, *config: dict[str, Any], requests: tuple[str, ...] = ("gpu",)) -> dict[str, Any]:
    """A claim as its author wrote it (``spec.devices.config``) with the allocation the scheduler made:
    class configs first, then the claim's own, each marked with its source."""
    reqs = [request(r, capacity={"memory": "4Gi", "cores": "30"}) for r in requests]
    results = [result(f"gpu-{i}", r, memory="4Gi", cores="30") for i, r in enumerate(requests)]
    obj = claim(name, results, reqs, config=config)
    own = [{k: v for k, v in c.items() if k != "source"} for c in config if c["source"] == "FromClaim"]
    if own:
        obj["spec"]["devices"]["config"] = copy.deepcopy(own)
    return obj


def ref(obj: dict[str, Any]) -> Claim:
    meta = obj["metadata"]
    return Claim(meta["namespace"], meta["name"], meta["uid"])


async def prepare(api: APIServer, s: Settings, *claims: dict[str, Any]) -> dict[str, Any]:
    for obj in claims:
        api.store.put(obj)
    async with running_driver(s):
        kubelet = await Kubelet(s.registry_dir).register()
        try:
            answer = await kubelet.prepare(*(ref(c) for c in claims))
        finally:
            await kubelet.close()
    return {c["metadata"]["name"]: answer.claims[c["metadata"]["uid"]] for c in claims}


async def test_a_users_claim_cannot_loosen_the_policy(api: APIServer, root: str, kubeconfig: str) -> None:
    """With the chart's defaults (core policy default, no disable, no oversubscribe) and high priority
    turned off, each loosening setting in a hand-written claim is refused; nothing is written."""
    s = settings(root, kubeconfig, "4xH200", "--no-allow-high-priority")
    disable = user_claim("no-sm-limit", sharing_config("FromClaim", coreLimitPolicy="disable"))
    high = user_claim("jump-the-queue", sharing_config("FromClaim", ["gpu"], priority=0))
    oversub = user_claim("spill", sharing_config("FromClaim", oversubscribe=True))
    # A config for another request of the same claim does not hide the loosening one.
    mixed = user_claim(
        "mixed",
        sharing_config("FromClaim", ["a"], priority=1),
        sharing_config("FromClaim", ["b"], coreLimitPolicy="disable"),
        requests=("a", "b"),
    )
    answers = await prepare(api, s, disable, high, oversub, mixed)
    expected = {
        "no-sm-limit": ("coreLimitPolicy: disable", "policy.allowCoreLimitDisable", "--allow-core-limit-disable"),
        "jump-the-queue": ("priority: 0 (high)", "policy.allowHighPriority", "--allow-high-priority"),
        "spill": ("oversubscribe: true", "policy.allowOversubscribe", "--allow-oversubscribe"),
        "mixed": ("coreLimitPolicy: disable", "policy.allowCoreLimitDisable", "request(s) ['b']"),
    }
    for obj in (disable, high, oversub, mixed):
        name = obj["metadata"]["name"]
        error = answers[name].error
        assert f"ResourceClaim default/{name}" in error and "goes beyond the cluster's sharing policy" in error
        for needle in expected[name]:
            assert needle in error, (needle, error)
        assert "spec.devices.config" in error and "DeviceClass" in error  # how to fix it
        assert not answers[name].devices
        assert not exists(cdi_path(s, obj["metadata"]["uid"]))
        assert not exists(os.path.join(s.host_lib_dir, "claims", obj["metadata"]["uid"]))


async def test_the_same_settings_from_the_device_class_are_honoured(api: APIServer, root: str, kubeconfig: str) -> None:
    """The admin writes DeviceClass config (FromClass): honoured as it is, and a claim may repeat it."""
    s = settings(root, kubeconfig, "4xH200", "--no-allow-high-priority")
    loose = {"coreLimitPolicy": "disable", "priority": 0, "oversubscribe": True}
    admin = sharing_config("FromClass", **loose)
    from_class = user_claim("class-says-so", admin)
    repeated = user_claim("repeats-the-class", admin, sharing_config("FromClaim", **loose))
    answers = await prepare(api, s, from_class, repeated)
    for obj in (from_class, repeated):
        assert answers[obj["metadata"]["name"]].error == ""
        env = env_of(read_json(cdi_path(s, obj["metadata"]["uid"])))
        assert (env["GPU_CORE_UTILIZATION_POLICY"], env["CUDA_TASK_PRIORITY"], env["CUDA_OVERSUBSCRIBE"]) == (
            "disable",
            "0",
            "true",
        )


async def test_claims_within_the_policy_and_the_policy_default(api: APIServer, root: str, kubeconfig: str) -> None:
    """Under `--core-policy force`: a claim that names no policy gets force (not the looser built-in
    default), one that asks for `default` is refused, stricter or equal settings pass."""
    s = settings(root, kubeconfig, "4xH200", "--core-policy", "force")
    silent = user_claim("names-none", sharing_config("FromClaim", priority=1))
    bare = user_claim("no-config")
    looser = user_claim("wants-default", sharing_config("FromClaim", coreLimitPolicy="default"))
    strict = user_claim("force-and-high", sharing_config("FromClaim", coreLimitPolicy="force", priority=0))
    answers = await prepare(api, s, silent, bare, looser, strict)
    for obj in (silent, bare, strict):
        assert answers[obj["metadata"]["name"]].error == "", answers[obj["metadata"]["name"]].error
        env = env_of(read_json(cdi_path(s, obj["metadata"]["uid"])))
        assert env["GPU_CORE_UTILIZATION_POLICY"] == "force"
    assert env_of(read_json(cdi_path(s, strict["metadata"]["uid"])))["CUDA_TASK_PRIORITY"] == "0"
    error = answers["wants-default"].error
    assert "coreLimitPolicy: default is looser than this cluster allows" in error
    assert "core limit policy is force" in error and "policy.coreLimitPolicy" in error


async def test_an_admin_can_allow_the_loosening_settings(api: APIServer, root: str, kubeconfig: str) -> None:
    s = settings(
        root, kubeconfig, "4xH200", "--allow-core-limit-disable", "--allow-oversubscribe", "--allow-high-priority"
    )
    loose = user_claim(
        "allowed", sharing_config("FromClaim", coreLimitPolicy="disable", priority=0, oversubscribe=True)
    )
    answers = await prepare(api, s, loose)
    assert answers["allowed"].error == ""
    env = env_of(read_json(cdi_path(s, loose["metadata"]["uid"])))
    assert (env["GPU_CORE_UTILIZATION_POLICY"], env["CUDA_TASK_PRIORITY"], env["CUDA_OVERSUBSCRIBE"]) == (
        "disable",
        "0",
        "true",
    )


def test_policy_flags_and_env() -> None:
    env = {"NODE_NAME": "n", "TESSERA_BACKEND": "mock", "TESSERA_MOCK_DEVICES": "1xL4"}
    assert settings_from_args([], env).policy == SharingPolicy()
    assert SharingPolicy() == SharingPolicy(
        core_limit_policy="default", allow_high_priority=True, allow_oversubscribe=False, allow_core_limit_disable=False
    )
    chart_env = {
        **env,
        "TESSERA_CORE_POLICY": "force",
        "TESSERA_ALLOW_HIGH_PRIORITY": "false",
        "TESSERA_ALLOW_OVERSUBSCRIBE": "true",
        "TESSERA_ALLOW_CORE_LIMIT_DISABLE": "false",
    }
    assert settings_from_args([], chart_env).policy == SharingPolicy(
        core_limit_policy="force", allow_high_priority=False, allow_oversubscribe=True
    )
    assert settings_from_args(["--allow-high-priority"], chart_env).policy.allow_high_priority
    with pytest.raises(ConfigError, match="allowCoreLimitDisable"):
        settings_from_args([], {**env, "TESSERA_CORE_POLICY": "disable"})
    with pytest.raises(ConfigError, match="core limit policy must be one of"):
        settings_from_args([], {**env, "TESSERA_CORE_POLICY": "sometimes"})
    with pytest.raises(ConfigError, match="expected true or false"):
        settings_from_args([], {**env, "TESSERA_ALLOW_OVERSUBSCRIBE": "perhaps"})


@pytest.mark.parametrize(
    ("policy", "config", "current", "problems"),
    [
        (SharingPolicy(), SharingConfig(core_limit_policy="force", priority=0), SharingConfig(), []),
        (SharingPolicy(), SharingConfig(core_limit_policy="disable"), SharingConfig(), ["coreLimitPolicy: disable"]),
        (SharingPolicy(), SharingConfig(core_limit_policy="disable"), SharingConfig(core_limit_policy="disable"), []),
        (SharingPolicy(allow_core_limit_disable=True), SharingConfig(core_limit_policy="disable"), SharingConfig(), []),
        (
            SharingPolicy(core_limit_policy="force"),
            SharingConfig(core_limit_policy="default"),
            SharingConfig(core_limit_policy="force"),
            ["default"],
        ),
        (SharingPolicy(allow_high_priority=False), SharingConfig(priority=0), SharingConfig(), ["priority: 0"]),
        (SharingPolicy(allow_high_priority=False), SharingConfig(priority=0), SharingConfig(priority=0), []),
        (SharingPolicy(), SharingConfig(oversubscribe=True), SharingConfig(), ["oversubscribe: true"]),
        (
            SharingPolicy(allow_high_priority=False),
            SharingConfig(priority=0, core_limit_policy="disable", oversubscribe=True),
            SharingConfig(),
            ["coreLimitPolicy", "priority", "oversubscribe"],
        ),
    ],
)
def test_policy_check(
    policy: SharingPolicy, config: SharingConfig, current: SharingConfig, problems: list[str]
) -> None:
    found = policy.check_claim(config, current)
    assert len(found) == len(problems), found
    for needle, text in zip(problems, found, strict=True):
        assert needle in text
