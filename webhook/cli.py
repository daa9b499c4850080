"""``python -m webhook serve|convert``.

``serve`` runs the admission server (see :mod:`webhook.serve`); every flag ``--foo-bar`` also reads
the environment variable ``TESSERA_FOO_BAR`` (the flag wins).

``convert`` converts the pods of a manifest offline and prints the result as multi-document YAML:
each pod as the webhook would admit it, followed by its ResourceClaimTemplate. A workload
(Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, ReplicationController, PodTemplate)
is printed with its pod template converted, which is what each of its pods becomes (said on
stderr: the webhook itself sees the pods); other objects pass through unchanged, with a warning
when they name a vendor resource. Exit status: 0 every pod converted (or had nothing to convert), 2
bad input or usage (one line on stderr), 3 at least one pod or pod template was denied (each reason
on stderr; the others are still printed).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import jsonpatch
import yaml

import vendors as vendor_registry
from tessera_common.flags import parse_bool, parse_list
from vendors.base import CORE_LIMIT_POLICIES, AdmissionVendor, ConversionError, SharingPolicy

from . import spreading, workloads
from .convert import Converter
from .inventory import Inventory, InventoryError, load_file, parse_documents
from .placement import Policies, parse_gpu_policy, parse_node_policy

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_DENIED = 3


class UsageError(Exception):
    """Bad input or usage: printed as one line, exit status 2."""


def _env_default(flag: str, default: Any) -> Any:
    return os.environ.get("TESSERA_" + flag.lstrip("-").replace("-", "_").upper(), default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webhook",
        description="Tessera admission webhook: HAMi-style pods become DRA ResourceClaimTemplates.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{serve,convert}")

    serve = sub.add_parser(
        "serve",
        help="run the HTTPS admission server",
        description="Serve POST /mutate (AdmissionReview v1), /healthz, /readyz and /metrics over HTTPS. "
        "Every flag --foo-bar also reads the environment variable TESSERA_FOO_BAR (the flag wins).",
    )

    def opt(flag: str, default: Any = None, **kwargs: Any) -> None:
        serve.add_argument(flag, default=_env_default(flag, default), **kwargs)

    opt("--host", "0.0.0.0", help="address to listen on (default %(default)s)")
    opt("--port", 8443, type=int, help="HTTPS port (default %(default)s)")
    opt("--tls-cert-file", help="PEM certificate (chain) to serve; reloaded when the file changes")
    opt("--tls-key-file", help="PEM private key of the certificate; reloaded when the file changes")
    opt("--kubeconfig", help="kubeconfig file (default: the in-cluster service account)")
    _common(opt)
    opt(
        "--spread-window",
        spreading.DEFAULT_WINDOW,
        type=float,
        help="seconds of the admission windows within which node-spread pods avoid each other's nodes: twice "
        "the drivers' --occupancy-interval; 0: off (default %(default)s)",
    )
    opt("--log-format", "json", choices=["json", "text"], help="log format (default %(default)s)")
    opt("--log-level", "info", choices=["debug", "info", "warning", "error"], help="(default %(default)s)")
    opt(
        "--inventory-refresh-seconds",
        30.0,
        type=float,
        help="how often the device inventory is read from the ResourceSlices (default %(default)s)",
    )
    opt(
        "--template-cache-seconds",
        30.0,
        type=float,
        help="how long a template known to exist is not checked again (default %(default)s)",
    )
    opt(
        "--api-deadline-seconds",
        3.0,
        type=float,
        help="time allowed to ensure a template, retries included; keep it below the webhook timeout "
        "(default %(default)s)",
    )
    opt(
        "--tls-reload-seconds",
        2.0,
        type=float,
        help="how often the certificate files are checked (default %(default)s)",
    )
    opt(
        "--quota",
        "false",
        metavar="true|false",
        help="enforce ResourceQuota limits on Tessera's resources with HAMi's names (limits.nvidia.com/gpumem, "
        "...) for pods (/mutate) and resource claims (/validate) (default %(default)s)",
    )
    opt("--quota-namespace", help="namespace of the quota ledgers (the webhook's own; required with --quota true)")
    opt(
        "--quota-resync-seconds",
        30.0,
        type=float,
        help="how often every quota ledger is compared with the claims that exist (default %(default)s)",
    )
    opt(
        "--quota-pending-seconds",
        30.0,
        type=float,
        help="how long a pod's reservation waits for its claim to be created (default %(default)s)",
    )
    opt(
        "--quota-grace-seconds",
        60.0,
        type=float,
        help="how long a charged claim that is not seen yet is kept in the ledger (default %(default)s)",
    )

    convert = sub.add_parser(
        "convert",
        help="convert the pods of a manifest offline",
        description="Print the pods of FILE as the webhook would admit them, each followed by its "
        "ResourceClaimTemplate, as multi-document YAML; Deployments, StatefulSets, DaemonSets, ReplicaSets, "
        "Jobs, CronJobs, ReplicationControllers and PodTemplates with their pod template converted (what "
        "their pods become). Exit status: 0 all converted, 2 bad input, 3 at least one pod or pod template "
        "denied (reasons on stderr).",
    )
    convert.add_argument("-f", "--filename", required=True, metavar="FILE", help="YAML/JSON manifest; - for stdin")
    source = convert.add_mutually_exclusive_group()
    source.add_argument(
        "--inventory",
        metavar="FILE",
        help="ResourceSlices (YAML or JSON) giving the cluster's device models, for gpumem-percentage and "
        "memory-size checks",
    )
    source.add_argument("--kubeconfig", help="read the ResourceSlices from this cluster instead")
    convert.add_argument(
        "-n", "--namespace", default="default", help="namespace of pods that name none (default %(default)s)"
    )

    def copt(flag: str, default: Any = None, **kwargs: Any) -> None:
        convert.add_argument(flag, default=default, **kwargs)

    _common(copt)
    return parser


def _common(opt: Any) -> None:
    opt("--vendors", help="comma list of enabled vendors (default: every implemented one)")
    opt(
        "--core-policy",
        "default",
        choices=list(CORE_LIMIT_POLICIES),
        help="the cluster's core limit policy, written into each claim's SharingConfig (default %(default)s)",
    )
    for flag, default, text in (
        ("--allow-high-priority", "true", "pods may ask for task priority 0 (high)"),
        ("--allow-oversubscribe", "false", "claims may ask for oversubscribe (the webhook never writes it)"),
        ("--allow-core-limit-disable", "false", "the core policy may be disable"),
    ):
        opt(flag, default, metavar="true|false", help=f"cluster sharing policy: {text} (default %(default)s)")
    opt(
        "--opt-out-namespaces",
        help="comma list of namespaces where a pod's tessera.dev/webhook=ignore label or annotation is "
        "honoured (default: none)",
    )
    opt(
        "--protected-host-paths",
        help="comma list of Tessera's host directories, which no pod with shares may mount as hostPath "
        "(default: the drivers' default directories of the enabled vendors)",
    )
    opt(
        "--node-scheduler-policy",
        "",
        help="cluster default for pods without hami.io/node-scheduler-policy: binpack or spread (default: none, "
        "kube-scheduler's first fit)",
    )
    opt(
        "--gpu-scheduler-policy",
        "",
        help="cluster default for pods without hami.io/gpu-scheduler-policy: binpack, spread, mutex, numa, "
        "topology-aware or a comma chain such as binpack,numa (default: none, first fit)",
    )


def converter_from_args(args: argparse.Namespace) -> Converter:
    """The converter the flags describe; :class:`UsageError` for values that cannot work."""
    flags = {}
    for name in ("allow_high_priority", "allow_oversubscribe", "allow_core_limit_disable"):
        value = getattr(args, name)
        try:
            flags[name] = value if isinstance(value, bool) else parse_bool(str(value))
        except ValueError as exc:
            raise UsageError(f"--{name.replace('_', '-')} {exc}") from None
    try:
        policy = SharingPolicy(core_limit_policy=args.core_policy, **flags)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    protected = parse_list(args.protected_host_paths)
    for path in protected:
        if not path.startswith("/"):
            raise UsageError(f"--protected-host-paths: {path!r} is not an absolute path")
    try:
        scheduling = Policies(
            parse_node_policy(args.node_scheduler_policy or "", "--node-scheduler-policy"),
            parse_gpu_policy(args.gpu_scheduler_policy or "", "--gpu-scheduler-policy"),
        )
    except ConversionError as exc:
        raise UsageError(str(exc)) from None
    # `convert` rewrites manifests ahead of time: the admission windows are the webhook's, at creation
    window = float(getattr(args, "spread_window", 0.0))
    if not math.isfinite(window) or window < 0:
        raise UsageError(f"--spread-window must be 0 or a positive number of seconds, got {window:g}")
    return Converter(
        enabled_vendors(args.vendors),
        policy=policy,
        opt_out_namespaces=parse_list(args.opt_out_namespaces),
        host_dirs=protected or None,
        scheduling=scheduling,
        spread_window=window,
    )


def enabled_vendors(spec: str | None) -> list[AdmissionVendor]:
    if not spec:
        return vendor_registry.admission_vendors()
    names = [v.strip() for v in spec.split(",") if v.strip()]
    if not names:
        raise UsageError("--vendors is empty; name at least one vendor or leave it out")
    try:
        return vendor_registry.admission_vendors(names)
    except vendor_registry.UnknownVendorError as exc:
        raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from None


# --- convert -------------------------------------------------------------------------------------------


def _objects(docs: Sequence[Any], source: str) -> Iterator[tuple[str, Any]]:
    for n, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) or not doc.get("apiVersion"):
            raise UsageError(f"{source}: document {n} is not a Kubernetes object (it needs apiVersion and kind)")
        kind = doc["kind"]
        if kind.endswith("List") and isinstance(doc.get("items"), list):
            for m, item in enumerate(doc["items"], 1):
                if isinstance(item, dict) and "kind" not in item and kind == "PodList":
                    item = {"apiVersion": "v1", "kind": "Pod", **item}
                if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
                    raise UsageError(f"{source}: document {n}, item {m} is not a Kubernetes object")
                yield f"document {n}, item {m}", item
        else:
            yield f"document {n}", doc


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None


async def _fetch_inventory(kubeconfig: str) -> Inventory:
    from kubeapi import KubeClient, KubeError

    from .inventory import fetch

    try:
        client = await KubeClient.connect(kubeconfig, timeout=10.0)
    except Exception as exc:  # kubeconfig loading raises many kinds
        raise UsageError(f"cannot use kubeconfig {kubeconfig}: {exc}") from None
    try:
        return await fetch(client)
    except KubeError as exc:
        raise UsageError(f"cannot read ResourceSlices from the API server: {exc}") from None
    finally:
        await client.close()


def run_convert(args: argparse.Namespace, out: Any = None, err: Any = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    converter = converter_from_args(args)
    inventory: Inventory | None = None
    try:
        if args.inventory:
            inventory = load_file(args.inventory)
        elif args.kubeconfig:
            inventory = asyncio.run(_fetch_inventory(args.kubeconfig))
    except InventoryError as exc:
        raise UsageError(f"inventory: {exc}") from None
    source = "stdin" if args.filename == "-" else args.filename
    try:
        docs = parse_documents(_read(args.filename), source)
    except InventoryError as exc:
        raise UsageError(str(exc)) from None
    objects = list(_objects(docs, source))
    if not objects:
        raise UsageError(f"{source}: no Kubernetes objects in it")

    emitted: list[Any] = []
    templates: set[tuple[str, str]] = set()
    denied = 0
    for where, obj in objects:
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        namespace = str(meta.get("namespace") or args.namespace)
        name = meta.get("name") or meta.get("generateName") or "?"
        is_pod = obj.get("kind") == "Pod" and obj.get("apiVersion") == "v1"
        path = None if is_pod else workloads.template_path(obj)
        if not is_pod and path is None:
            asked = workloads.vendor_resources(obj)
            if asked:
                print(
                    f"convert: warning: {obj.get('apiVersion')} {obj.get('kind')} {namespace}/{name} ({where}) "
                    f"names {', '.join(asked)} and is passed through unchanged: convert knows the pod templates of "
                    f"{', '.join(sorted({k for _, k in workloads.TEMPLATE_PATHS}))}; the webhook will convert "
                    f"the pods it creates",
                    file=err,
                )
            emitted.append(obj)
            continue
        if is_pod:
            label, pod = f"pod {namespace}/{name} ({where})", obj
        else:
            assert path is not None
            label = f"{obj['kind']} {namespace}/{name} ({where})"
            try:
                pod = workloads.template_as_pod(obj, path, namespace)
            except workloads.NotAWorkload as exc:
                raise UsageError(f"{source}: {label}: {exc}") from None
        result = converter.convert(pod, namespace, inventory)
        if not result.allowed:
            if result.malformed:
                raise UsageError(f"{source}: {label} is not a well-formed Pod: {result.message}")
            print(f"convert: {label} denied: {result.message}", file=err)
            denied += 1
            continue
        for note in (*result.notes, *result.warnings):
            print(f"convert: note: {label}: {note}", file=err)
        converted = jsonpatch.apply_patch(pod, result.patch) if result.patch else pod
        if is_pod:
            emitted.append(converted)
        else:
            assert path is not None
            emitted.append(workloads.with_pod(obj, path, converted, namespace) if result.patch else obj)
            what = "converted" if result.patch else "nothing to convert in"
            print(
                f"convert: note: {label}: {what} its pod template ({'.'.join(path)}), which is what each of its "
                f"pods becomes (the webhook converts the pods as they are created)",
                file=err,
            )
        if result.template is not None:
            key = (result.template["metadata"]["namespace"], result.template["metadata"]["name"])
            if key not in templates:
                templates.add(key)
                emitted.append(result.template)
    if emitted:
        yaml.safe_dump_all(emitted, out, sort_keys=False, width=1_000_000, explicit_start=True)
    return EXIT_DENIED if denied else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            return run_convert(args)
        from .serve import run_serve

        return run_serve(args)
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
