"""The HTTP face of the stand-in: kube-apiserver's REST paths on aiohttp.

Request path, in kube-apiserver's order: decode (+ scheme defaults) -> built-in admission -> mutating
admission webhooks -> REST strategy (name generation, system metadata, status handling) -> schema
validation -> validating admission webhooks (which see the generated name and the uid) -> storage
(conflict and existence checks). ``dryRun=All`` runs every step but the last.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import ClientSession, ClientTimeout, web

from . import events, kinds, managed, openapi, patching, protobuf, quantities, strategy, streams, tables
from .admission import WebhookAdmission
from .errors import APIError, already_exists, bad_request, conflict, invalid, not_found
from .faults import Faults
from .kinds import Kind
from .schemas import drop_fields, unknown_fields
from .selectors import (
    FieldRequirement,
    LabelRequirement,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from .store import Event, Store, fill_system_metadata, now_rfc3339
from .validation import SchemaValidator

log = logging.getLogger("e2e.apiserver")

Obj = dict[str, Any]
VERSION = {
    "major": "1",
    "minor": "34",
    "gitVersion": "v1.34.0-tessera-e2e",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-08-27T00:00:00Z",
    "goVersion": "go1.24.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: Mapping[str, str]
    status: int


@dataclass
class Decoding:
    """How a write's body is decoded: ``fieldValidation`` (Strict refuses unknown fields, Warn and Ignore
    drop them) and the warnings the response carries (``Warning: 299 - "..."`` headers)."""

    validation: str = "Warn"
    warnings: list[str] = field(default_factory=list)
    manager: str = ""
    """The field manager of the write (``fieldManager``, else the User-Agent's product)."""
    force: bool = False
    """``force=true`` on an apply: take the fields other managers own."""

    @classmethod
    def of(cls, query: Mapping[str, str], user_agent: str = "") -> Decoding:
        value = query.get("fieldValidation") or "Warn"
        if value not in ("Ignore", "Warn", "Strict"):
            raise bad_request(
                f"fieldValidation parameter unsupported: {value}. Supported values are: Ignore, Warn, Strict"
            )
        return cls(value, manager=managed.manager_of(query, user_agent), force=_parse_bool(query.get("force")))


@dataclass
class WriteContext:
    """What admission and validation learn about one write."""

    operation: str  # CREATE, UPDATE, DELETE
    kind: Kind
    subresource: str | None
    namespace: str | None
    name: str
    obj: Obj | None
    old: Obj | None
    dry_run: bool
    user: str


Admission = Callable[[WriteContext], Awaitable[Obj | None]]
Validation = Callable[[WriteContext, Obj | None], Awaitable[None]]
Validator = Callable[[Kind, Obj], list[tuple[str, str]]]


def _random_suffix() -> str:
    return "".join(random.choice(_NAME_CHARS) for _ in range(5))


def _strip_type(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


class APIServer:
    """An in-memory kube-apiserver stand-in on ``http://host:port``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        store: Store | None = None,
        validate: bool = True,
        validator: Validator | None = None,
        admission: Admission | None = None,
        webhooks: bool = True,
        feature_gates: Mapping[str, bool] | None = None,
        bookmark_interval: float = 5.0,
        request_log: int = 10_000,
    ) -> None:
        self.host = host
        self.port = port
        self.store = store or Store()
        self.faults = Faults()
        self.validator: Validator | None = validator or (SchemaValidator() if validate else None)
        self.webhooks = WebhookAdmission(self)
        self.admission: Admission | None = admission or (self.webhooks if webhooks else None)
        self.validating: Validation | None = self.webhooks.validate if webhooks and admission is None else None
        self.feature_gates: dict[str, bool] = {
            "DRAConsumableCapacity": True,
            "DRADeviceTaints": True,
            "DRAResourceClaimDeviceStatus": True,
            "ResourceHealthStatus": True,
            **(feature_gates or {}),
        }
        self.bookmark_interval = bookmark_interval
        self.requests: deque[RequestRecord] = deque(maxlen=request_log)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._client: ClientSession | None = None
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if self.store.raw("namespaces", None, ns) is None:
                namespace: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                strategy.apply_defaults(kinds.kind_for_plural("namespaces"), namespace)
                strategy.prepare_for_create(kinds.kind_for_plural("namespaces"), namespace)
                self.store.put(namespace)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> AsyncIterator[APIServer]:
        server = cls(host, port, **kwargs)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running_now(self) -> bool:
        return self._site is not None

    async def start(self) -> None:
        """Serve (again) on the same port; the store survives a stop/start."""
        if self._site is not None:
            return
        app = web.Application(client_max_size=3 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            server = self._site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        self._janitor = asyncio.create_task(self._janitor_loop())
        log.info("API server stand-in serving on %s", self.url)

    async def stop(self) -> None:
        """Stop serving (clients get connection refused) and end open watches; keeps the store."""
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
            self._janitor = None
        self.store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._site = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def write_kubeconfig(self, path: str | os.PathLike[str], *, namespace: str = "default") -> str:
        """A kubeconfig for this server (for ``kubeapi.KubeClient``, kubernetes_asyncio, kubectl)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "tessera-e2e", "cluster": {"server": self.url}}],
            "users": [{"name": "tessera-e2e", "user": {"token": "tessera-e2e"}}],
            "contexts": [
                {
                    "name": "tessera-e2e",
                    "context": {"cluster": "tessera-e2e", "user": "tessera-e2e", "namespace": namespace},
                }
            ],
            "current-context": "tessera-e2e",
            "preferences": {},
        }
        text = yaml.safe_dump(config, sort_keys=False)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return str(path)

    async def http_client(self) -> ClientSession:
        """A client session owned by the server (used to reach kubelets and webhooks)."""
        if self._client is None or self._client.closed:
            self._client = ClientSession(timeout=ClientTimeout(total=None, sock_connect=5))
        return self._client

    # ------------------------------------------------------------------ plumbing
    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        status = 0
        try:
            fault = self.faults.match(request.method, request.path)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.drop:
                    if request.transport is not None:
                        request.transport.close()
                    raise ConnectionResetError("fault injection: connection dropped")
                if fault.status is not None:
                    status = fault.status
                    return _status_response(APIError(fault.status, fault.message))
            try:
                response = await handler(request)
            except APIError as exc:
                response = _status_response(exc)
            except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
                response = _status_response(bad_request(f"the request body does not decode: {exc}"))
            except (web.HTTPException, ConnectionResetError, asyncio.CancelledError):
                raise
            except Exception as exc:  # a bug in the stand-in: answer like kube-apiserver would, and log it
                log.exception("internal error serving %s %s", request.method, request.path)
                response = _status_response(APIError(500, f"internal error in the API server stand-in: {exc!r}"))
            status = response.status
            return response
        finally:
            self.requests.append(RequestRecord(request.method, request.path, dict(request.query), status))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return web.json_response(VERSION)
        if parts and parts[0] == "openapi":
            return self._openapi(request, parts[1:])
        if parts and parts[0] == "api":
            if len(parts) == 1:
                return web.json_response(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                        ],
                    }
                )
            group, version, rest = "", parts[1], parts[2:]
        elif parts and parts[0] == "apis":
            if len(parts) == 1:
                return web.json_response(_group_list())
            if len(parts) == 2:
                group_obj = _group(parts[1])
                if group_obj is None:
                    raise APIError(404, f"the server could not find the requested resource: {path}")
                return web.json_response(group_obj)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise APIError(404, f"the server could not find the requested resource: {path}")
        if group not in kinds.groups() or version not in kinds.groups()[group]:
            raise APIError(404, f"the server could not find the requested resource: {path}")
        if not rest:
            return web.json_response(_resource_list(group, version))
        watch_path = False
        if rest[0] == "watch":
            watch_path, rest = True, rest[1:]
        kind, namespace, name, sub = self._route(group, version, rest, path)
        return await self._serve(request, kind, namespace, name, sub, watch_path)

    def _route(
        self, group: str, version: str, rest: list[str], path: str
    ) -> tuple[Kind, str | None, str | None, str | None]:
        namespace: str | None = None
        if (
            rest
            and rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise APIError(404, f"the server could not find the requested resource: {path}")
        kind = kinds.kind_for_path(group, version, rest[0])
        if kind is None:
            raise APIError(404, f"the server could not find the requested resource: {path}")
        if namespace is not None and not kind.namespaced:
            raise APIError(404, f"the server could not find the requested resource: {path}")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in kind.subresources:
            raise APIError(404, f"the server could not find the requested resource: {path}")
        return kind, namespace, name, sub

    async def _serve(
        self,
        request: web.Request,
        kind: Kind,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        watch_path: bool,
    ) -> web.StreamResponse:
        method = request.method
        query = request.query
        dry_run = _dry_run(query)
        if name is None:
            if method == "GET":
                if watch_path or _parse_bool(query.get("watch")):
                    return await self._watch(request, kind, namespace)
                listed = self._list(kind, namespace, query)
                accept = request.headers.get("Accept", "")
                if tables.wants_table(accept):
                    items = [{**o, "apiVersion": kind.api_version, "kind": kind.kind} for o in listed["items"]]
                    return web.json_response(
                        tables.table(kind, items, list_meta=listed["metadata"], query=query, accept=accept)
                    )
                return web.json_response(listed)
            if method == "POST":
                if kind.namespaced and namespace is None:
                    raise APIError(
                        405,
                        f"the server does not allow this method on the requested resource "
                        f"(post {kind.plural}) without a namespace",
                    )
                body = await _read_body(request)
                decoding = Decoding.of(query, request.headers.get("User-Agent", ""))
                created = await self.create(
                    kind, namespace, body, dry_run=dry_run, user=_user(request), decoding=decoding
                )
                return _with_warnings(web.json_response(created, status=201), decoding)
            if method == "DELETE":
                return web.json_response(await self._delete_collection(kind, namespace, query, dry_run))
            raise APIError(405, f"method {method} is not allowed on a collection")
        if sub == "log":
            return await self._pod_log(request, kind, namespace, name)
        if sub == "exec":
            return await self._pod_exec(request, kind, namespace, name)
        if sub == "binding":
            if method != "POST":
                raise APIError(405, "pods/binding accepts POST only")
            binding = await _read_body(request)
            return web.json_response(await self._bind(kind, namespace, name, binding, dry_run), status=201)
        if method == "GET":
            obj = self.store.raw(kind.bucket, namespace, name)
            if obj is None:
                raise not_found(kind, name)
            accept = request.headers.get("Accept", "")
            if tables.wants_table(accept):
                meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                return web.json_response(
                    tables.table(kind, [_view(kind, obj)], list_meta=meta, query=query, accept=accept)
                )
            return web.json_response(_view(kind, obj))
        if method == "PUT":
            replacement = await _read_body(request)
            decoding = Decoding.of(query, request.headers.get("User-Agent", ""))
            updated = await self.update(
                kind, namespace, name, replacement, sub, dry_run=dry_run, user=_user(request), decoding=decoding
            )
            return _with_warnings(web.json_response(updated), decoding)
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            patch_type = patching.PATCH_TYPES.get(content_type)
            if patch_type is None:
                raise APIError(
                    415,
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(patching.PATCH_TYPES)}",
                )
            raw = await request.read()
            patch = yaml.safe_load(raw) if patch_type == "apply" else json.loads(raw or b"null")
            if patch_type == "apply" and not query.get("fieldManager"):
                raise APIError(400, "PATCH with application/apply-patch+yaml requires the fieldManager parameter")
            decoding = Decoding.of(query, request.headers.get("User-Agent", ""))
            patched, created_now = await self.patch(
                kind, namespace, name, patch_type, patch, sub, dry_run=dry_run, user=_user(request), decoding=decoding
            )
            return _with_warnings(web.json_response(patched, status=201 if created_now else 200), decoding)
        if method == "DELETE":
            options: Obj = {}
            raw = await request.read()
            if raw.strip():
                decoded = json.loads(raw)
                if isinstance(decoded, dict):
                    options = decoded
            return web.json_response(
                await self.delete(kind, namespace, name, options, query, dry_run=dry_run, user=_user(request))
            )
        raise APIError(405, f"method {method} is not allowed here")

    # ------------------------------------------------------------------ OpenAPI
    def _openapi(self, request: web.Request, rest: list[str]) -> web.Response:
        accept = request.headers.get("Accept", "")
        json_ok = not accept or any(
            t.split(";")[0].strip() in ("application/json", "*/*", "application/*") for t in accept.split(",")
        )
        if not json_ok:
            raise APIError(
                406,
                f"only application/json is served for /openapi (asked for {accept}); the OpenAPI documents in "
                "protobuf are not served by the stand-in: read /openapi/v3",
            )
        if rest == ["v2"]:
            return web.Response(body=openapi.v2_body(), content_type="application/json")
        if rest == ["v3"]:
            return web.json_response(openapi.v3_index())
        if len(rest) > 1 and rest[0] == "v3":
            found = openapi.v3_lookup("/".join(rest[1:]))
            if found is not None:
                headers = {"Cache-Control": "public, immutable"} if request.query.get("hash") else {}
                return web.Response(body=openapi.v3_body(*found), content_type="application/json", headers=headers)
        raise APIError(404, f"the server could not find the requested resource: {request.path}")

    # ------------------------------------------------------------------ list and watch
    def _selectors(self, kind: Kind, query: Mapping[str, str]) -> tuple[list[LabelRequirement], list[FieldRequirement]]:
        labels = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else []
        fields: list[FieldRequirement] = []
        if query.get("fieldSelector"):
            fields = parse_field_selector(query["fieldSelector"], kind.supports_field)
            if kind.group == "events.k8s.io":
                fields = [
                    FieldRequirement(events.FIELD_LABELS.get(f.field, f.field), f.negate, f.value) for f in fields
                ]
        return labels, fields

    def _list(self, kind: Kind, namespace: str | None, query: Mapping[str, str]) -> Obj:
        labels, fields = self._selectors(kind, query)
        items = [
            obj
            for obj in self.store.raw_items(kind.bucket, namespace)
            if labels_match(labels, obj.get("metadata", {}).get("labels")) and fields_match(fields, obj)
        ]
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"].encode()))
                start_key = (token["ns"], token["name"])
            except (ValueError, KeyError, TypeError) as exc:
                raise APIError(400, f"continue key is not valid: {exc}") from exc
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start_key]
        meta: Obj = {"resourceVersion": str(self.store.resource_version)}
        limit = int(query.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"ns": last.get("namespace", ""), "name": last["name"]}).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": kind.list_kind,
            "apiVersion": kind.api_version,
            "metadata": meta,
            "items": [_strip_type(_view(kind, o)) for o in items],
        }

    async def _watch(self, request: web.Request, kind: Kind, namespace: str | None) -> web.StreamResponse:
        query = request.query
        labels, fields = self._selectors(kind, query)
        rv_param = query.get("resourceVersion", "")
        send_initial = _parse_bool(query.get("sendInitialEvents"))
        bookmarks = _parse_bool(query.get("allowWatchBookmarks"))
        timeout = float(query.get("timeoutSeconds") or 1800)
        if rv_param not in ("", "0"):
            try:
                since = int(rv_param)
            except ValueError:
                raise bad_request(f"invalid resourceVersion {rv_param!r}") from None
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            meta = obj.get("metadata", {})
            if namespace and meta.get("namespace") != namespace:
                return False
            return labels_match(labels, meta.get("labels")) and fields_match(fields, obj)

        accept = request.headers.get("Accept", "")
        as_table = tables.wants_table(accept)

        def line(kind_of_event: str, obj: Obj) -> bytes:
            shown = _view(kind, obj)
            if as_table:
                rv = {"resourceVersion": shown["metadata"].get("resourceVersion", "")}
                shown = tables.table(kind, [shown], list_meta=rv, query=query, accept=accept)
            event = {"type": kind_of_event, "object": shown}
            return json.dumps(event, separators=(",", ":")).encode() + b"\n"

        def translate(event: Event) -> bytes | None:
            now, before = matches(event.obj), matches(event.old)
            if event.type == "ADDED":
                return line("ADDED", event.obj) if now else None
            if event.type == "DELETED":
                return line("DELETED", event.obj) if matches(event.obj) else None
            if now and before:
                return line("MODIFIED", event.obj)
            if now:
                return line("ADDED", event.obj)
            if before:
                return line("DELETED", event.obj)
            return None

        watcher = self.store.subscribe(kind.bucket)
        try:
            backlog: list[bytes] = []
            start_rv = self.store.resource_version
            if send_initial or rv_param in ("", "0"):
                for obj in self.store.raw_items(kind.bucket, namespace):
                    if matches(obj):
                        backlog.append(line("ADDED", obj))
                if send_initial and bookmarks:
                    backlog.append(_bookmark(kind, start_rv, initial_end=True))
            else:
                if since < self.store.oldest_watchable:
                    gone = APIError(
                        410, f"too old resource version: {since} ({self.store.oldest_watchable})", reason="Expired"
                    )
                    await response.write(json.dumps({"type": "ERROR", "object": gone.status()}).encode() + b"\n")
                    return response
                for event in self.store.history_since(kind.bucket, since):
                    out = translate(event)
                    if out is not None:
                        backlog.append(out)
            for chunk in backlog:
                await response.write(chunk)
            deadline = time.monotonic() + timeout
            last_rv = start_rv
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
                try:
                    async with asyncio.timeout(wait):
                        item = await watcher.queue.get()
                except TimeoutError:
                    if bookmarks and time.monotonic() < deadline:
                        await response.write(_bookmark(kind, max(last_rv, self.store.resource_version)))
                    continue
                if item is None:
                    break
                last_rv = item.rv
                out = translate(item)
                if out is not None:
                    await response.write(out)
        except ConnectionResetError:
            return response  # the client went away (it cancelled its watch): nothing to report
        finally:
            self.store.unsubscribe(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    # ------------------------------------------------------------------ writes
    def _check_namespace(self, kind: Kind, namespace: str | None, *, creating: bool) -> None:
        if not kind.namespaced or namespace is None:
            return
        ns = self.store.raw("namespaces", None, namespace)
        if ns is None:
            raise not_found(kinds.kind_for_plural("namespaces"), namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise APIError(
                403,
                f"{kind.kind.lower()}s is forbidden: unable to create new content in namespace "
                f"{namespace} because it is being terminated",
                reason="Forbidden",
                kind=kind,
            )

    def _decode(self, kind: Kind, body: Any, decoding: Decoding | None = None) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the request body is not a JSON object")
        api_version, obj_kind = body.get("apiVersion"), body.get("kind")
        if not obj_kind:
            raise bad_request(f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'")
        if not api_version:
            raise bad_request(f"Object 'apiVersion' is missing in '{json.dumps(body)[:200]}'")
        if (api_version, obj_kind) != (kind.api_version, kind.kind):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({kind.api_version})"
                if api_version != kind.api_version
                else f"the kind in the data ({obj_kind}) does not match the expected kind ({kind.kind})"
            )
        obj = copy.deepcopy(body)
        if not isinstance(obj.get("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        unknown = unknown_fields(kind, obj)
        if unknown and decoding is not None and decoding.validation == "Strict":
            listed = ", ".join(f'unknown field "{f}"' for f in unknown)
            raise bad_request(
                f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: strict decoding '
                f"error: {listed}"
            )
        drop_fields(obj, unknown)
        if decoding is not None and decoding.validation == "Warn":
            decoding.warnings.extend(f'unknown field "{f}"' for f in unknown)
        if kind.group == "events.k8s.io":
            obj = events.to_core(obj)
        obj.setdefault("metadata", {})
        quantities.canonicalize(self._storage_kind(kind), obj)
        return obj

    def _storage_kind(self, kind: Kind) -> Kind:
        return kinds.kind_for_plural("events") if kind.group == "events.k8s.io" else kind

    async def _admit(self, ctx: WriteContext) -> Obj | None:
        if self.admission is None:
            return ctx.obj
        return await self.admission(ctx)

    async def _validating(self, ctx: WriteContext, obj: Obj | None) -> None:
        """Validating admission on the object as it will be stored (after the strategy and validation)."""
        if self.validating is not None:
            await self.validating(dataclasses.replace(ctx, obj=obj), obj)

    def _validate(self, kind: Kind, obj: Obj, old: Obj | None, subresource: str | None = None) -> None:
        errors: list[tuple[str, str]] = []
        if old is not None:
            errors.extend(strategy.check_update(kind, obj, old, subresource))
        if self.validator is not None:
            errors.extend(self.validator(kind, obj))
        if errors:
            raise invalid(kind, str(obj.get("metadata", {}).get("name", "")), errors)

    async def create(
        self,
        kind: Kind,
        namespace: str | None,
        body: Any,
        *,
        dry_run: bool = False,
        user: str = "tessera-e2e",
        decoding: Decoding | None = None,
        applied: Obj | None = None,
    ) -> Obj:
        """``applied``: the configuration of a server-side apply that creates the object."""
        obj = self._decode(kind, body, decoding)
        skind = self._storage_kind(kind)
        meta = obj["metadata"]
        if skind.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        self._check_namespace(skind, namespace, creating=True)
        if not meta.get("name") and not meta.get("generateName"):
            raise invalid(skind, "", [("metadata.name", "Required value: name or generateName is required")])
        strategy.apply_defaults(skind, obj)
        strategy.drop_disabled_fields(skind, obj, self.feature_gates)
        strategy.builtin_admission(skind, obj)
        admitted = await self._admit(
            WriteContext("CREATE", skind, None, namespace, str(meta.get("name", "")), obj, None, dry_run, user)
        )
        if admitted is not None:  # a webhook's patched object is decoded again: canonical quantities
            quantities.canonicalize(skind, admitted)
        obj = admitted if admitted is not None else obj
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            for _ in range(10):
                candidate = f"{meta['generateName']}{_random_suffix()}"
                if self.store.raw(skind.bucket, namespace, candidate) is None:
                    break
            meta["name"] = candidate
        fill_system_metadata(obj)
        strategy.prepare_for_create(skind, obj)
        if decoding is not None and decoding.manager:
            now = now_rfc3339()
            if applied is not None:
                meta["managedFields"] = managed.apply(skind, None, applied, decoding.manager, force=False, now=now)[
                    "metadata"
                ].get("managedFields", [])
            else:
                managed.record_update(skind, None, obj, decoding.manager, now)
        self._validate(skind, obj, None)
        await self._validating(
            WriteContext("CREATE", skind, None, namespace, meta["name"], obj, None, dry_run, user), copy.deepcopy(obj)
        )
        if self.store.raw(skind.bucket, namespace, meta["name"]) is not None:
            raise already_exists(kind, meta["name"])
        if dry_run:
            return _view(kind, obj)
        return _view(kind, self.store.commit_create(skind, obj))

    async def update(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        body: Any,
        sub: str | None,
        *,
        dry_run: bool = False,
        user: str = "tessera-e2e",
        decoding: Decoding | None = None,
    ) -> Obj:
        skind = self._storage_kind(kind)
        self._check_namespace(skind, namespace, creating=False)
        new = self._decode(kind, body, decoding)
        meta = new["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        meta["name"] = name
        if skind.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        return await self._update(
            kind, skind, namespace, name, new, sub, dry_run=dry_run, user=user, decoding=decoding
        )

    async def _update(
        self,
        kind: Kind,
        skind: Kind,
        namespace: str | None,
        name: str,
        new: Obj,
        sub: str | None,
        *,
        dry_run: bool,
        user: str,
        decoding: Decoding | None = None,
        applied: bool = False,
    ) -> Obj:
        """``applied``: ``new`` comes from a server-side apply and carries its managedFields already."""
        old = self.store.raw(skind.bucket, namespace, name)
        if old is None:
            raise not_found(kind, name)
        wanted_rv = new["metadata"].get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        strategy.apply_defaults(skind, new)
        strategy.drop_disabled_fields(skind, new, self.feature_gates)
        admitted = await self._admit(
            WriteContext("UPDATE", skind, sub, namespace, name, new, copy.deepcopy(old), dry_run, user)
        )
        if admitted is not None:
            quantities.canonicalize(skind, admitted)
        new = admitted if admitted is not None else new
        stored = strategy.prepare_for_update(skind, new, old, sub)
        strategy.claim_status_update(skind, stored, old, self.feature_gates)
        stored["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        stored.setdefault("apiVersion", skind.api_version)
        stored.setdefault("kind", skind.kind)
        if not applied:  # managedFields are the server's: what the client sent back is not taken
            if old["metadata"].get("managedFields"):
                stored["metadata"]["managedFields"] = copy.deepcopy(old["metadata"]["managedFields"])
            else:
                stored["metadata"].pop("managedFields", None)
        self._validate(skind, stored, old, sub)
        await self._validating(
            WriteContext("UPDATE", skind, sub, namespace, name, stored, copy.deepcopy(old), dry_run, user),
            copy.deepcopy(stored),
        )
        if _without_managed(stored) == _without_managed(old):
            return _view(kind, old)  # a no-op write: no new resourceVersion, no event, as in kube-apiserver
        if decoding is not None and decoding.manager and not applied:
            managed.record_update(skind, old, stored, decoding.manager, now_rfc3339(), sub)
        if dry_run:
            return _view(kind, stored)
        result = self.store.commit_update(skind, stored, old)
        rmeta = result["metadata"]
        if (
            rmeta.get("deletionTimestamp")
            and not rmeta.get("finalizers")
            and (skind.kind != "Pod" or int(rmeta.get("deletionGracePeriodSeconds") or 0) == 0)
        ):
            self.store.commit_delete(skind, result)  # the last finalizer is gone: the object goes
        return _view(kind, result)

    async def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        sub: str | None,
        *,
        dry_run: bool = False,
        user: str = "tessera-e2e",
        decoding: Decoding | None = None,
    ) -> tuple[Obj, bool]:
        skind = self._storage_kind(kind)
        self._check_namespace(skind, namespace, creating=False)
        old = self.store.raw(skind.bucket, namespace, name)
        server_side_apply = patch_type == "apply" and sub is None
        config = self._apply_config(kind, name, patch, decoding) if server_side_apply else None
        if old is None:
            if config is not None:
                created = await self.create(
                    kind,
                    namespace,
                    copy.deepcopy(config),
                    dry_run=dry_run,
                    user=user,
                    decoding=decoding,
                    applied=config,
                )
                return created, True
            raise not_found(kind, name)
        current = _view(kind, old)
        if config is not None:
            manager = decoding.manager if decoding is not None and decoding.manager else "unknown"
            force = decoding.force if decoding is not None else False
            patched = managed.apply(kind, current, config, manager, force=force, now=now_rfc3339())
        elif patch_type == "apply":  # an apply to a subresource: merged as a strategic merge patch
            if not isinstance(patch, dict):
                raise bad_request("apply patch must be an object")
            patched = patching.strategic_merge_patch(current, patch)
        else:
            patched = patching.apply_patch(patch_type, current, patch)
        if patched.get("apiVersion") != current["apiVersion"] or patched.get("kind") != current["kind"]:
            raise bad_request("a patch may not change apiVersion or kind")
        new = self._decode(kind, patched, decoding)
        if new["metadata"].get("name") != name:
            raise bad_request("a patch may not change metadata.name")
        updated = await self._update(
            kind, skind, namespace, name, new, sub, dry_run=dry_run, user=user, decoding=decoding,
            applied=config is not None,
        )  # fmt: skip
        return updated, False

    def _apply_config(self, kind: Kind, name: str, patch: Any, decoding: Decoding | None) -> Obj:
        """The configuration of a server-side apply, checked as kube-apiserver checks it."""
        if not isinstance(patch, dict):
            raise bad_request("error decoding YAML: the apply configuration must be an object")
        if (patch.get("apiVersion"), patch.get("kind")) != (kind.api_version, kind.kind):
            raise bad_request(
                f"the apply configuration must set apiVersion: {kind.api_version} and kind: {kind.kind} "
                f"(got {patch.get('apiVersion')!r}, {patch.get('kind')!r})"
            )
        config = copy.deepcopy(patch)
        meta = config.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.setdefault("name", name) != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        unknown = unknown_fields(kind, config)
        if unknown and (decoding is None or decoding.validation != "Ignore"):
            fields = ", ".join(f".{f}: field not declared in schema" for f in unknown)
            raise bad_request(
                f"failed to create typed patch object ({kind.api_version}, Kind={kind.kind}) {name}: {fields}"
            )
        drop_fields(config, unknown)
        quantities.canonicalize(self._storage_kind(kind), config)
        return config

    async def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        options: Mapping[str, Any],
        query: Mapping[str, str],
        *,
        dry_run: bool = False,
        user: str = "tessera-e2e",
    ) -> Obj:
        skind = self._storage_kind(kind)
        old = self.store.raw(skind.bucket, namespace, name)
        if old is None:
            raise not_found(kind, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"].get("uid"):
            raise APIError(
                409,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{old['metadata'].get('uid')}",
                kind=kind,
                name=name,
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"].get("resourceVersion"):
            raise APIError(
                409,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {old['metadata'].get('resourceVersion')}",
                kind=kind,
                name=name,
            )
        grace_param = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        requested = int(grace_param) if grace_param not in (None, "") else None
        deleting = WriteContext("DELETE", skind, None, namespace, name, None, copy.deepcopy(old), dry_run, user)
        await self._admit(deleting)
        await self._validating(deleting, None)
        if skind.kind == "Namespace":
            return await self._delete_namespace(kind, old, dry_run)
        grace = strategy.graceful_delete_seconds(skind, old, requested)
        finalizers = old["metadata"].get("finalizers") or []
        if finalizers or grace > 0:
            obj = copy.deepcopy(old)
            meta = obj["metadata"]
            deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grace)
            current = meta.get("deletionGracePeriodSeconds")
            if not meta.get("deletionTimestamp") or (current is not None and grace < int(current)):
                meta["deletionTimestamp"] = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
                meta["deletionGracePeriodSeconds"] = grace
                if meta.get("generation"):
                    meta["generation"] = int(meta["generation"]) + 1
            if obj == old:
                return _view(kind, old)
            if dry_run:
                return _view(kind, obj)
            if not finalizers and grace == 0:
                return _view(kind, self.store.commit_delete(skind, old))
            return _view(kind, self.store.commit_update(skind, obj, old))
        if dry_run:
            return _view(kind, old)
        return _view(kind, self.store.commit_delete(skind, old))

    async def _delete_namespace(self, kind: Kind, old: Obj, dry_run: bool) -> Obj:
        if dry_run:
            return _view(kind, old)
        name = old["metadata"]["name"]
        obj = copy.deepcopy(old)
        if not obj["metadata"].get("deletionTimestamp"):
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            obj.setdefault("status", {})["phase"] = "Terminating"
            obj = self.store.commit_update(kind, obj, old)
        await self._empty_namespace(name)
        return _view(kind, obj)

    async def _empty_namespace(self, name: str) -> None:
        """The namespace controller's job: delete what is inside, then finalize the namespace."""
        for k in kinds.KINDS:
            if not k.namespaced or k.group == "events.k8s.io":
                continue
            for obj in list(self.store.raw_items(k.bucket, name)):
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                with contextlib.suppress(APIError):
                    await self.delete(k, name, obj["metadata"]["name"], {}, {})
        remaining = any(
            True
            for k in kinds.KINDS
            if k.namespaced and k.group != "events.k8s.io"
            for _ in self.store.raw_items(k.bucket, name)
        )
        ns = self.store.raw("namespaces", None, name)
        if not remaining and ns is not None:
            self.store.commit_delete(kinds.kind_for_plural("namespaces"), ns)

    async def _janitor_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            for ns in list(self.store.raw_items("namespaces")):
                if ns["metadata"].get("deletionTimestamp"):
                    await self._empty_namespace(ns["metadata"]["name"])

    async def _delete_collection(
        self, kind: Kind, namespace: str | None, query: Mapping[str, str], dry_run: bool
    ) -> Obj:
        labels, fields = self._selectors(kind, query)
        skind = self._storage_kind(kind)
        deleted = []
        for obj in list(self.store.raw_items(skind.bucket, namespace)):
            if labels_match(labels, obj["metadata"].get("labels")) and fields_match(fields, obj):
                deleted.append(
                    _strip_type(
                        await self.delete(
                            kind, obj["metadata"].get("namespace"), obj["metadata"]["name"], {}, query, dry_run=dry_run
                        )
                    )
                )
        return {
            "kind": kind.list_kind,
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": deleted,
        }

    async def _bind(self, kind: Kind, namespace: str | None, name: str, body: Any, dry_run: bool) -> Obj:
        if not isinstance(body, dict) or body.get("kind") != "Binding":
            raise bad_request("pods/binding needs a v1 Binding object")
        target = (body.get("target") or {}).get("name")
        if not target:
            raise invalid(kind, name, [("target.name", "Required value")])
        pod = self.store.raw("pods", namespace, name)
        if pod is None:
            raise not_found(kind, name)
        if pod["metadata"].get("deletionTimestamp"):
            raise APIError(409, f"pod {name} is being deleted, cannot be assigned to a host", kind=kind, name=name)
        if (pod.get("spec") or {}).get("nodeName"):
            raise APIError(
                409, f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"', kind=kind, name=name
            )
        wanted_uid = (body.get("metadata") or {}).get("uid")
        if wanted_uid and wanted_uid != pod["metadata"].get("uid"):
            raise APIError(
                409,
                f"Precondition failed: UID in precondition: {wanted_uid}, UID in object meta: "
                f"{pod['metadata'].get('uid')}",
                kind=kind,
                name=name,
            )
        bound = copy.deepcopy(pod)
        bound["spec"]["nodeName"] = target
        status = bound.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append(
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}
        )
        status["conditions"] = conditions
        if not dry_run:
            self.store.commit_update(kind, bound, pod)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    # ------------------------------------------------------------------ pods/log and pods/exec through the kubelet
    def _kubelet(self, pod: Obj) -> str:
        """``http://<address>:<port>`` of the kubelet of the pod's node, from the Node's status."""
        name = pod["metadata"]["name"]
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            raise bad_request(f"pod {name} does not have a host assigned")
        node = self.store.raw("nodes", None, node_name)
        if node is None:
            raise not_found(kinds.kind_for_plural("nodes"), node_name)
        status = node.get("status") or {}
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        address = next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
        if not port or not address:
            raise APIError(
                503,
                f"node {node_name} publishes no kubelet endpoint (status.addresses InternalIP and "
                "status.daemonEndpoints.kubeletEndpoint.Port)",
            )
        return f"http://{address}:{port}"

    async def _pod_exec(
        self, request: web.Request, kind: Kind, namespace: str | None, name: str
    ) -> web.StreamResponse:
        """``pods/exec``: the websocket remote command protocol, relayed to the node's kubelet.

        kube-apiserver also speaks SPDY (kubectl falls back to it when the websocket upgrade fails);
        the stand-in answers a SPDY request with a 400 that says so."""
        if request.method not in ("GET", "POST"):
            raise APIError(405, f"method {request.method} is not allowed on pods/exec")
        pod = self.store.raw("pods", namespace, name)
        if pod is None:
            raise not_found(kind, name)
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = request.query.get("container")
        if not container:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(str(n) for n in containers)}]"
                )
            container = str(containers[0])
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if not request.query.getall("command", []):
            raise bad_request("you must specify at least 1 command")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise bad_request(
                "the API server stand-in streams exec over websockets (v5.channel.k8s.io, kubectl's default) "
                "only; SPDY is not served: do not set KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"
            )
        url = f"{self._kubelet(pod)}/exec/{namespace}/{name}/{container}"
        return await streams.relay(request, await self.http_client(), url)

    # ------------------------------------------------------------------ pods/log through the kubelet
    async def _pod_log(self, request: web.Request, kind: Kind, namespace: str | None, name: str) -> web.StreamResponse:
        pod = self.store.raw("pods", namespace, name)
        if pod is None:
            raise not_found(kind, name)
        spec = pod.get("spec") or {}
        names = [c.get("name") for g in ("initContainers", "containers") for c in spec.get(g) or []]
        container = request.query.get("container")
        if not container:
            regular = [c.get("name") for c in spec.get("containers") or []]
            if len(regular) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(str(n) for n in regular)}]"
                )
            container = str(regular[0])
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        params = {
            k: v
            for k, v in request.query.items()
            if k in ("follow", "tailLines", "previous", "timestamps", "sinceSeconds", "limitBytes")
        }
        url = f"{self._kubelet(pod)}/containerLogs/{namespace}/{name}/{container}"
        client = await self.http_client()
        try:
            upstream = await client.get(url, params=params)
        except OSError as exc:
            raise APIError(500, f'Get "{url}": {exc}') from exc
        async with upstream:
            if upstream.status != 200:
                raise APIError(upstream.status, (await upstream.text())[:500])
            response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


# ---------------------------------------------------------------------- helpers
def _with_warnings(response: web.Response, decoding: Decoding) -> web.Response:
    for warning in decoding.warnings:
        response.headers.add("Warning", "299 - " + json.dumps(warning))
    return response


def _without_managed(obj: Obj) -> Obj:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"}}


def _status_response(exc: APIError) -> web.Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return web.json_response(exc.status(), status=exc.code, headers=headers)


async def _read_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise bad_request("the request has no body")
    content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
    if content_type == protobuf.CONTENT_TYPE:
        return protobuf.decode(raw)
    if content_type in ("application/yaml", "application/x-yaml"):
        return yaml.safe_load(raw)
    return json.loads(raw)


def _parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool truths, as kube-apiserver reads query flags."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def _dry_run(query: Mapping[str, str]) -> bool:
    values = query.getall("dryRun", []) if hasattr(query, "getall") else [query.get("dryRun", "")]
    for value in values:
        if value == "All":
            return True
        if value:
            raise bad_request(f"unsupported dryRun value {value!r}; only 'All' is supported")
    return False


def _user(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and auth[7:]:
        return f"token:{auth[7:][:12]}"
    return "system:anonymous"


def _view(kind: Kind, obj: Obj) -> Obj:
    """The object as this endpoint shows it (a copy)."""
    out = copy.deepcopy(obj)
    if kind.group == "events.k8s.io":
        return events.from_core(out)
    out["apiVersion"] = kind.api_version
    out["kind"] = kind.kind
    return out


def _bookmark(kind: Kind, rv: int, *, initial_end: bool = False) -> bytes:
    meta: Obj = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return (
        json.dumps(
            {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}}
        ).encode()
        + b"\n"
    )


def _group_versions(group: str) -> Obj:
    versions = kinds.groups()[group]
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
    }


def _group_list() -> Obj:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group_versions(g) for g in kinds.groups() if g]}


def _group(name: str) -> Obj | None:
    if not name or name not in kinds.groups():
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_versions(name)}


_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _resource_list(group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for k in kinds.kinds_in(group, version):
        resources.append(
            {
                "name": k.plural,
                "singularName": k.kind.lower(),
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": _VERBS,
                **({"shortNames": list(k.short_names)} if k.short_names else {}),
            }
        )
        for sub in k.subresources:
            verbs = {
                "status": ["get", "patch", "update"],
                "binding": ["create"],
                "log": ["get"],
                "exec": ["create", "get"],
                "ephemeralcontainers": ["get", "patch", "update"],
                "finalize": ["update"],
            }[sub]
            sub_kind = {"binding": "Binding", "log": "Pod", "exec": "PodExecOptions"}.get(sub, k.kind)
            resources.append(
                {
                    "name": f"{k.plural}/{sub}",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": sub_kind,
                    "verbs": verbs,
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
