"""Kubernetes API access at the edges: plain JSON objects over ``kubernetes_asyncio``'s transport.

The webhook and the driver talk to the API server through :class:`KubeClient`. Objects stay plain
dicts (the wire format, camelCase) so that fields newer than the client's generated models (for
example ``consumedCapacity`` or ``allowMultipleAllocations``) are never dropped; the official
client supplies configuration loading (kubeconfig or in-cluster), authentication and TLS.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

Obj = dict[str, Any]

RESOURCE_V1 = "/apis/resource.k8s.io/v1"


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, status: int, reason: str, *, method: str = "", path: str = "") -> None:
        self.status = status
        self.reason = reason
        self.method = method
        self.path = path
        where = f"{method} {path}: " if method else ""
        super().__init__(f"{where}{reason} (HTTP {status})" if status else f"{where}{reason}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def unreachable(self) -> bool:
        return self.status == 0


@dataclass(frozen=True)
class ObjectRef:
    """A namespaced object by name and UID (a claim, a pod); printed ``namespace/name``."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def default_kubeconfig_exists() -> bool:
    """Whether kubectl would find a kubeconfig: a file named by ``$KUBECONFIG``, else ``~/.kube/config``."""
    listed = os.environ.get("KUBECONFIG")
    paths = listed.split(os.pathsep) if listed else [os.path.join("~", ".kube", "config")]
    return any(os.path.isfile(os.path.expanduser(p)) for p in paths if p)


def namespaced_path(group_version: str, plural: str, namespace: str, name: str | None = None) -> str:
    """``/api/v1/namespaces/ns/pods[/name]`` or ``/apis/<g>/<v>/namespaces/ns/<plural>[/name]``."""
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def cluster_path(group_version: str, plural: str, name: str | None = None) -> str:
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


class KubeClient:
    """A small async client for JSON objects; one instance per process, closed with :meth:`close`."""

    def __init__(self, api: k8s_client.ApiClient, *, timeout: float = 10.0) -> None:
        self._api = api
        self.timeout = timeout

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | None = None,
        *,
        context: str | None = None,
        timeout: float = 10.0,
        like_kubectl: bool = False,
    ) -> KubeClient:
        """From a kubeconfig file (its ``context``, else its current one), else the in-cluster service
        account. With ``like_kubectl`` and no file given, ``$KUBECONFIG`` (a ``:`` list is merged) or
        ``~/.kube/config`` is used when there is one, as kubectl does, before the service account."""
        configuration = k8s_client.Configuration()
        if kubeconfig or context or (like_kubectl and default_kubeconfig_exists()):
            await k8s_config.load_kube_config(
                config_file=kubeconfig or None, context=context, client_configuration=configuration
            )
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(k8s_client.ApiClient(configuration), timeout=timeout)

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Obj:
        """One call; the decoded JSON answer, or :class:`KubeError`."""
        response = await self._raw(method, path, body=body, query=query, content_type=content_type, timeout=timeout)
        try:
            data = await response.read()
        finally:
            response.release()
        if not data:
            return {}
        decoded = json.loads(data)
        if not isinstance(decoded, dict):
            raise KubeError(response.status, "answer is not a JSON object", method=method, path=path)
        return decoded

    async def _raw(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            response = await self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout if timeout is not None else self.timeout,
            )
        except ApiException as exc:
            raise KubeError(exc.status or 0, _reason(exc), method=method, path=path) from exc
        except TimeoutError as exc:
            raise KubeError(0, f"no answer within {timeout or self.timeout:g}s", method=method, path=path) from exc
        except (OSError, aiohttp.ClientError) as exc:
            unreachable = f"cannot reach the API server at {self.host}: {exc}"
            raise KubeError(0, unreachable, method=method, path=path) from exc
        # With _preload_content=False the client hands error answers back instead of raising them.
        status = int(getattr(response, "status", 0) or 0)
        if not 200 <= status <= 299:
            try:
                data = await response.read()
            finally:
                response.release()
            reason = _reason_from_body(data) or str(getattr(response, "reason", "") or "request failed")
            raise KubeError(status, reason, method=method, path=path)
        return response

    async def get(self, path: str) -> Obj:
        return await self.request("GET", path)

    async def text(self, path: str, **query: str) -> str:
        """A plain-text answer, e.g. ``pods/<name>/log`` with ``container=...``."""
        response = await self._raw("GET", path, query=query)
        try:
            data: bytes = await response.read()
            return data.decode("utf-8", "replace")
        finally:
            response.release()

    async def list(self, path: str, **selectors: str) -> Obj:
        """List; keyword arguments become query parameters (``labelSelector``, ``fieldSelector``)."""
        return await self.request("GET", path, query=selectors)

    async def create(self, path: str, obj: Mapping[str, Any], *, dry_run: bool = False) -> Obj:
        return await self.request("POST", path, body=dict(obj), query={"dryRun": "All"} if dry_run else None)

    async def replace(self, path: str, obj: Mapping[str, Any]) -> Obj:
        return await self.request("PUT", path, body=dict(obj))

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> Obj:
        return await self.request("PATCH", path, body=dict(patch), content_type="application/merge-patch+json")

    async def delete(self, path: str) -> Obj:
        return await self.request("DELETE", path)

    async def watch(
        self, path: str, *, resource_version: str | None = None, timeout_seconds: int = 300, **selectors: str
    ) -> AsyncIterator[Obj]:
        """Watch events (``{"type": ..., "object": ...}``) until the server ends the stream."""
        query = dict(selectors)
        query["watch"] = "true"
        query["timeoutSeconds"] = str(timeout_seconds)
        if resource_version:
            query["resourceVersion"] = resource_version
        response = await self._raw("GET", path, query=query, timeout=timeout_seconds + 30)
        try:
            while True:
                line = await response.content.readline()
                if not line:
                    return
                if line.strip():
                    event = json.loads(line)
                    if isinstance(event, dict):
                        yield event
        finally:
            response.release()


def _reason(exc: ApiException) -> str:
    return _reason_from_body(exc.body) or str(exc.reason or "request failed")


def _reason_from_body(raw: Any) -> str:
    """The message of a ``metav1.Status`` answer, else the start of the body ("" when there is none)."""
    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
            if isinstance(status, dict) and status.get("message"):
                return str(status["message"])
        except ValueError:
            pass
        return body[:300]
    return ""
