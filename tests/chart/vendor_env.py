"""The vendor settings the code reads from its environment, named by the vendor modules' constants.

``VENDOR_SETTINGS`` lists, per vendor, the env vars its ``from_env`` reads (the driver runs the
vendor's ``from_env`` at import; so does the webhook). ``settings_read`` records what ``from_env``
really reads, so the list cannot go stale: a setting added to a vendor module without a chart value
fails ``test_vendor_settings.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import pytest

import vendors
from vendors import ascend, cambricon, hygon, iluvatar

VENDOR_SETTINGS: dict[str, frozenset[str]] = {
    "nvidia": frozenset(),
    "ascend": frozenset({ascend.VNPU_MODE_ENV, ascend.NPU_SMI_ENV}),
    "cambricon": frozenset({cambricon.VMEMORY_UNIT_ENV, cambricon.CNMON_ENV}),
    "hygon": frozenset({hygon.HY_SMI_ENV, hygon.HYHAL_DIR_ENV, hygon.DRIVER_DIR_ENV}),
    "iluvatar": frozenset({iluvatar.IXSMI_ENV}),
}
"""Driver env per vendor (the vendor module's node settings)."""

TOOL_ENV: dict[str, str] = {
    "ascend": ascend.NPU_SMI_ENV,
    "cambricon": cambricon.CNMON_ENV,
    "hygon": hygon.HY_SMI_ENV,
    "iluvatar": iluvatar.IXSMI_ENV,
}
"""The management tool's path: only the real backend runs it."""

WEBHOOK_SETTINGS: frozenset[str] = frozenset({cambricon.VMEMORY_UNIT_ENV})
"""Vendor settings that change admission (how a pod converts), so the webhook needs them too."""


class RecordingEnv(Mapping[str, str]):
    """A stand-in for ``os.environ`` that remembers every name looked up."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._env[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def from_env(vendor: str, env: Mapping[str, str]) -> tuple[set[str], object | None]:
    """The env names the vendor's ``from_env`` reads with ``env`` as the environment, and the instance."""
    build = getattr(type(vendors.node_vendor(vendor)), "from_env", None)
    if build is None:
        return set(), None
    recorder = RecordingEnv(env)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "environ", recorder)
        instance = build()
    return recorder.read, instance
