"""Rendering the chart with the project's helm (.tools/bin/helm, installed and sha256-checked by setup)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tessera"
ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
HELM = REPO / ".tools" / "bin" / "helm"
RELEASE = "tessera"
NAMESPACE = "tessera-system"
KUBE_VERSIONS = ("1.34.0", "1.36.0")

Obj = dict[str, Any]


def helm_env(home: Path) -> dict[str, str]:
    """Helm's caches and config in a scratch dir, so a render never reads the user's helm setup."""
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home)
    env.pop("KUBECONFIG", None)
    return env


def helm_cmd(*args: str) -> list[str]:
    if not HELM.exists():
        raise AssertionError(f"{HELM} is missing: run `make setup` (scripts/install-helm.sh) first")
    return [str(HELM), *args]


def template_args(
    *,
    values: Iterable[Path] = (),
    sets: Mapping[str, str] | None = None,
    kube_version: str = KUBE_VERSIONS[0],
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", kube_version]
    for v in values:
        args += ["-f", str(v)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def run_helm(args: Sequence[str], home: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(helm_cmd(*args), capture_output=True, text=True, env=helm_env(home), timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def parse(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(home: Path, **kwargs: Any) -> list[Obj]:
    return parse(run_helm(template_args(**kwargs), home).stdout)


def find(objs: Iterable[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def containers(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def workloads(objs: Iterable[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in ("Deployment", "DaemonSet")]


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value is None:
            out.pop(key, None)  # helm: null deletes a default
        else:
            out[key] = value
    return out


def effective_values(*files: Path) -> dict[str, Any]:
    """values.yaml with ``files`` merged over it the way helm coalesces them (maps merge, lists replace)."""
    merged: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for f in files:
        merged = _merge(merged, yaml.safe_load(f.read_text()) or {})
    return merged
