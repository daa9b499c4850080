"""Admission side of Ascend, Cambricon, Hygon and Iluvatar: resource names -> DeviceAsk, annotations -> CEL."""

from __future__ import annotations

from typing import Any

import celpy
import pytest

from vendors import admission_vendor, ascend, cambricon, hygon, iluvatar, vendor_for_resource
from vendors.base import ConversionError, DeviceAsk

from .vendor_helpers import container


def ask(vendor: Any, limits: dict[str, object]) -> DeviceAsk | None:
    result: DeviceAsk | None = vendor.parse(container(limits))
    return result


def denied(vendor: Any, limits: dict[str, object]) -> str:
    with pytest.raises(ConversionError) as info:
        vendor.parse(container(limits))
    return str(info.value)


ALL_910 = ("910A", "910B2", "910B3", "910B4", "910B4-1")


# --- registry ----------------------------------------------------------------------------------


def test_registry_knows_every_vendor_by_short_and_driver_name() -> None:
    for module in (ascend, cambricon, hygon, iluvatar):
        names = module.NAMES
        assert admission_vendor(names.vendor) is module.VENDOR
        assert names.driver == f"{names.vendor}.tessera.dev"
    for resource, vendor in (
        ("huawei.com/Ascend910B3-memory", "ascend"),
        ("cambricon.com/mlu.smlu.vmemory", "cambricon"),
        ("hygon.com/dcumem", "hygon"),
        ("iluvatar.ai/MR-V100.vMem", "iluvatar"),
    ):
        assert vendor_for_resource(resource) == vendor
        assert admission_vendor(vendor).owns_resource(resource)


# --- Ascend ------------------------------------------------------------------------------------


def test_ascend_seed_pod_is_any_910_with_16384_mib() -> None:
    got = ask(ascend.VENDOR, {"huawei.com/Ascend910": 1, "huawei.com/Ascend910-memory": 16384})
    assert got == DeviceAsk(
        count=1,
        memory_mib=16384,
        models=ALL_910,
        consumed_resources=("huawei.com/Ascend910", "huawei.com/Ascend910-memory"),
    )


@pytest.mark.parametrize(
    ("word", "asked", "rounded"),
    [
        ("Ascend910B3", 1, 16384),
        ("Ascend910B3", 16384, 16384),
        ("Ascend910B3", 16385, 32768),
        ("Ascend910B3", 40000, 65536),  # above the largest template: the whole chip, as HAMi trims
        ("Ascend910B4", 9000, 16384),
        ("Ascend910B2", 100, 8192),
        ("Ascend910A", 3000, 4369),
        ("Ascend310P", 3072, 3072),
        ("Ascend310P", 7000, 12288),
        ("Ascend910B4-1", 20000, 32768),
    ],
)
def test_ascend_memory_rounds_up_to_the_chip_templates(word: str, asked: int, rounded: int) -> None:
    got = ask(ascend.VENDOR, {f"huawei.com/{word}": 1, f"huawei.com/{word}-memory": asked})
    assert got is not None
    assert got.memory_mib == rounded
    assert got.models == (ascend.FAMILIES[word])
    assert got.cores is None


def test_ascend_family_names_keep_the_size_for_per_chip_rounding_by_the_scheduler() -> None:
    got = ask(ascend.VENDOR, {"huawei.com/Ascend910B": 1, "huawei.com/Ascend910B-memory": 9000})
    assert got is not None and got.memory_mib == 9000
    assert got.models == ("910B2", "910B3", "910B4", "910B4-1")
    # Each chip rounds it to its own template: 910B2 and 910B4 -> 16384, 910B3 -> 16384.
    assert ascend.CHIPS["910B4"].trim(9000) == (16384, "vir10_3c_16g")
    assert ascend.CHIPS["910B2"].trim(9000) == (16384, "vir06_1c_16g")


def test_ascend_count_only_is_a_whole_chip_without_cores() -> None:
    got = ask(ascend.VENDOR, {"huawei.com/Ascend910B3": 2})
    assert got == DeviceAsk(count=2, models=("910B3",), consumed_resources=("huawei.com/Ascend910B3",))


def test_ascend_core_resource_is_a_soft_split_ask() -> None:
    got = ask(
        ascend.VENDOR,
        {"huawei.com/Ascend910B3": 1, "huawei.com/Ascend910B3-memory": 10000, "huawei.com/Ascend910B3-core": 40},
    )
    assert got is not None
    assert (got.memory_mib, got.cores) == (10000, 40)  # not rounded: soft split takes any amount


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"huawei.com/Ascend910B3": 1, "huawei.com/Ascend910B3-memory": 70000}, "more than a whole 910B3"),
        ({"huawei.com/Ascend910": 1, "huawei.com/Ascend910-memory": 65537}, "more than a whole 910B2"),
        ({"huawei.com/Ascend910B3": 2, "huawei.com/Ascend910B3-memory": 1024}, "at most one shared NPU"),
        ({"huawei.com/Ascend910B3": 1, "huawei.com/Ascend910B4-memory": 1024}, "mixes Ascend resources"),
        ({"huawei.com/Ascend910C": 1}, "not supported"),
        ({"huawei.com/Ascend999": 1}, "unknown Ascend resource"),
        ({"huawei.com/Ascend910B3": -1}, "must not be negative"),
        ({"huawei.com/Ascend910B3": "one"}, "whole number"),
        ({"huawei.com/Ascend910B3": 1, "huawei.com/Ascend910B3-core": 101}, "at most 100"),
        ({"huawei.com/Ascend910B3": 0, "huawei.com/Ascend910B3-memory": 1024}, "no NPU requested"),
    ],
)
def test_ascend_denials(limits: dict[str, object], message: str) -> None:
    assert message in denied(ascend.VENDOR, limits)


def test_ascend_selectors_from_vnpu_mode_and_uuid_annotations() -> None:
    got = ascend.VENDOR.selectors(
        {
            "huawei.com/vnpu-mode": "hami-core",
            "hami.io/use-Ascend910B3-uuid": "Ascend-1, Ascend-2",
            "hami.io/no-use-Ascend910B3-uuid": "Ascend-3",
            "hami.io/use-MR-V100-uuid": "GPU-x",  # Iluvatar's, not ours
        }
    )
    assert got == [
        'device.attributes["ascend.tessera.dev"].vnpuMode == "hami-core"',
        '!(device.attributes["ascend.tessera.dev"].uuid in ["Ascend-3"])',
        'device.attributes["ascend.tessera.dev"].uuid in ["Ascend-1", "Ascend-2"]',
    ]
    with pytest.raises(ConversionError, match="vnpu-mode"):
        ascend.VENDOR.selectors({"huawei.com/vnpu-mode": "mig"})


def test_ascend_selectors_evaluate_in_cel() -> None:
    (mode,) = ascend.VENDOR.selectors({"huawei.com/vnpu-mode": "hami-core"})
    env = celpy.Environment()
    program = env.program(env.compile(mode))

    def run(vnpu_mode: str) -> bool:
        device = {"attributes": {"ascend.tessera.dev": {"vnpuMode": vnpu_mode}}}
        activation = {"device": celpy.json_to_cel(device)}  # type: ignore[attr-defined]
        return bool(program.evaluate(activation))

    assert run("hami-core") and not run("template")


# --- Iluvatar ----------------------------------------------------------------------------------


def test_iluvatar_seed_pod_is_256_mib_units() -> None:
    got = ask(iluvatar.VENDOR, {"iluvatar.ai/gpu": 1, "iluvatar.ai/vcuda-core": 50, "iluvatar.ai/vcuda-memory": 64})
    assert got == DeviceAsk(
        count=1,
        memory_mib=16384,
        cores=50,
        consumed_resources=("iluvatar.ai/gpu", "iluvatar.ai/vcuda-core", "iluvatar.ai/vcuda-memory"),
    )


def test_iluvatar_per_chip_names_fix_the_model() -> None:
    got = ask(
        iluvatar.VENDOR, {"iluvatar.ai/BI-V150-vgpu": 1, "iluvatar.ai/BI-V150.vMem": 8, "iluvatar.ai/BI-V150.vCore": 25}
    )
    assert got is not None
    assert (got.count, got.memory_mib, got.cores, got.models) == (1, 2048, 25, ("BI-V150",))
    whole = ask(iluvatar.VENDOR, {"iluvatar.ai/MR-V100-vgpu": 2})
    assert whole == DeviceAsk(count=2, cores=100, models=("MR-V100",), consumed_resources=("iluvatar.ai/MR-V100-vgpu",))
    memory_only = ask(iluvatar.VENDOR, {"iluvatar.ai/vcuda-memory": 4})
    assert memory_only is not None and (memory_only.count, memory_only.memory_mib, memory_only.cores) == (1, 1024, None)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"iluvatar.ai/gpu": 2, "iluvatar.ai/vcuda-memory": 4}, "at most one shared Iluvatar GPU"),
        ({"iluvatar.ai/gpu": 1, "iluvatar.ai/vcuda-core": 150}, "at most 100"),
        ({"iluvatar.ai/gpu": 1, "iluvatar.ai/MR-V100.vMem": 4}, "mixes generic"),
        ({"iluvatar.ai/MR-V100-vgpu": 1, "iluvatar.ai/BI-V150.vMem": 4}, "several Iluvatar chips"),
        ({"iluvatar.ai/gpu": 1, "iluvatar.ai/vgpu": 1}, "both give the GPU count"),
        ({"iluvatar.ai/gpus": 1}, "unknown Iluvatar resource"),
        ({"iluvatar.ai/gpu": "1.5"}, "whole number"),
    ],
)
def test_iluvatar_denials(limits: dict[str, object], message: str) -> None:
    assert message in denied(iluvatar.VENDOR, limits)


def test_iluvatar_uuid_annotations() -> None:
    assert iluvatar.VENDOR.selectors(
        {"hami.io/use-MR-V100-uuid": "GPU-a", "hami.io/use-Ascend910B3-uuid": "x", "hami.io/use-xpu-uuid": "y"}
    ) == ['device.attributes["iluvatar.tessera.dev"].uuid in ["GPU-a"]']


# --- Cambricon ---------------------------------------------------------------------------------


def test_cambricon_seed_pod_vmemory_is_a_percentage_by_default() -> None:
    got = ask(
        cambricon.VENDOR,
        {"cambricon.com/vmlu": 1, "cambricon.com/mlu.smlu.vmemory": 20, "cambricon.com/mlu.smlu.vcore": 10},
    )
    assert got is not None
    assert (got.count, got.memory_percent, got.memory_mib, got.cores) == (1, 20, None, 10)


def test_cambricon_vmemory_unit_is_a_setting() -> None:
    hami = cambricon.Cambricon(vmemory_unit=256)
    got = hami.parse(container({"cambricon.com/vmlu": 1, "cambricon.com/mlu.smlu.vmemory": 20}))
    assert got is not None and (got.memory_mib, got.memory_percent) == (5120, None)
    assert cambricon.Cambricon(vmemory_unit="512").memory_unit.mib == 512
    assert cambricon.Cambricon(vmemory_unit="percent").memory_unit.is_percent
    for bad in ("0", "lots", -3):
        with pytest.raises(ValueError, match="vmemory unit"):
            cambricon.Cambricon(vmemory_unit=bad)


def test_cambricon_vmemory_unit_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_CAMBRICON_VMEMORY_UNIT", "256")
    assert cambricon.Cambricon.from_env().memory_unit.mib == 256
    monkeypatch.delenv("TESSERA_CAMBRICON_VMEMORY_UNIT")
    assert cambricon.Cambricon.from_env().memory_unit.is_percent


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"cambricon.com/vmlu": 1, "cambricon.com/mlu.smlu.vmemory": 120}, "between 0 and 100"),
        ({"cambricon.com/vmlu": 1, "cambricon.com/mlu.smlu.vcore": 101}, "at most 100"),
        ({"cambricon.com/vmlu": 2, "cambricon.com/mlu.smlu.vcore": 50}, "at most one shared MLU"),
        ({"cambricon.com/vmlu": 1, "cambricon.com/mlu": 1}, "both give the MLU count"),
        ({"cambricon.com/mlu.smlu.memory": 1}, "unknown Cambricon resource"),
    ],
)
def test_cambricon_denials(limits: dict[str, object], message: str) -> None:
    assert message in denied(cambricon.VENDOR, limits)


def test_cambricon_count_only_is_an_exclusive_mlu_and_annotations_select() -> None:
    assert ask(cambricon.VENDOR, {"cambricon.com/vmlu": 2}) == DeviceAsk(
        count=2, cores=100, consumed_resources=("cambricon.com/vmlu",)
    )
    got = cambricon.VENDOR.selectors(
        {"cambricon.com/use-mlutype": "MLU370", "cambricon.com/nouse-gpuuuid": "MLU-1,MLU-2"}
    )
    assert len(got) == 2
    assert got[0].startswith('(device.attributes["cambricon.tessera.dev"].type.matches("(?i)MLU370")')
    assert got[1] == '!(device.attributes["cambricon.tessera.dev"].uuid in ["MLU-1", "MLU-2"])'


# --- Hygon -------------------------------------------------------------------------------------


def test_hygon_asks_and_denials() -> None:
    got = ask(hygon.VENDOR, {"hygon.com/dcunum": 1, "hygon.com/dcumem": 8192, "hygon.com/dcucores": 30})
    assert got == DeviceAsk(
        count=1,
        memory_mib=8192,
        cores=30,
        consumed_resources=("hygon.com/dcucores", "hygon.com/dcumem", "hygon.com/dcunum"),
    )
    assert ask(hygon.VENDOR, {"hygon.com/dcunum": 2}) == DeviceAsk(
        count=2, cores=100, consumed_resources=("hygon.com/dcunum",)
    )
    assert ask(hygon.VENDOR, {"nvidia.com/gpu": 1}) is None
    assert "at most one shared DCU" in denied(hygon.VENDOR, {"hygon.com/dcunum": 2, "hygon.com/dcumem": 100})
    assert "at most 100" in denied(hygon.VENDOR, {"hygon.com/dcunum": 1, "hygon.com/dcucores": 200})
    assert "unknown Hygon resource" in denied(hygon.VENDOR, {"hygon.com/dcu": 1})
    assert "must not be negative" in denied(hygon.VENDOR, {"hygon.com/dcumem": "-5"})
    assert "must be an integer" in denied(hygon.VENDOR, {"hygon.com/dcumem": "1500m"})
    assert "must not be negative" in denied(hygon.VENDOR, {"hygon.com/dcumem": -5})
    got_sel = hygon.VENDOR.selectors({"hygon.com/use-dcutype": "K100", "hygon.com/use-gpuuuid": "DCU-0x1"})
    assert got_sel[1] == 'device.attributes["hygon.tessera.dev"].uuid in ["DCU-0x1"]'


def test_requests_and_limits_merge_with_limits_winning() -> None:
    c = {
        "name": "main",
        "resources": {
            "requests": {"hygon.com/dcumem": 100},
            "limits": {"hygon.com/dcumem": 200, "hygon.com/dcunum": 1},
        },
    }
    got = hygon.VENDOR.parse(c)
    assert got is not None and got.memory_mib == 200
