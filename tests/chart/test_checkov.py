"""Security linter: checkov on the rendered chart; every finding is fixed or explained in docs/security.md."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from . import helm

CHECKOV = helm.REPO / ".tools" / "checkov" / "bin" / "checkov"
SECURITY_DOC = helm.REPO / "docs" / "security.md"
ROW = re.compile(r"^\|\s*(CKV2?_K8S_\d+)\s*\|\s*`([^`]+)`\s*\|\s*(.+?)\s*\|\s*$")

Finding = tuple[str, str]


def accepted_findings() -> dict[Finding, str]:
    """(check id, resource glob) -> reason, from the table in docs/security.md."""
    rows = {}
    for line in SECURITY_DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            check, resource, reason = match.groups()
            assert len(reason) > 30, f"{check} {resource}: the reason must explain, not name"
            rows[(check, resource)] = reason
    return rows


@pytest.fixture(scope="module")
def findings(
    default_objs: list[helm.Obj], all_objs: list[helm.Obj], tmp_path_factory: pytest.TempPathFactory
) -> set[Finding]:
    if not CHECKOV.exists():
        raise AssertionError(f"{CHECKOV} is missing: run `make setup` (scripts/install-checkov.sh)")
    out = tmp_path_factory.mktemp("checkov")
    (out / "default.yaml").write_text(yaml.safe_dump_all(default_objs))
    (out / "all-options.yaml").write_text(yaml.safe_dump_all(all_objs))
    result = subprocess.run(
        [str(CHECKOV), "-d", str(out), "--framework", "kubernetes", "--skip-download", "--quiet", "--compact",
         "-o", "json"],
        capture_output=True, text=True, timeout=600, cwd=out,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr  # 1: findings
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert all(r["check_type"] == "kubernetes" for r in reports)
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= len(default_objs)
    assert summary["passed"] > 100  # the checks ran
    return {(f["check_id"], f["resource"]) for r in reports for f in r["results"]["failed_checks"]}


def test_every_finding_is_explained(findings: set[Finding]) -> None:
    accepted = accepted_findings()
    unexplained = sorted(
        f for f in findings if not any(f[0] == check and fnmatch.fnmatch(f[1], glob) for check, glob in accepted)
    )
    assert not unexplained, f"fix these or explain them in {SECURITY_DOC.name}: {unexplained}"


def test_no_stale_explanations(findings: set[Finding]) -> None:
    stale = sorted(
        (check, glob) for check, glob in accepted_findings()
        if not any(f[0] == check and fnmatch.fnmatch(f[1], glob) for f in findings)
    )  # fmt: skip
    assert not stale, f"{SECURITY_DOC.name} explains findings checkov no longer reports: {stale}"


def test_the_linter_finds_what_it_should(tmp_path: Path) -> None:
    """Control: a privileged, root, writable container is reported (checkov really checks)."""
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "x"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1", "securityContext": {"privileged": True}}]},
    }  # fmt: skip
    (tmp_path / "bad.yaml").write_text(json.dumps(pod))
    result = subprocess.run(
        [str(CHECKOV), "-f", str(tmp_path / "bad.yaml"), "--framework", "kubernetes", "--skip-download", "--quiet",
         "--compact", "-o", "json", "--check", "CKV_K8S_16,CKV_K8S_22"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    failed = {f["check_id"] for f in json.loads(result.stdout)["results"]["failed_checks"]}
    assert failed == {"CKV_K8S_16", "CKV_K8S_22"}
