"""Admission webhooks as kube-apiserver calls them, from the webhook configurations the server holds.

Mutating webhooks run in order (configurations by name, webhooks in list order): rules, scope,
``namespaceSelector`` and ``objectSelector`` decide, then ``matchConditions`` (CEL, see
:mod:`.matchconditions`: a false condition skips the webhook, an evaluation error follows
``failurePolicy``: 403 Forbidden with ``Fail``); ``sideEffects`` other than ``None``/``NoneOnDryRun``
refuse a dry run; an AdmissionReview ``admission.k8s.io/v1`` goes over HTTPS to ``clientConfig.url``
(or the service registered in :attr:`WebhookAdmission.services`), verified with ``caBundle``, within
``timeoutSeconds``; a failure follows ``failurePolicy``, worded as kube-apiserver words it
(``failed calling webhook "x": failed to call webhook: Post "https://svc.ns.svc:443/path?timeout=5s":
no endpoints available for service "svc"``); the returned JSONPatch is applied and the object
re-defaulted. ``reinvocationPolicy: IfNeeded`` webhooks run once more when a later webhook changed
the object. Validating webhooks (:meth:`WebhookAdmission.validate`) run later, on the object as it
will be stored (the server calls them after name generation, uid and schema validation), side by
side. A service with several endpoints (:attr:`WebhookAdmission.services`) is called round robin, as
kube-proxy spreads the API server's calls over a Service's pods.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import jsonpatch

from . import matchconditions, strategy
from .errors import APIError
from .kinds import Kind
from .selectors import labels_match, selector_from_label_selector

if TYPE_CHECKING:
    from .server import APIServer, WriteContext

log = logging.getLogger("e2e.apiserver.admission")
Obj = dict[str, Any]


@dataclass
class WebhookCall:
    """A record of one call, for tests and the demo narration."""

    webhook: str
    operation: str
    resource: str
    namespace: str | None
    name: str
    dry_run: bool
    allowed: bool | None
    patched: bool
    error: str | None
    duration_s: float


@dataclass
class _Hook:
    config: str
    spec: Obj
    mutating: bool
    invoked: bool = field(default=False)


def _rule_matches(rule: Obj, operation: str, kind: Kind, subresource: str | None) -> bool:
    operations = rule.get("operations") or []
    if "*" not in operations and operation not in operations:
        return False
    if not _in(rule.get("apiGroups"), kind.group) or not _in(rule.get("apiVersions"), kind.version):
        return False
    resource = f"{kind.plural}/{subresource}" if subresource else kind.plural
    matched = False
    for pattern in rule.get("resources") or []:
        matched = matched or (
            pattern in ("*/*", resource)
            or (pattern == "*" and not subresource)
            or (pattern.endswith("/*") and subresource is not None and pattern[:-2] == kind.plural)
            or (pattern.startswith("*/") and subresource is not None and pattern[2:] == subresource)
        )
    if not matched:
        return False
    scope = str(rule.get("scope", "*"))
    return scope == "*" or (scope == "Namespaced") == kind.namespaced


def _in(values: Any, value: str) -> bool:
    values = values or []
    return "*" in values or value in values


class WebhookAdmission:
    """The ``admission`` hook of :class:`~e2e.apiserver.server.APIServer`."""

    def __init__(self, server: APIServer) -> None:
        self.server = server
        self.services: dict[tuple[str, str], tuple[str, int] | list[tuple[str, int]] | None] = {}
        """Webhook services: (namespace, name) -> the address of a ready endpoint, or of each of its ready
        endpoints (called in turn), or ``None`` (or an empty list) while the service has none (its pods
        are down)."""
        self.calls: list[WebhookCall] = []
        self._ssl: dict[str, ssl.SSLContext] = {}
        self._turn: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ selection
    def _hooks(self, mutating: bool) -> list[_Hook]:
        bucket = "mutatingwebhookconfigurations" if mutating else "validatingwebhookconfigurations"
        hooks = []
        for config in self.server.store.raw_items(bucket):
            for spec in config.get("webhooks") or []:
                hooks.append(_Hook(config["metadata"]["name"], spec, mutating))
        return hooks

    def _applies(self, hook: _Hook, ctx: WriteContext, obj: Obj | None) -> bool:
        spec = hook.spec
        if not any(_rule_matches(rule, ctx.operation, ctx.kind, ctx.subresource) for rule in spec.get("rules") or []):
            return False
        ns_selector = selector_from_label_selector(spec.get("namespaceSelector"))
        if ns_selector:
            if ctx.kind.kind == "Namespace":
                labels = ((obj or ctx.old or {}).get("metadata") or {}).get("labels")
                if not labels_match(ns_selector, labels):
                    return False
            elif ctx.kind.namespaced and ctx.namespace:
                namespace = self.server.store.raw("namespaces", None, ctx.namespace)
                labels = ((namespace or {}).get("metadata") or {}).get("labels")
                if not labels_match(ns_selector, labels):
                    return False
        obj_selector = selector_from_label_selector(spec.get("objectSelector"))
        if obj_selector:
            candidates = [o for o in (obj, ctx.old) if o is not None]
            if not any(labels_match(obj_selector, (o.get("metadata") or {}).get("labels")) for o in candidates):
                return False
        return True

    def _matches(self, hook: _Hook, ctx: WriteContext, obj: Obj | None) -> bool:
        """``matchConditions``: whether to call the webhook; raises 403 on an evaluation error under
        ``failurePolicy: Fail`` (upstream fails closed without calling the webhook)."""
        conditions = hook.spec.get("matchConditions") or []
        if not conditions:
            return True
        request = self._review(ctx, obj)["request"]
        request.pop("object", None)
        request.pop("oldObject", None)
        verdict = matchconditions.evaluate(conditions, {"object": obj, "oldObject": ctx.old, "request": request})
        if verdict.errors:
            name = str(hook.spec.get("name", ""))
            if hook.spec.get("failurePolicy", "Fail") == "Ignore":
                log.warning(
                    "webhook %s: match conditions failed, skipped by failurePolicy Ignore: %s",
                    name,
                    "; ".join(verdict.errors),
                )
                return False
            log.warning("webhook %s: match conditions failed, failing closed: %s", name, "; ".join(verdict.errors))
            resource = ctx.kind.group_resource
            subject = f'{resource} "{ctx.name}"' if ctx.name else resource
            raise APIError(
                403,
                f"{subject} is forbidden: {matchconditions.aggregate(verdict.errors)}",
                kind=ctx.kind,
                name=ctx.name,
            )
        return verdict.call

    def _selected(self, hook: _Hook, ctx: WriteContext, obj: Obj | None) -> bool:
        return self._applies(hook, ctx, obj) and self._matches(hook, ctx, obj)

    # ------------------------------------------------------------------ the hook
    async def __call__(self, ctx: WriteContext) -> Obj | None:
        obj = copy.deepcopy(ctx.obj) if ctx.obj is not None else None
        hooks = [h for h in self._hooks(True)]
        last_change: int | None = None
        for index, hook in enumerate(hooks):
            if not self._selected(hook, ctx, obj):
                continue
            hook.invoked = True
            changed = await self._invoke(hook, ctx, obj)
            if changed is not None:
                obj = changed
                last_change = index
        if last_change is not None:
            # IfNeeded webhooks invoked before the last change see the object once more.
            for index, hook in enumerate(hooks):
                if index >= last_change or not hook.invoked:
                    continue
                if hook.spec.get("reinvocationPolicy", "Never") != "IfNeeded":
                    continue
                if not self._selected(hook, ctx, obj):
                    continue
                changed = await self._invoke(hook, ctx, obj)
                if changed is not None:
                    obj = changed
        return obj

    async def validate(self, ctx: WriteContext, obj: Obj | None) -> None:
        """The validating webhooks, side by side, on the object as it will be stored."""
        validating = [h for h in self._hooks(False) if self._selected(h, ctx, obj)]
        await asyncio.gather(*(self._invoke(h, ctx, obj) for h in validating))

    async def _invoke(self, hook: _Hook, ctx: WriteContext, obj: Obj | None) -> Obj | None:
        """Call one webhook; the patched object when it changed it, None when it did not."""
        spec = hook.spec
        name = str(spec.get("name", ""))
        if ctx.dry_run and spec.get("sideEffects") not in ("None", "NoneOnDryRun"):
            raise APIError(400, f'admission webhook "{name}" does not support dry run')
        if "v1" not in (spec.get("admissionReviewVersions") or []):
            raise APIError(
                500,
                f'Internal error occurred: webhook "{name}" does not accept admission.k8s.io/v1 '
                "(admissionReviewVersions)",
            )
        review = self._review(ctx, obj)
        timeout = float(spec.get("timeoutSeconds", 10))
        started = asyncio.get_running_loop().time()
        call = WebhookCall(
            name, ctx.operation, ctx.kind.plural, ctx.namespace, ctx.name, ctx.dry_run, None, False, None, 0.0
        )
        self.calls.append(call)
        try:
            answer = await self._post(spec, review, timeout)
            response = answer.get("response") if isinstance(answer, dict) else None
            if not isinstance(response, dict):
                raise _CallFailed("the answer has no `response`")
            if response.get("uid") != review["request"]["uid"]:
                raise _CallFailed(f"expected response.uid={review['request']['uid']!r}, got {response.get('uid')!r}")
        except _CallFailed as exc:
            call.error = str(exc)
            call.duration_s = asyncio.get_running_loop().time() - started
            if spec.get("failurePolicy", "Fail") == "Ignore":
                log.warning("webhook %s failed, ignored by failurePolicy: %s", name, exc)
                return None
            raise APIError(500, f'Internal error occurred: failed calling webhook "{name}": {exc}') from exc
        call.duration_s = asyncio.get_running_loop().time() - started
        call.allowed = bool(response.get("allowed"))
        if not response.get("allowed"):
            status = response.get("status") or {}
            code = int(status.get("code") or 403)
            message = status.get("message") or status.get("reason") or ""
            raise APIError(
                code,
                f'admission webhook "{name}" denied the request: {message}'.rstrip(": "),
                reason=status.get("reason") or None,
            )
        if not hook.mutating or not response.get("patch"):
            return None
        if response.get("patchType") != "JSONPatch":
            self._fail_or_ignore(spec, call, f"unsupported patchType {response.get('patchType')!r}")
            return None
        try:
            operations = json.loads(base64.b64decode(response["patch"]))
            patched = jsonpatch.JsonPatch(operations).apply(copy.deepcopy(obj))
        except (ValueError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
            self._fail_or_ignore(spec, call, f"the returned JSONPatch does not apply: {exc}")
            return None
        if not isinstance(patched, dict) or (
            obj is not None
            and (patched.get("apiVersion"), patched.get("kind")) != (obj.get("apiVersion"), obj.get("kind"))
        ):
            self._fail_or_ignore(spec, call, "the patch changed apiVersion or kind")
            return None
        strategy.apply_defaults(ctx.kind, patched)
        call.patched = patched != obj
        return patched if call.patched else None

    def _fail_or_ignore(self, spec: Obj, call: WebhookCall, message: str) -> None:
        """A bad answer: raise unless ``failurePolicy: Ignore`` (then the caller skips the patch)."""
        call.error = message
        if spec.get("failurePolicy", "Fail") == "Ignore":
            log.warning("webhook %s answered badly, ignored by failurePolicy: %s", spec.get("name"), message)
            return
        raise APIError(500, f'Internal error occurred: failed calling webhook "{spec.get("name")}": {message}')

    def _review(self, ctx: WriteContext, obj: Obj | None) -> Obj:
        kind = ctx.kind
        gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
        gvr = {"group": kind.group, "version": kind.version, "resource": kind.plural}
        options_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}
        request: Obj = {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": ctx.name,
            "operation": ctx.operation,
            "userInfo": {"username": ctx.user, "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": ctx.old,
            "dryRun": ctx.dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind.get(ctx.operation, "CreateOptions")},
        }
        if ctx.namespace:
            request["namespace"] = ctx.namespace
        if ctx.subresource:
            request["subResource"] = ctx.subresource
            request["requestSubResource"] = ctx.subresource
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}

    def _ssl_context(self, ca_bundle: str | None) -> ssl.SSLContext:
        key = ca_bundle or ""
        if key not in self._ssl:
            context = ssl.create_default_context()
            if ca_bundle:
                try:
                    context.load_verify_locations(cadata=base64.b64decode(ca_bundle).decode())
                except (ValueError, ssl.SSLError) as exc:
                    raise _CallFailed(f"caBundle does not hold a PEM certificate: {exc}") from exc
            self._ssl[key] = context
        return self._ssl[key]

    def _target(self, client_config: Mapping[str, Any], timeout: float) -> tuple[str, str, str | None]:
        """(url to call, url as kube-apiserver shows it, TLS server name to verify when it differs from
        the URL's host)."""
        if client_config.get("url"):
            url = str(client_config["url"])
            return url, _with_timeout(url, timeout), None
        service = client_config.get("service") or {}
        ns, name = str(service.get("namespace")), str(service.get("name"))
        path = service.get("path") or "/"
        shown = _with_timeout(f"https://{name}.{ns}.svc:{int(service.get('port') or 443)}{path}", timeout)
        if (ns, name) not in self.services:
            raise _CallFailed(f'failed to call webhook: Post "{shown}": services "{name}" not found')
        registered = self.services[(ns, name)]
        endpoints = [registered] if isinstance(registered, tuple) else list(registered or [])
        if not endpoints:
            raise _CallFailed(f'failed to call webhook: Post "{shown}": no endpoints available for service "{name}"')
        turn = self._turn.get((ns, name), 0)
        self._turn[(ns, name)] = turn + 1
        address = endpoints[turn % len(endpoints)]
        return f"https://{address[0]}:{address[1]}{path}", shown, f"{name}.{ns}.svc"

    async def _post(self, spec: Obj, review: Obj, timeout: float) -> Any:
        client_config = spec.get("clientConfig") or {}
        url, shown, server_name = self._target(client_config, timeout)
        context = self._ssl_context(client_config.get("caBundle"))
        client = await self.server.http_client()
        try:
            async with client.post(
                url, json=review, ssl=context, server_hostname=server_name, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                if resp.status != 200:
                    raise _CallFailed(f"the server answered HTTP {resp.status}: {(await resp.text())[:200]}")
                return await resp.json(content_type=None)
        except TimeoutError as exc:
            raise _CallFailed(f'failed to call webhook: Post "{shown}": context deadline exceeded') from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                reason = f"dial tcp {exc.host}:{exc.port}: connect: connection refused"
            else:
                reason = str(exc)
            raise _CallFailed(f'failed to call webhook: Post "{shown}": {reason}') from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise _CallFailed(f'failed to call webhook: Post "{shown}": {exc}') from exc


def _with_timeout(url: str, timeout: float) -> str:
    """The URL with the ``timeout`` query kube-apiserver adds (whole seconds, rounded up)."""
    seconds = max(1, -int(-timeout // 1))
    return f"{url}{'&' if '?' in url else '?'}timeout={seconds}s"


class _CallFailed(Exception):
    pass
