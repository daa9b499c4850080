"""AdmissionReview parsing and encoding at the edges of what the fast JSON library accepts."""

from __future__ import annotations

import base64
import json

import pytest

from webhook import review as rv


def _review(obj: object) -> bytes:
    request = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "default",
        "operation": "CREATE",
        "object": obj,
    }
    return json.dumps({"apiVersion": rv.API_VERSION, "kind": rv.KIND, "request": request}).encode()


def test_integers_beyond_64_bits_are_read_and_written_back() -> None:
    huge = 10**40
    review = rv.parse(_review({"metadata": {"name": "p", "annotations": {}}, "spec": {"x": huge}}))
    assert review.obj["spec"]["x"] == huge
    answer = rv.allowed(review.uid, [{"op": "add", "path": "/spec/y", "value": huge}])
    decoded = json.loads(rv.encode(answer))
    patch = json.loads(base64.b64decode(decoded["response"]["patch"]))
    assert patch == [{"op": "add", "path": "/spec/y", "value": huge}]


@pytest.mark.parametrize("body", [b"", b"{", b"[1]", b"\xff\xfe", b"[" * 100000])
def test_not_a_review_is_a_review_error(body: bytes) -> None:
    with pytest.raises(rv.ReviewError):
        rv.parse(body)


def test_non_ascii_survives() -> None:
    review = rv.parse(_review({"metadata": {"name": "p", "annotations": {"note": "größe ✓"}}}))
    assert review.obj["metadata"]["annotations"]["note"] == "größe ✓"
    assert json.loads(rv.encode(rv.denial("u", "größe ✓")))["response"]["status"]["message"] == "größe ✓"


def _claim_review(obj: object, operation: str = "CREATE", sub: str | None = None) -> bytes:
    request: dict[str, object] = {
        "uid": "u",
        "operation": operation,
        "namespace": "team-a",
        "resource": {"group": "resource.k8s.io", "version": "v1", "resource": "resourceclaims"},
        "object": obj,
    }
    if sub:
        request["subResource"] = sub
    return json.dumps({"apiVersion": rv.API_VERSION, "kind": rv.KIND, "request": request}).encode()


def test_claim_creations_are_recognised() -> None:
    claim = {"metadata": {"name": "c", "uid": "x"}, "spec": {}}
    review = rv.parse(_claim_review(claim))
    assert review.resource == rv.CLAIMS and review.creates_claim and not review.is_pod
    assert not rv.parse(_claim_review(claim, "UPDATE")).creates_claim
    assert not rv.parse(_claim_review(claim, "UPDATE", "status")).creates_claim
    with pytest.raises(rv.ReviewError, match="must carry the claim"):
        rv.parse(_claim_review(None))
    denied = rv.denial("u", "over quota", rv.FORBIDDEN)["response"]["status"]
    assert denied == {"status": "Failure", "code": 403, "reason": "Forbidden", "message": "over quota"}
