"""The device inventory read from ResourceSlices, and the quantities in them."""

from __future__ import annotations

from fractions import Fraction

import pytest

from tessera_common.quantity import QuantityError, parse_quantity, quantity_bytes
from webhook.inventory import Inventory, InventoryError, load_file

from .conftest import INVENTORY, NVIDIA, validate


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("143771Mi", 143771 * 2**20),
        ("80Gi", 80 * 2**30),
        ("1e9", 10**9),
        ("1.5k", 1500),
        ("100m", Fraction(1, 10)),
        (".5Ki", 512),
        (12, 12),
        ("+7", 7),
    ],
)
def test_quantities(text: object, value: object):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "1GB", "1e999", "1.2.3", True, None, [1], "-1"])
def test_bad_quantities(text: object):
    with pytest.raises(QuantityError):
        quantity_bytes(text)


def test_rounds_up_like_the_scheduler():
    assert quantity_bytes("1500m") == 2


def test_example_inventory_is_valid_and_read():
    import yaml

    with open(INVENTORY, encoding="utf-8") as handle:
        for doc in yaml.safe_load_all(handle):
            validate(doc)
    inv = load_file(str(INVENTORY))
    assert len(inv.devices(NVIDIA)) == 10
    assert [(m.model, m.devices) for m in inv.models(NVIDIA)] == [("A100", 4), ("H200", 4), ("L4", 2)]
    assert len(inv) == sum(len(d["spec"]["devices"]) for d in yaml.safe_load_all(INVENTORY.read_text()) if d)
    largest = inv.largest(NVIDIA)
    assert largest is not None and largest.model == "H200"
    assert inv.models("other.tessera.dev") == () and inv.largest("other.tessera.dev") is None


def _slice(pool: str, generation: int, *devices: dict, driver: str = NVIDIA) -> dict:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{pool}-{generation}"},
        "spec": {"driver": driver, "pool": {"name": pool, "generation": generation, "resourceSliceCount": 1},
                 "nodeName": pool, "devices": list(devices)},
    }  # fmt: skip


def _device(name: str, model: str, memory: str, *, qualified: bool = False) -> dict:
    prefix = f"{NVIDIA}/" if qualified else ""
    return {
        "name": name,
        "attributes": {f"{prefix}type": {"string": model}, f"{prefix}uuid": {"string": f"GPU-{name}"}},
        "capacity": {f"{prefix}memory": {"value": memory}},
    }


def test_only_the_newest_generation_of_a_pool_counts_and_lists_are_expanded():
    old = _slice("n1", 1, _device("gpu-0", "A100", "40Gi"))
    new = _slice("n1", 2, _device("gpu-0", "A100", "80Gi"), _device("gpu-1", "T4", "15Gi", qualified=True))
    other = _slice("n2", 1, _device("gpu-0", "A100", "79Gi"))
    inv = Inventory.from_slices([{"kind": "ResourceSliceList", "items": [old, new]}, other])
    models = {m.model: m for m in inv.models(NVIDIA)}
    assert set(models) == {"A100", "T4"}
    assert models["A100"].memory_bytes == 79 * 2**30  # the smallest device of the model
    assert models["A100"].devices == 2
    assert models["T4"].memory_bytes == 15 * 2**30


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"kind": "Pod"}, "kind 'Pod'"),
        ([1], "got list"),
        ({"kind": "ResourceSlice", "metadata": {"name": "s"}}, "'s': spec is missing"),
        (_slice("n", 1, {"name": "d", "capacity": {"memory": {"value": "lots"}}}), "capacity memory"),
        (_slice("n", 1, {"attributes": {}}), "has no name"),
    ],
)
def test_unusable_inventory_is_refused_with_the_place(obj: object, needle: str):
    with pytest.raises(InventoryError, match=needle):
        Inventory.from_slices([obj])


def test_inventory_file_errors(tmp_path):
    with pytest.raises(InventoryError, match="cannot read"):
        load_file(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [\n")
    with pytest.raises(InventoryError, match="not YAML or JSON"):
        load_file(str(bad))
