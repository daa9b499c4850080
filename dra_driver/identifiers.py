"""Checks of the names that become paths, file names or log fields, before they touch anything.

The kubelet sends a claim's namespace, name and UID; the UID names the claim's checkpoint record,
CDI spec and directory (``claims/<uid>``), so ``../../x`` must never get that far. A request name
names the container's region file (``<request>.cache``). The formats are Kubernetes' own: UIDs are
RFC 4122 UUIDs (kube-apiserver generates them), namespaces and request names RFC 1123 labels, object
names RFC 1123 subdomains. Pure functions.
"""

from __future__ import annotations

import re

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def uid_problem(uid: str) -> str:
    """Why ``uid`` is not a Kubernetes UID, or ``""``."""
    if _UUID.fullmatch(uid):
        return ""
    return f"claim UID {uid!r} is not a Kubernetes UID (an RFC 4122 UUID such as 0b6f4c1e-9a2d-4f5e-8c3b-7d1a2e4f6a8b)"


def label_problem(what: str, value: str) -> str:
    """Why ``value`` is not an RFC 1123 label (namespaces, request names), or ``""``."""
    if len(value) <= 63 and _LABEL.fullmatch(value):
        return ""
    return f"{what} {value!r} is not an RFC 1123 label (lower-case letters, digits and '-', at most 63)"


def subdomain_problem(what: str, value: str) -> str:
    """Why ``value`` is not an RFC 1123 subdomain (object names), or ``""``."""
    if len(value) <= 253 and _SUBDOMAIN.fullmatch(value):
        return ""
    return f"{what} {value!r} is not an RFC 1123 subdomain (lower-case letters, digits, '-' and '.', at most 253)"


def claim_ref_problem(namespace: str, name: str, uid: str) -> str:
    """What is wrong with a claim reference the kubelet sent, or ``""``."""
    return uid_problem(uid) or label_problem("namespace", namespace) or subdomain_problem("ResourceClaim name", name)
