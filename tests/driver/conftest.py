from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import kubernetes_validate
import pytest

from e2e.apiserver import APIServer
from e2e.apiserver.validation import SchemaValidator

from .helpers import add_node

VALIDATED_KINDS = {"ResourceSlice", "Event", "Node", "ResourceClaim"}


def strict_validator(version: str = "1.36") -> Any:
    """The stand-in's own validation (1.34 strict schemas plus kube-apiserver's semantic rules, e.g. the
    request-policy rules), and for what the driver writes also kubernetes-validate --strict for ``version``."""
    stand_in = SchemaValidator()

    def validate(kind: Any, obj: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = list(stand_in(kind, obj))
        if kind.kind in VALIDATED_KINDS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except Exception as exc:
                problems.append(("", f"kubernetes-validate {version} --strict: {str(exc).splitlines()[0]}"))
        return problems

    return validate


@pytest.fixture(autouse=True)
def driver_logs_at_debug() -> Iterator[None]:
    """Every log call of the driver builds its record (a bad ``extra`` key fails the test)."""
    logger = logging.getLogger("dra_driver")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(previous)


@pytest.fixture
def root() -> Iterator[str]:
    """A short directory (Unix socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="td", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def api() -> AsyncIterator[APIServer]:
    async with APIServer.running(host="127.0.0.1", port=0, validator=strict_validator()) as server:
        await add_node(server)
        yield server


@pytest.fixture
def kubeconfig(api: APIServer, root: str) -> str:
    return api.write_kubeconfig(f"{root}/kubeconfig")
