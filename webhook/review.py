"""AdmissionReview (``admission.k8s.io/v1``) in and out, pure.

Anything that is not a well-formed review still gets a well-formed answer: :func:`parse` raises
:class:`ReviewError` carrying whatever uid could be read, and :func:`denial` turns it into a review
that says what was wrong.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

# status codes in denials (kube-apiserver passes them to the client)
BAD_REQUEST = 400
FORBIDDEN = 403
INTERNAL_ERROR = 500
UNAVAILABLE = 503

EPHEMERAL_CONTAINERS = "ephemeralcontainers"
CLAIMS = "resource.k8s.io/resourceclaims"


class ReviewError(ValueError):
    """The request body is not a usable AdmissionReview."""

    def __init__(self, message: str, uid: str = "") -> None:
        super().__init__(message)
        self.uid = uid


@dataclass(frozen=True)
class Review:
    uid: str
    operation: str
    namespace: str
    name: str
    """The pod's name, or its ``generateName`` followed by ``*``; empty when neither is set."""
    dry_run: bool
    is_pod: bool
    """True for the ``pods`` resource itself (not a subresource)."""
    obj: Any
    subresource: str = ""
    """``ephemeralcontainers``, ``status``, ...; empty for the resource itself."""
    old_obj: Any = None
    """``request.oldObject``: the object before an UPDATE."""
    resource: str = ""
    """``<group>/<resource>`` of the request (``/pods``, ``resource.k8s.io/resourceclaims``)."""

    @property
    def creates_claim(self) -> bool:
        """A ResourceClaim CREATE (the quota's second admission point)."""
        return (
            self.operation == "CREATE"
            and self.resource == CLAIMS
            and not self.subresource
            and isinstance(self.obj, dict)
        )

    @property
    def adds_ephemeral(self) -> bool:
        """An UPDATE of ``pods/ephemeralcontainers`` (``kubectl debug``): the object is the whole new pod."""
        return self.operation == "UPDATE" and self.subresource == EPHEMERAL_CONTAINERS and self.obj is not None


def _uid(request: Any) -> str:
    if isinstance(request, Mapping):
        uid = request.get("uid")
        if isinstance(uid, str):
            return uid
    return ""


def parse(body: bytes) -> Review:
    """The review in ``body``; :class:`ReviewError` for anything else."""
    try:
        # The standard library, not orjson: orjson reads integers beyond 64 bits as floats, which
        # would change the user's values in what we write back.
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ReviewError("the request body is not JSON; expected an admission.k8s.io/v1 AdmissionReview") from None
    if not isinstance(data, dict):
        raise ReviewError("the request body is not a JSON object; expected an admission.k8s.io/v1 AdmissionReview")
    request = data.get("request")
    uid = _uid(request)
    if data.get("apiVersion") != API_VERSION or data.get("kind") != KIND:
        raise ReviewError(
            f"expected apiVersion {API_VERSION} kind {KIND}, got apiVersion {_show(data.get('apiVersion'))} "
            f"kind {_show(data.get('kind'))}; set admissionReviewVersions: [v1] in the webhook configuration",
            uid,
        )
    if not isinstance(request, dict):
        raise ReviewError("the AdmissionReview has no request object", uid)
    if not uid:
        raise ReviewError("the AdmissionReview request has no uid", uid)
    operation = request.get("operation")
    if not isinstance(operation, str):
        raise ReviewError("request.operation is missing", uid)
    resource = request.get("resource")
    sub = request.get("subResource") or ""
    if not isinstance(sub, str):
        raise ReviewError(f"request.subResource must be a string, got {_show(sub)}", uid)
    pods = isinstance(resource, Mapping) and resource.get("group", "") == "" and resource.get("resource") == "pods"
    is_pod = pods and not sub
    group_resource = ""
    if isinstance(resource, Mapping) and isinstance(resource.get("resource"), str):
        group = resource.get("group", "")
        group_resource = f"{group if isinstance(group, str) else ''}/{resource['resource']}"
    obj = request.get("object")
    if is_pod and operation == "CREATE" and not isinstance(obj, dict):
        raise ReviewError("request.object is missing: a pod CREATE review must carry the pod", uid)
    if pods and sub == EPHEMERAL_CONTAINERS and operation == "UPDATE" and not isinstance(obj, dict):
        raise ReviewError("request.object is missing: a pods/ephemeralcontainers review must carry the pod", uid)
    if group_resource == CLAIMS and operation == "CREATE" and not sub and not isinstance(obj, dict):
        raise ReviewError("request.object is missing: a resourceclaims CREATE review must carry the claim", uid)
    namespace = request.get("namespace")
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(namespace, str) or not namespace:
        namespace = meta.get("namespace") if isinstance(meta, Mapping) else ""
        if not isinstance(namespace, str):
            namespace = ""
    name = request.get("name")
    if not isinstance(name, str) or not name:
        name = ""
        if isinstance(meta, Mapping):
            if isinstance(meta.get("name"), str):
                name = meta["name"]
            elif isinstance(meta.get("generateName"), str):
                name = meta["generateName"] + "*"
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise ReviewError(f"request.dryRun must be a boolean, got {_show(dry_run)}", uid)
    return Review(
        uid=uid,
        operation=operation,
        namespace=namespace,
        name=name,
        dry_run=dry_run,
        is_pod=is_pod,
        obj=obj,
        subresource=sub if pods or group_resource == CLAIMS else "",
        old_obj=request.get("oldObject"),
        resource=group_resource,
    )


def _dumps(value: Any) -> bytes:
    """orjson on the hot path (about 15x faster); the standard library for integers beyond 64 bits."""
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits copied from the pod
        return json.dumps(value, separators=(",", ":")).encode()


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | type(None)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def allowed(uid: str, patch: Sequence[Mapping[str, Any]] = (), warnings: Sequence[str] = ()) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        encoded = _dumps(list(patch))
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(encoded).decode()
    if warnings:
        response["warnings"] = list(warnings)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def denial(uid: str, message: str, code: int = BAD_REQUEST) -> dict[str, Any]:
    reason = {BAD_REQUEST: "BadRequest", FORBIDDEN: "Forbidden", UNAVAILABLE: "ServiceUnavailable"}.get(
        code, "InternalError"
    )
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "response": {
            "uid": uid,
            "allowed": False,
            "status": {"status": "Failure", "code": code, "reason": reason, "message": message},
        },
    }


def encode(review: Mapping[str, Any]) -> bytes:
    return _dumps(review)
