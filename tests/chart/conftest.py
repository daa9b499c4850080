from __future__ import annotations

from pathlib import Path

import pytest

from . import helm


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="session")
def renders(helm_home: Path) -> dict[tuple[str, str], list[helm.Obj]]:
    """(values, kube version) -> rendered objects, for default values and every option on."""
    out = {}
    for version in helm.KUBE_VERSIONS:
        out[("default", version)] = helm.render(helm_home, kube_version=version)
        out[("all", version)] = helm.render(helm_home, values=[helm.ALL_OPTIONS], kube_version=version)
    return out


@pytest.fixture(scope="session")
def default_objs(renders: dict[tuple[str, str], list[helm.Obj]]) -> list[helm.Obj]:
    return renders[("default", helm.KUBE_VERSIONS[0])]


@pytest.fixture(scope="session")
def all_objs(renders: dict[tuple[str, str], list[helm.Obj]]) -> list[helm.Obj]:
    return renders[("all", helm.KUBE_VERSIONS[0])]


@pytest.fixture(scope="session", params=["default", "all"])
def objs(request: pytest.FixtureRequest, renders: dict[tuple[str, str], list[helm.Obj]]) -> list[helm.Obj]:
    """Each render in turn (default values, then every vendor and option on)."""
    return renders[(request.param, helm.KUBE_VERSIONS[0])]
