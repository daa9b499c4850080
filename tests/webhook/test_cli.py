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


def test_spread_window_is_a_serve_flag_and_must_be_a_duration(monkeypatch: pytest.MonkeyPatch):
    from webhook.cli import UsageError, converter_from_args

    assert converter_from_args(build_parser().parse_args(["serve"])).spread_window == 2.0
    monkeypatch.setenv("TESSERA_SPREAD_WINDOW", "0.5")
    assert converter_from_args(build_parser().parse_args(["serve"])).spread_window == 0.5
    assert converter_from_args(build_parser().parse_args(["serve", "--spread-window", "0"])).spread_window == 0
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(UsageError, match="--spread-window"):
            converter_from_args(build_parser().parse_args(["serve", "--spread-window", bad]))
    # `convert` rewrites manifests ahead of time: no admission windows in its output
    assert converter_from_args(build_parser().parse_args(["convert", "-f", "-"])).spread_window == 0


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


# --- workloads: their pod templates are what their pods become ------------------------------------------
GPU = {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4096}
POD_SPEC = {"containers": [{"name": "main", "image": "busybox:1.36", "resources": {"limits": GPU}}]}
WORKLOADS = {
    "Deployment": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "ml"},
                   "spec": {"selector": {"matchLabels": {"a": "b"}},
                            "template": {"metadata": {"labels": {"a": "b"}}, "spec": POD_SPEC}}},
    "StatefulSet": {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "w", "namespace": "ml"},
                    "spec": {"selector": {"matchLabels": {"a": "b"}}, "serviceName": "w",
                             "template": {"metadata": {"labels": {"a": "b"}}, "spec": POD_SPEC}}},
    "DaemonSet": {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "w", "namespace": "ml"},
                  "spec": {"selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}}, "spec": POD_SPEC}}},
    "ReplicaSet": {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "w", "namespace": "ml"},
                   "spec": {"selector": {"matchLabels": {"a": "b"}},
                            "template": {"metadata": {"labels": {"a": "b"}}, "spec": POD_SPEC}}},
    "Job": {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "w", "namespace": "ml"},
            "spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
    "CronJob": {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "w", "namespace": "ml"},
                "spec": {"schedule": "0 1 * * *",
                         "jobTemplate": {"spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}}}},
}  # fmt: skip


def _template(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    found: dict[str, Any] = spec["template"]
    return found


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_a_workloads_pod_template_is_converted_and_said_so(kind: str):
    workload = WORKLOADS[kind]
    proc = run("-f", "-", "--inventory", str(INVENTORY), stdin=yaml.safe_dump(workload))
    assert proc.returncode == EXIT_OK, proc.stderr
    out = docs(proc.stdout)
    assert [d["kind"] for d in out] == [kind, "ResourceClaimTemplate"]
    converted, template = out
    for doc in out:
        validate(doc)
    pod_template = _template(converted)
    (container,) = pod_template["spec"]["containers"]
    assert "limits" not in container["resources"]  # gpumem does not pass through
    assert container["resources"]["claims"] == [{"name": "tessera", "request": "main"}]
    assert pod_template["spec"]["resourceClaims"] == [
        {"name": "tessera", "resourceClaimTemplateName": template["metadata"]["name"]}
    ]
    assert template["metadata"]["namespace"] == "ml"
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request["exactly"]["capacity"]["requests"]["memory"] == "4096Mi"
    # the rest of the workload is as written
    assert converted["metadata"] == workload["metadata"]
    assert "namespace" not in (pod_template.get("metadata") or {})
    assert f"{kind} ml/w (document 1): converted its pod template" in proc.stderr
    assert "what each of its pods becomes" in proc.stderr


def test_the_pods_of_a_converted_workload_pass_the_webhook_unchanged():
    """A converted template is a valid one: the pods it creates are already converted (idempotent)."""
    import vendors
    from webhook.convert import Converter
    from webhook.inventory import load_file

    proc = run("-f", "-", "--inventory", str(INVENTORY), stdin=yaml.safe_dump(WORKLOADS["Deployment"]))
    converted = docs(proc.stdout)[0]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w-abc", **_template(converted)["metadata"]},
           "spec": _template(converted)["spec"]}  # fmt: skip
    result = Converter(vendors.admission_vendors()).convert(pod, "ml", load_file(str(INVENTORY)))
    assert result.allowed and not result.patch and result.template is None


def test_a_denied_pod_template_exits_3_and_other_objects_still_print():
    bad = {**WORKLOADS["Job"], "metadata": {"name": "bad"}}
    too_many_cores = {"limits": {"nvidia.com/gpucores": 150}}
    bad["spec"] = {"template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "busybox:1.36", "resources": too_many_cores}]}}}  # fmt: skip
    proc = run("-f", "-", stdin=yaml.safe_dump_all([bad, WORKLOADS["DaemonSet"]]))
    assert proc.returncode == EXIT_DENIED
    assert "Job default/bad (document 1) denied: container 'main': nvidia.com/gpucores" in proc.stderr
    assert [d["kind"] for d in docs(proc.stdout)] == ["DaemonSet", "ResourceClaimTemplate"]


def test_unknown_kinds_naming_vendor_resources_are_not_passed_silently():
    rollout = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"},
               "spec": {"template": {"spec": POD_SPEC}}}  # fmt: skip
    plain = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"limits": "x"}}
    proc = run("-f", "-", stdin=yaml.safe_dump_all([rollout, plain]))
    assert proc.returncode == EXIT_OK
    assert docs(proc.stdout) == [rollout, plain]
    (warning,) = proc.stderr.strip().splitlines()
    assert warning.startswith("convert: warning: argoproj.io/v1alpha1 Rollout default/r (document 1) names ")
    assert "nvidia.com/gpu, nvidia.com/gpumem and is passed through unchanged" in warning


def test_a_workload_without_a_pod_template_is_bad_input():
    proc = run(
        "-f", "-", stdin=yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert "Deployment default/d (document 1): spec is missing or not an object" in proc.stderr


def test_the_shipped_examples_convert_as_the_readme_says():
    for example in ("examples/seed-pods.yaml", "examples/workloads.yaml", "examples/hygon-pod.yaml"):
        proc = run("-f", example, "--inventory", "examples/inventory-all-vendors.yaml")
        assert proc.returncode == EXIT_OK, (example, proc.stderr)
        for doc in docs(proc.stdout):
            validate(doc)
