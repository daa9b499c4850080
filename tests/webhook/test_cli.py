"""``python -m webhook convert`` as a user runs it: real processes, files, stdin, exit codes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
import yaml

from e2e.apiserver import APIServer
from webhook.cli import EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK, build_parser

from .conftest import (
    INVENTORY,
    ROOT,
    SEED_PODS,
    pod_vendors,
    registered_vendors,
    seed_pods,
    validate,
    vendor_slices,
)

CONVERT = [sys.executable, "-m", "webhook", "convert"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONVERT, *args], input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_seed_pods_with_an_inventory_of_every_vendor(tmp_path):
    with open(INVENTORY, encoding="utf-8") as handle:
        slices = [d for d in yaml.safe_load_all(handle) if d] + vendor_slices()
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump_all(slices))
    proc = run("-f", str(SEED_PODS), "--inventory", str(inventory))
    pods = seed_pods()
    refused = {name for name, pod in pods.items() if pod_vendors(pod) - registered_vendors()}
    out = docs(proc.stdout)
    for doc in out:
        validate(doc)
    printed = {d["metadata"]["name"] for d in out if d["kind"] == "Pod"}
    templates = [d for d in out if d["kind"] == "ResourceClaimTemplate"]
    nvidia = {n for n, p in pods.items() if pod_vendors(p) == {"nvidia"}}
    assert nvidia <= printed
    assert not printed & refused
    assert len(templates) >= len(nvidia)
    for doc in out:
        if doc["kind"] == "Pod":
            refs = {e["resourceClaimTemplateName"] for e in doc["spec"]["resourceClaims"]}
            assert refs <= {t["metadata"]["name"] for t in templates}
    for name in refused:
        assert f"pod default/{name}" in proc.stderr and "not enabled" in proc.stderr
    assert proc.returncode == (EXIT_DENIED if refused else EXIT_OK), proc.stderr
    assert "Traceback" not in proc.stderr


def test_stdin_and_only_nvidia_pods_exit_zero():
    pods = seed_pods()
    text = yaml.safe_dump_all([p for p in pods.values() if pod_vendors(p) == {"nvidia"}])
    proc = run("-f", "-", "--inventory", str(INVENTORY), stdin=text)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stderr == ""
    assert sum(1 for d in docs(proc.stdout) if d["kind"] == "Pod") == 6


def test_without_inventory_sizes_are_noted_and_percentages_explained():
    limits = {"nvidia.com/gpumem": 1024}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
           "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": limits}}]}}  # fmt: skip
    proc = run("-f", "-", stdin=yaml.safe_dump(pod))
    assert proc.returncode == EXIT_OK and "not checked against device sizes" in proc.stderr
    pod["spec"]["containers"][0]["resources"]["limits"] = {"nvidia.com/gpumem-percentage": 10}
    proc = run("-f", "-", stdin=yaml.safe_dump(pod))
    assert proc.returncode == EXIT_DENIED
    assert "--inventory" in proc.stderr and proc.stdout == ""
    proc = run("-f", "-", "--inventory", str(INVENTORY), stdin=yaml.safe_dump(pod))
    assert proc.returncode == EXIT_OK, proc.stderr
    (template,) = [d for d in docs(proc.stdout) if d["kind"] == "ResourceClaimTemplate"]
    assert len(template["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"]) == 3


def test_lists_are_expanded_and_other_objects_pass_through():
    listing = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "b"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"},
         "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}},
    ]}  # fmt: skip
    proc = run("-f", "-", stdin=yaml.safe_dump(listing))
    assert proc.returncode == EXIT_OK, proc.stderr
    out = docs(proc.stdout)
    assert [d["kind"] for d in out] == ["ConfigMap", "Pod", "ResourceClaimTemplate"]
    assert out[0] == listing["items"][0]
    assert out[2]["metadata"]["namespace"] == "ml"


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (["-f", "/nonexistent.yaml"], None, "cannot read /nonexistent.yaml"),
        (["-f", "-"], "a: [\n", "not YAML or JSON"),
        (["-f", "-"], "- 1\n- 2\n", "document 1 is not a Kubernetes object"),
        (["-f", "-"], "", "no Kubernetes objects"),
        (["-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: [1]\n", "not a well-formed Pod"),
        (["-f", "-", "--inventory", "/nonexistent"], "apiVersion: v1\nkind: Pod\n", "inventory"),
        (["-f", "-", "--vendors", "nvidia,nosuch"], "apiVersion: v1\nkind: Pod\n", "nosuch"),
        (["-f", "-", "--vendors", " , "], "apiVersion: v1\nkind: Pod\n", "--vendors is empty"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], stdin: str | None, needle: str):
    proc = run(*args, stdin=stdin)
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_usage_errors_exit_2():
    proc = subprocess.run([*CONVERT], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 2 and "-f" in proc.stderr


def test_parser_reads_serve_flags_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TESSERA_PORT", "9443")
    monkeypatch.setenv("TESSERA_CORE_POLICY", "force")
    monkeypatch.setenv("TESSERA_TLS_CERT_FILE", "/tls/tls.crt")
    args = build_parser().parse_args(["serve"])
    assert (args.port, args.core_policy, args.tls_cert_file) == (9443, "force", "/tls/tls.crt")
    args = build_parser().parse_args(["serve", "--port", "1234"])
    assert args.port == 1234  # the flag wins


async def test_kubeconfig_reads_the_inventory_from_the_cluster(tmp_path):
    slices = [d for d in yaml.safe_load_all(INVENTORY.read_text(encoding="utf-8")) if d]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
           "spec": {"containers": [{"name": "c", "image": "i",
                                    "resources": {"limits": {"nvidia.com/gpumem-percentage": 50}}}]}}  # fmt: skip
    async with APIServer.running() as api:
        for s in slices:
            api.store.put(s)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        proc = await asyncio.create_subprocess_exec(
            *CONVERT, "-f", "-", "--kubeconfig", kubeconfig,
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(yaml.safe_dump(pod).encode()), 60)
        assert proc.returncode == EXIT_OK, err.decode()
        (template,) = [d for d in docs(out.decode()) if d["kind"] == "ResourceClaimTemplate"]
        subs = template["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"]
        assert {s["name"] for s in subs} == {"a100", "h200", "l4"}
        port = api.port
    # The API server is gone: a clear one-line reason, exit 2.
    proc = await asyncio.create_subprocess_exec(
        *CONVERT, "-f", "-", "--kubeconfig", kubeconfig,
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(yaml.safe_dump(pod).encode()), 60)
    assert proc.returncode == EXIT_BAD_INPUT
    assert f"127.0.0.1:{port}" in err.decode() and len(err.decode().strip().splitlines()) == 1


def test_cluster_default_policies_from_flags(tmp_path):
    limits = {"nvidia.com/gpumem": 1024}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": limits}}]}}  # fmt: skip
    text = yaml.safe_dump(pod)
    plain = docs(run("-f", "-", stdin=text).stdout)[1]
    assert "exactly" in plain["spec"]["spec"]["devices"]["requests"][0]
    proc = run("-f", "-", "--node-scheduler-policy", "binpack", "--gpu-scheduler-policy", "spread", stdin=text)
    assert proc.returncode == EXIT_OK, proc.stderr
    template = docs(proc.stdout)[1]
    validate(template)
    assert "firstAvailable" in template["spec"]["spec"]["devices"]["requests"][0]
    assert template["spec"]["metadata"]["annotations"] == {
        "tessera.dev/gpu-scheduler-policy": "spread",
        "tessera.dev/node-scheduler-policy": "binpack",
    }
    # the pod's annotation wins over the default
    pod["metadata"]["annotations"] = {"hami.io/node-scheduler-policy": "spread"}
    overridden = docs(run("-f", "-", "--node-scheduler-policy", "binpack", stdin=yaml.safe_dump(pod)).stdout)[1]
    assert overridden["spec"]["metadata"]["annotations"] == {"tessera.dev/node-scheduler-policy": "spread"}
    bad = run("-f", "-", "--gpu-scheduler-policy", "closest", stdin=text)
    assert bad.returncode == EXIT_BAD_INPUT and "--gpu-scheduler-policy" in bad.stderr and not bad.stdout
