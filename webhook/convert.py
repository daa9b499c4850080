"""Pod -> JSONPatch + ResourceClaimTemplate: the webhook's conversion (docs/webhook.md), a pure function.

:meth:`Converter.convert` reads a Pod (a plain dict, as the API server sends it), asks every enabled
vendor what each container wants, and answers a :class:`Result`: allowed with no patch (nothing to
convert, the fast path), allowed with a JSONPatch and one ResourceClaimTemplate, or denied with a
message that says what to change. It never trusts our own ``tessera.dev/`` annotations: whether a
pod is converted is decided by its content, and annotations a user set under our domain are
overwritten or removed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

import vendors as vendor_registry
from vendors.base import (
    DOMAIN,
    MIB,
    OPT_OUT_KEY,
    OPT_OUT_VALUE,
    AdmissionVendor,
    AttributeMatchingVendor,
    ConversionError,
    DeviceAsk,
    SharingConfig,
    SharingPolicy,
    host_dirs,
)

from . import safety, spreading
from .claimspec import TEMPLATE_NAME_RE, Want, build_template, is_dns_label
from .inventory import Inventory
from .placement import NO_POLICIES, Policies, policies_for
from .placement import notes as policy_notes

CLAIM_NAME = "tessera"
"""Name of the pod's claim entry (``spec.resourceClaims[].name``); suffixed when already taken."""
TEMPLATE_ANNOTATION = f"{DOMAIN}/claim-template"
"""Pod annotation: the template the pod's claim comes from."""
CONVERTED_ANNOTATION = f"{DOMAIN}/converted"
"""Pod annotation: JSON record of what was converted, per container (resources and env removed)."""
_DOMAIN_PREFIX = f"{DOMAIN}/"

HAMI_SCHEDULER_NAMES = frozenset({"hami-scheduler"})
"""Scheduler names of HAMi's extender, dropped from converted pods (other schedulers are left alone)."""

MEMO_SIZE = 512
"""Entries kept in each memo of :class:`Converter` (set ``memo_size = 0`` to measure without them)."""

Patch = list[dict[str, Any]]


@dataclass(frozen=True)
class Result:
    """The answer for one pod."""

    allowed: bool
    message: str = ""
    """Why the pod is denied (empty when allowed)."""
    patch: Patch = field(default_factory=list)
    """JSONPatch (RFC 6902) ops against the pod as received; empty: admit unchanged."""
    template: dict[str, Any] | None = None
    """The ResourceClaimTemplate the patched pod refers to (to be ensured in the pod's namespace)."""
    vendors: tuple[str, ...] = ()
    """Vendors whose resources the pod names (for metrics), sorted."""
    notes: tuple[str, ...] = ()
    """Things the user should know that are not errors (e.g. checks skipped without an inventory)."""
    malformed: bool = False
    """Denied because the object is not a well-formed Pod (rather than a pod Tessera refuses)."""
    warnings: tuple[str, ...] = ()
    """Things the pod's author should know now (sent back as admission warnings, which kubectl prints)."""


class MalformedPod(ConversionError):
    """The object is not shaped like a Pod where conversion reads it."""


ALLOWED = Result(allowed=True)


def escape(segment: str) -> str:
    """One JSON-pointer (RFC 6901) segment: ``nvidia.com/gpu`` -> ``nvidia.com~1gpu``."""
    return segment.replace("~", "~0").replace("/", "~1")


@dataclass
class _Edit:
    """What conversion removes from and adds to one container."""

    path: tuple[str, int]
    container: Mapping[str, Any]
    name: str
    remove: set[str] = field(default_factory=set)
    env_remove: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)


class Converter:
    """Conversion with a fixed set of enabled vendors and policies; safe to share, holds no pod state.

    ``policy``: the cluster's sharing policy (what goes into each ``SharingConfig``, and the task
    priority a pod may ask for). ``opt_out_namespaces``: the namespaces, listed by the cluster admin,
    where a pod's ``tessera.dev/webhook: ignore`` label or annotation is honoured (elsewhere it is
    not, and the pod is told so). ``host_dirs``: Tessera's directories on the nodes, which no pod
    with shares may mount (default: the drivers' defaults for the enabled vendors). ``scheduling``:
    the cluster's default scheduling policies; the pod's HAMi annotations override each.
    ``spread_window``: seconds of the admission windows node spread groups pods by (0: none; see
    :mod:`.spreading`); ``clock`` gives the admission time.
    """

    def __init__(
        self,
        vendors: Sequence[AdmissionVendor],
        *,
        policy: SharingPolicy | None = None,
        opt_out_namespaces: Iterable[str] = (),
        host_dirs: Sequence[str] | None = None,
        scheduling: Policies = NO_POLICIES,
        spread_window: float = spreading.DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vendors: dict[str, AdmissionVendor] = {v.names.vendor: v for v in vendors}
        self.spread_window = spread_window
        self.clock = clock
        self.policy = policy or SharingPolicy()
        self.opt_out_namespaces = frozenset(opt_out_namespaces)
        self.host_dirs: tuple[str, ...] = (
            tuple(host_dirs) if host_dirs is not None else default_host_dirs(self.vendors.values())
        )
        self.scheduling = scheduling
        self._matching = {n: v for n, v in self.vendors.items() if isinstance(v, AttributeMatchingVendor)}
        self._classified: dict[str, str | None] = {}
        # Memos of pure steps, for the many pods that share a shape (the replicas of one workload).
        self._selectors: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._templates: dict[tuple[Any, ...], tuple[dict[str, Any], tuple[str, ...]]] = {}
        self.memo_size = MEMO_SIZE

    def _classify(self, resource: str) -> str | None:
        vendor = self._classified.get(resource, "")
        if vendor == "":
            vendor = vendor_registry.vendor_for_resource(resource) if isinstance(resource, str) else None
            if len(self._classified) > 4096:
                self._classified.clear()
            self._classified[resource] = vendor
        return vendor

    def convert(self, pod: Any, namespace: str, inventory: Inventory | None = None) -> Result:
        """Convert one pod; ``inventory`` resolves memory percentages and checks memory sizes."""
        seen: set[str] = set()
        try:
            return self._convert(pod, namespace, inventory, seen)
        except ConversionError as exc:
            return Result(
                allowed=False,
                message=str(exc),
                vendors=tuple(sorted(seen)),
                malformed=isinstance(exc, MalformedPod),
            )

    # --- the fast path ------------------------------------------------------------------------------

    def _convert(self, pod: Any, namespace: str, inventory: Inventory | None, seen: set[str]) -> Result:
        if not isinstance(pod, dict):
            raise MalformedPod("the request object is not a Pod (expected a JSON object)")
        meta = pod.get("metadata")
        if meta is None:
            meta = {}
        elif not isinstance(meta, dict):
            raise MalformedPod("metadata must be an object")
        labels = meta.get("labels")
        annotations = meta.get("annotations")
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            raise MalformedPod("spec must be an object")
        if (isinstance(labels, dict) and labels.get(OPT_OUT_KEY) == OPT_OUT_VALUE) or (
            isinstance(annotations, dict) and annotations.get(OPT_OUT_KEY) == OPT_OUT_VALUE
        ):
            if namespace in self.opt_out_namespaces:
                return self._opted_out(spec)
            result = self._scan(pod, meta, spec, namespace, inventory, seen)
            warning = (
                f"{OPT_OUT_KEY}={OPT_OUT_VALUE} is honoured only in the namespaces the cluster admin lists "
                f"(Helm value webhook.optOutNamespaces), and {namespace!r} is not one of them: the pod was "
                "handled like any other"
            )
            return dataclasses.replace(result, warnings=(*result.warnings, warning))
        return self._scan(pod, meta, spec, namespace, inventory, seen)

    def _opted_out(self, spec: Mapping[str, Any]) -> Result:
        """A pod that opted out where that is allowed: not converted, but if it references claims (it may
        hold shares) the safety checks still apply."""
        if safety.holds_share(spec):
            containers = list(_containers(spec))
            safety.check_pod(spec, _named(containers, spec), set(), self.host_dirs)
        return Result(allowed=True, notes=(f"{OPT_OUT_KEY}={OPT_OUT_VALUE}: not converted",))

    def _scan(
        self,
        pod: Mapping[str, Any],
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
        namespace: str,
        inventory: Inventory | None,
        seen: set[str],
    ) -> Result:
        """The fast path: one scan of the resource names; the full conversion only when the pod needs it."""
        found_vendor = False
        claims = bool(spec.get("resourceClaims"))
        for key in ("initContainers", "containers"):
            items = spec.get(key)
            if not items:
                continue
            if not isinstance(items, list):
                raise MalformedPod(f"spec.{key} must be a list")
            for i, container in enumerate(items):
                if not isinstance(container, dict):
                    raise MalformedPod(f"spec.{key}[{i}] must be an object")
                resources = container.get("resources")
                if not resources:
                    continue
                if not isinstance(resources, dict):
                    raise MalformedPod(f"spec.{key}[{i}].resources must be an object")
                if resources.get("claims"):
                    claims = True
                for part in ("limits", "requests"):
                    values = resources.get(part)
                    if not values:
                        continue
                    if not isinstance(values, dict):
                        raise MalformedPod(f"spec.{key}[{i}].resources.{part} must be an object")
                    for name in values:
                        if self._classify(name) is not None:
                            found_vendor = True
        if not found_vendor and not claims:
            return ALLOWED
        return self._slow(pod, meta, spec, namespace, inventory, seen)

    # --- the full path ------------------------------------------------------------------------------

    def _slow(
        self,
        pod: Mapping[str, Any],
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
        namespace: str,
        inventory: Inventory | None,
        seen: set[str],
    ) -> Result:
        annotations = _string_map(meta.get("annotations"), "metadata.annotations")
        containers = list(_containers(spec))
        claim_entries = _claim_entries(spec)
        notes: list[str] = []

        edits: list[_Edit] = []
        wants: list[Want] = []
        vendor_selectors: dict[str, tuple[str, ...]] = {}
        vendor_matching: dict[str, tuple[str, ...]] = {}
        for path, container, name in containers:
            by_vendor = self._vendor_resources(container, name, seen)
            if not by_vendor:
                continue
            edit = _Edit(path=path, container=container, name=name)
            asks: list[tuple[AdmissionVendor, DeviceAsk]] = []
            for vendor_name, resources in sorted(by_vendor.items()):
                vendor = self.vendors[vendor_name]
                ask = vendor.parse(container)
                edit.remove.update(resources)
                if ask is None:
                    continue
                edit.remove.update(r for r in ask.consumed_resources if r in resources)
                edit.env_remove.update(ask.consumed_env)
                if ask.count > 0:
                    asks.append((vendor, ask))
            for vendor, ask in asks:
                vname = vendor.names.vendor
                if vname not in vendor_selectors:
                    vendor_selectors[vname], vendor_matching[vname] = self._annotation_terms(vendor, annotations)
                request = name if len(asks) == 1 else _suffixed(name, vname)
                edit.requests.append(request)
                wants.append(
                    Want(
                        container=name,
                        request=request,
                        names=vendor.names,
                        ask=_normalised(ask),
                        selectors=vendor_selectors[vname],
                        match_attributes=vendor_matching[vname],
                    )
                )
            edits.append(edit)

        _check_unique_requests(wants)
        references_claims = bool(claim_entries) or any(
            (c.get("resources") or {}).get("claims") for _, c, _ in containers
        )
        if wants or references_claims:
            safety.check_pod(spec, _named(containers, spec), {w.container for w in wants}, self.host_dirs)
        if wants:
            self._check_priority(wants)
            notes.extend(_check_memory(wants, inventory))

        if not edits:
            # Nothing of ours to convert, but the pod references claims: it may be one we converted
            # (reinvocation). Keep it unchanged when its annotations describe its content; otherwise
            # drop the annotations under our domain, which the user cannot be allowed to forge.
            if _record_matches(annotations, claim_entries, containers):
                if not _ours(annotations):
                    return Result(allowed=True, vendors=tuple(sorted(seen)))
                # converted before it was created (a workload whose template `python -m webhook convert`
                # rewrote, or a reinvocation): the node policy's constraint is per pod, from its owner
                policies = policies_for(annotations, self.scheduling)
                spread = _spread_patch(self._spread(policies, meta, spec), meta, notes)
                return Result(allowed=True, patch=spread, vendors=tuple(sorted(seen)), notes=tuple(notes))
            return Result(allowed=True, patch=_strip_ours(annotations), vendors=tuple(sorted(seen)))

        patch: Patch = []
        template: dict[str, Any] | None = None
        claim = ""
        if wants:
            if not namespace:
                raise ConversionError("the pod has no namespace; the claim template is created in the pod's namespace")
            policies = policies_for(annotations, self.scheduling)
            notes.extend(policy_notes(policies))
            template, placement_notes = self._template(wants, namespace, inventory, policies)
            notes.extend(placement_notes)
            claim = _claim_name({n for e in claim_entries if isinstance(n := e.get("name"), str)})
            entry = {"name": claim, "resourceClaimTemplateName": template["metadata"]["name"]}
            if "resourceClaims" in spec and isinstance(spec["resourceClaims"], list):
                patch.append({"op": "add", "path": "/spec/resourceClaims/-", "value": entry})
            else:
                patch.append({"op": "add", "path": "/spec/resourceClaims", "value": [entry]})
            patch.extend(_spread_patch(self._spread(policies, meta, spec), meta, notes))
        for edit in edits:
            patch.extend(_container_patch(edit, claim))
        if template is not None and _str(spec.get("schedulerName")) in HAMI_SCHEDULER_NAMES:
            # HAMi pods name HAMi's scheduler extender; under DRA kube-scheduler allocates the devices.
            patch.append({"op": "remove", "path": "/spec/schedulerName"})
            notes.append(f"spec.schedulerName {spec['schedulerName']!r} removed: kube-scheduler allocates DRA claims")
        if template is not None:
            patch.extend(_annotation_patch(pod.get("metadata"), annotations, template, edits))
        else:  # only zero counts: the resources go, there is nothing to record
            patch.extend(_strip_ours(annotations))
        return Result(allowed=True, patch=patch, template=template, vendors=tuple(sorted(seen)), notes=tuple(notes))

    def _spread(self, policies: Policies, meta: Mapping[str, Any], spec: Mapping[str, Any]) -> spreading.Spread:
        return spreading.for_pod(policies, meta, spec, now=self.clock(), window=self.spread_window)

    def _annotation_terms(
        self, vendor: AdmissionVendor, annotations: dict[str, str]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The vendor's CEL selectors and matched attributes for these annotations (memoised)."""
        key = (vendor.names.vendor, tuple(annotations.items()))
        terms = self._selectors.get(key)
        if terms is None:
            matcher = self._matching.get(vendor.names.vendor)
            terms = (
                tuple(vendor.selectors(annotations)),
                tuple(matcher.match_attributes(annotations)) if matcher else (),
            )
            if self.memo_size:
                if len(self._selectors) >= self.memo_size:
                    self._selectors.clear()
                self._selectors[key] = terms
        return terms

    def _template(
        self, wants: list[Want], namespace: str, inventory: Inventory | None, policies: Policies
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """:func:`build_template` and its notes, memoised on its inputs (the result is shared: treat it
        as read-only)."""
        percent = any(w.ask.memory_percent is not None for w in wants)
        key = (tuple(wants), namespace, policies, inventory if percent else None)
        found = self._templates.get(key)
        if found is None:
            notes: list[str] = []
            template = build_template(
                wants,
                namespace=namespace,
                core_policy=self.policy.core_limit_policy,
                inventory=inventory,
                policies=policies,
                notes=notes,
            )
            found = (template, tuple(notes))
            if self.memo_size:
                if len(self._templates) >= self.memo_size:
                    self._templates.clear()
                self._templates[key] = found
        return found

    def _vendor_resources(self, container: Mapping[str, Any], name: str, seen: set[str]) -> dict[str, set[str]]:
        """Names of vendor resources in the container, by vendor; refuses disabled vendors and unknown names."""
        resources = container.get("resources") or {}
        by_vendor: dict[str, set[str]] = {}
        for part in ("limits", "requests"):
            values = resources.get(part) or {}
            for resource, value in values.items():
                vendor_name = self._classify(resource)
                if vendor_name is None:
                    continue
                seen.add(vendor_name)
                vendor = self.vendors.get(vendor_name)
                if vendor is None:
                    enabled = ", ".join(sorted(self.vendors)) or "none"
                    raise ConversionError(
                        f"container {name!r} asks for {resource}: vendor {vendor_name} not enabled in this "
                        f"webhook (enabled: {enabled}); enable it with --vendors, or remove the resource"
                    )
                if not vendor.owns_resource(resource):
                    raise ConversionError(
                        f"container {name!r}: {resource} is not a {vendor_name} resource that Tessera converts; "
                        f"fix the name; if another device plugin serves it, label the pod {OPT_OUT_KEY}="
                        f"{OPT_OUT_VALUE} in a namespace where the cluster admin allows opting out "
                        f"(webhook.optOutNamespaces)"
                    )
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise ConversionError(f"container {name!r}: {resource} must be a whole number, got {_short(value)}")
                by_vendor.setdefault(vendor_name, set()).add(resource)
        return by_vendor

    def _check_priority(self, wants: Sequence[Want]) -> None:
        """The claim the webhook writes stays within the cluster's policy (the drivers check the same)."""
        for w in wants:
            if w.ask.priority is None:
                continue
            config = SharingConfig(priority=w.ask.priority, core_limit_policy=self.policy.core_limit_policy)
            problems = self.policy.check_claim(config, self.policy.defaults())
            if problems:
                raise ConversionError(
                    f"container {w.container!r} asks for task priority {w.ask.priority}: {'; '.join(problems)}; "
                    f"remove the priority from the container (low, 1, is the default) or ask the cluster admin"
                )

    def check_ephemeral(self, pod: Any, old: Any) -> Result:
        """An UPDATE of ``pods/ephemeralcontainers`` (``pod``: the whole new pod, ``old``: before): refused
        when it adds ephemeral containers to a pod that holds shares. Never a patch."""
        if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
            return Result(allowed=False, message="the request object is not a Pod with a spec", malformed=True)
        added = safety.added_ephemeral_containers(pod, old)
        if not added or not safety.holds_share(pod["spec"]):
            return ALLOWED
        return Result(
            allowed=False,
            message=(
                f"ephemeral container(s) {', '.join(repr(n) for n in added)} cannot be added: the pod holds device "
                f"shares (spec.resourceClaims), and a container added later runs next to them without the checks "
                f"the pod passed at creation and without the isolation library; debug with `kubectl exec` into "
                f"one of its containers, or with `kubectl debug --copy-to=<new pod name>`, which creates a "
                f"separate pod that is checked and converted like any other"
            ),
        )


def default_host_dirs(vendors: Iterable[AdmissionVendor]) -> tuple[str, ...]:
    """Tessera's host directories with the drivers' defaults, for the drivers of ``vendors``."""
    return host_dirs([v.names.driver for v in vendors])


# --- helpers (pure) ---------------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    """``value`` when it is a string (safe to hash or compare), else ``None``."""
    return value if isinstance(value, str) else None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedPod(f"{where} must be an object of strings")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise MalformedPod(f"{where}: {_short(k)} must map to a string, got {_short(v)}")
    return dict(value)


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[tuple[str, int], Mapping[str, Any], str]]:
    """``((key, index), container, name)`` for init containers, then containers; validates what we read."""
    names: set[str] = set()
    for key in ("initContainers", "containers"):
        items = spec.get(key) or []
        if not isinstance(items, list):
            raise MalformedPod(f"spec.{key} must be a list")
        for i, container in enumerate(items):
            if not isinstance(container, dict):
                raise MalformedPod(f"spec.{key}[{i}] must be an object")
            name = container.get("name")
            if not isinstance(name, str) or not name:
                raise MalformedPod(f"spec.{key}[{i}] has no name")
            if name in names:
                raise ConversionError(f"two containers are named {name!r}; container names must be unique")
            names.add(name)
            resources = container.get("resources") or {}
            claims = resources.get("claims")
            if claims is not None and not (isinstance(claims, list) and all(isinstance(c, dict) for c in claims)):
                raise MalformedPod(f"container {name!r}: resources.claims must be a list of objects")
            _env(container, name)
            sc = container.get("securityContext")
            if sc is not None and not isinstance(sc, dict):
                raise MalformedPod(f"container {name!r}: securityContext must be an object")
            yield (key, i), container, name


def _named(
    containers: Sequence[tuple[tuple[str, int], Mapping[str, Any], str]], spec: Mapping[str, Any]
) -> list[tuple[str, Mapping[str, Any]]]:
    """``(name, container)`` of every container the safety checks read: ``containers`` (init and regular,
    already validated) and the ephemeral ones (validated here)."""
    out = [(name, container) for _, container, name in containers]
    ephemeral = spec.get("ephemeralContainers")
    if ephemeral is None:
        return out
    if not isinstance(ephemeral, list) or not all(isinstance(c, dict) for c in ephemeral):
        raise MalformedPod("spec.ephemeralContainers must be a list of objects")
    for i, container in enumerate(ephemeral):
        name = container.get("name")
        if not isinstance(name, str) or not name:
            raise MalformedPod(f"spec.ephemeralContainers[{i}] has no name")
        _env(container, name)
        sc = container.get("securityContext")
        if sc is not None and not isinstance(sc, dict):
            raise MalformedPod(f"container {name!r}: securityContext must be an object")
        out.append((name, container))
    return out


def _env(container: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    env = container.get("env")
    if env is None:
        return []
    if not isinstance(env, list) or not all(isinstance(e, dict) for e in env):
        raise MalformedPod(f"container {name!r}: env must be a list of objects")
    return env


def _claim_entries(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    entries = spec.get("resourceClaims")
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise MalformedPod("spec.resourceClaims must be a list of objects")
    return entries


def _suffixed(name: str, vendor: str) -> str:
    suffix = f"-{vendor}"
    return name[: 63 - len(suffix)].rstrip("-") + suffix


def _check_unique_requests(wants: Sequence[Want]) -> None:
    taken: set[str] = set()
    for w in wants:
        if not is_dns_label(w.request):
            raise ConversionError(
                f"container name {w.container!r} is not a DNS label (lower-case letters, digits and '-', at most "
                f"63 characters); the device request is named after it"
            )
        if w.request in taken:
            raise ConversionError(
                f"device requests of two containers would both be named {w.request!r}; rename container {w.container!r}"
            )
        taken.add(w.request)


def _normalised(ask: DeviceAsk) -> DeviceAsk:
    """100 % of the memory is the whole device's memory, which needs no inventory (no memory request)."""
    if ask.memory_percent == 100:
        return DeviceAsk(
            count=ask.count,
            cores=ask.cores,
            priority=ask.priority,
            models=ask.models,
            consumed_resources=ask.consumed_resources,
            consumed_env=ask.consumed_env,
        )
    return ask


def _check_memory(wants: Sequence[Want], inventory: Inventory | None) -> list[str]:
    """Refuse a memory ask larger than any device; without an inventory, say it was not checked."""
    notes: list[str] = []
    for w in wants:
        if w.ask.memory_mib is None:
            continue
        if inventory is None:
            notes.append(
                f"container {w.container!r}: {w.ask.memory_mib} MiB per device not checked against device "
                f"sizes (no inventory; pass --inventory or --kubeconfig)"
            )
            continue
        largest = inventory.largest(w.names.driver)
        if largest is None or largest.memory_bytes is None:
            continue
        if w.ask.memory_mib * MIB > largest.memory_bytes:
            raise ConversionError(
                f"container {w.container!r} asks for {w.ask.memory_mib} MiB of device memory per device, but the "
                f"largest {w.names.driver} device in the cluster has {largest.memory_bytes // MIB} MiB "
                f"({largest.model or largest.name}); ask for at most that"
            )
    return notes


def _claim_name(taken: set[str]) -> str:
    name, n = CLAIM_NAME, 2
    while name in taken:
        name = f"{CLAIM_NAME}-{n}"
        n += 1
    return name


def _container_patch(edit: _Edit, claim: str) -> Patch:
    key, index = edit.path
    base = f"/spec/{key}/{index}"
    ops: Patch = []
    env = edit.container.get("env") or []
    drop = [i for i, item in enumerate(env) if _str(item.get("name")) in edit.env_remove]
    if drop and len(drop) == len(env):
        ops.append({"op": "remove", "path": f"{base}/env"})
    else:
        ops.extend({"op": "remove", "path": f"{base}/env/{i}"} for i in reversed(drop))
    resources = edit.container.get("resources") or {}
    for part in ("limits", "requests"):
        values = resources.get(part) or {}
        mine = [r for r in values if r in edit.remove]
        if mine and len(mine) == len(values):
            ops.append({"op": "remove", "path": f"{base}/resources/{part}"})
        else:
            ops.extend({"op": "remove", "path": f"{base}/resources/{part}/{escape(r)}"} for r in mine)
    refs = [{"name": claim, "request": r} for r in edit.requests]
    if refs:
        if resources.get("claims") is not None:
            ops.extend({"op": "add", "path": f"{base}/resources/claims/-", "value": r} for r in refs)
        else:
            ops.append({"op": "add", "path": f"{base}/resources/claims", "value": refs})
    return ops


def _record(edits: Sequence[_Edit]) -> str:
    record: dict[str, Any] = {}
    for edit in edits:
        resources = edit.container.get("resources") or {}
        merged: dict[str, str] = {}
        for part in ("requests", "limits"):
            for r, v in (resources.get(part) or {}).items():
                if r in edit.remove:
                    merged[r] = str(v)
        entry: dict[str, Any] = {"resources": merged}
        env = {
            e["name"]: str(e.get("value", ""))
            for e in edit.container.get("env") or []
            if _str(e.get("name")) in edit.env_remove
        }
        if env:
            entry["env"] = env
        if edit.requests:
            entry["requests"] = list(edit.requests)
        record[edit.name] = entry
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()


def _ours(annotations: Mapping[str, str]) -> list[str]:
    return [k for k in annotations if k.startswith(_DOMAIN_PREFIX) and k != OPT_OUT_KEY]


def _spread_patch(spread: spreading.Spread, meta: Mapping[str, Any], notes: list[str]) -> Patch:
    """The node policy's topology spread constraint and the labels it selects on (``meta`` exists
    whenever labels are added: they come from its owner references)."""
    if not spread.constraints:
        return []
    ops: Patch = [{"op": "add", "path": "/spec/topologySpreadConstraints", "value": spread.constraints}]
    if spread.labels and not isinstance(meta.get("labels"), dict):
        ops.append({"op": "add", "path": "/metadata/labels", "value": dict(spread.labels)})
    else:
        ops.extend({"op": "add", "path": "/metadata/labels/" + escape(k), "value": v} for k, v in spread.labels.items())
    if spread.note:
        notes.append(spread.note)
    return ops


def _strip_ours(annotations: Mapping[str, str]) -> Patch:
    return [{"op": "remove", "path": "/metadata/annotations/" + escape(k)} for k in sorted(_ours(annotations))]


def _annotation_patch(
    meta: Mapping[str, Any] | None,
    annotations: Mapping[str, str],
    template: Mapping[str, Any],
    edits: Sequence[_Edit],
) -> Patch:
    new = {CONVERTED_ANNOTATION: _record(edits), TEMPLATE_ANNOTATION: template["metadata"]["name"]}
    if meta is None:  # no metadata at all (or null): add it
        return [{"op": "add", "path": "/metadata", "value": {"annotations": new}}]
    if meta.get("annotations") is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": new}]
    ops: Patch = [
        {"op": "remove", "path": "/metadata/annotations/" + escape(k)}
        for k in sorted(_ours(annotations))
        if k not in new
    ]
    ops.extend({"op": "add", "path": "/metadata/annotations/" + escape(k), "value": v} for k, v in sorted(new.items()))
    return ops


def _record_matches(
    annotations: Mapping[str, str],
    claim_entries: Sequence[Mapping[str, Any]],
    containers: Sequence[tuple[tuple[str, int], Mapping[str, Any], str]],
) -> bool:
    """True when the pod's ``tessera.dev/`` annotations describe its content (or there are none)."""
    ours = _ours(annotations)
    if not ours:
        return True
    if set(ours) != {TEMPLATE_ANNOTATION, CONVERTED_ANNOTATION}:
        return False
    template = annotations[TEMPLATE_ANNOTATION]
    if not TEMPLATE_NAME_RE.match(template):
        return False
    claim = next((e.get("name") for e in claim_entries if e.get("resourceClaimTemplateName") == template), None)
    if not isinstance(claim, str):
        return False
    try:
        record = json.loads(annotations[CONVERTED_ANNOTATION])
    except ValueError:
        return False
    if not isinstance(record, dict) or not record:
        return False
    by_name = {name: container for _, container, name in containers}
    for name, entry in record.items():
        container = by_name.get(name)
        if container is None or not isinstance(entry, dict):
            return False
        requests = entry.get("requests", [])
        if not isinstance(requests, list):
            return False
        refs = {
            (_str(c.get("name")), _str(c.get("request")))
            for c in (container.get("resources") or {}).get("claims") or []
        }
        if any((claim, r) not in refs for r in requests):
            return False
    return True
