"""API errors, answered as ``metav1.Status`` objects the way kube-apiserver words them."""

from __future__ import annotations

from typing import Any

from .kinds import Kind

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class APIError(Exception):
    """A request the server refuses; :meth:`status` is the body sent back."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        kind: Kind | None = None,
        name: str | None = None,
        causes: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
        details_kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.kind = kind
        self.name = name
        self.causes = causes or []
        self.retry_after = retry_after
        self.details_kind = details_kind

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.kind is not None:
            if self.kind.group:
                details["group"] = self.kind.group
            details["kind"] = self.details_kind or self.kind.plural
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


def not_found(kind: Kind, name: str) -> APIError:
    return APIError(404, f'{kind.group_resource} "{name}" not found', kind=kind, name=name)


def already_exists(kind: Kind, name: str) -> APIError:
    return APIError(409, f'{kind.group_resource} "{name}" already exists', reason="AlreadyExists", kind=kind, name=name)


def conflict(kind: Kind, name: str) -> APIError:
    return APIError(
        409,
        f'Operation cannot be fulfilled on {kind.group_resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        kind=kind,
        name=name,
    )


def invalid(kind: Kind, name: str, causes: list[tuple[str, str]]) -> APIError:
    """422 with one cause per (field, message), the message formatted like kube-apiserver's."""
    text = "; ".join(f"{f}: {m}" if f else m for f, m in causes)
    return APIError(
        422,
        f'{kind.kind} "{name}" is invalid: {text}',
        kind=kind,
        name=name,
        causes=[{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
        details_kind=kind.kind,  # an Invalid status names the Kind (NotFound and the rest name the resource)
    )


def bad_request(message: str) -> APIError:
    return APIError(400, message)
