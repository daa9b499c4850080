"""Quota per namespace, the pure part (``webhook.quota``): what claims cost under HAMi's names, the
limits a namespace's ResourceQuotas set, and the ledger's three changes."""

from __future__ import annotations

from typing import Any

import pytest

import vendors
from vendors.ascend import Ascend
from vendors.cambricon import Cambricon
from vendors.iluvatar import Iluvatar
from webhook import quota as q
from webhook.convert import Converter
from webhook.inventory import Inventory

from .conftest import container, make_pod, seed_pods

CATALOG = q.Catalog(vendors.admission_vendors())
NOW = 1_000_000.0


def quota_obj(name: str, hard: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, **meta}, "spec": {"hard": hard}}


def claim_spec(pod: dict[str, Any], inventory: Inventory | None = None, namespace: str = "team-a") -> Any:
    """The claim spec the webhook's template gives a pod (what the claim controller copies into its claim)."""
    result = Converter(vendors.admission_vendors()).convert(pod, namespace, inventory)
    assert result.allowed and result.template is not None, result.message
    return result.template["spec"]["spec"]


def exact(device_class: str, count: int = 1, **capacity: str) -> dict[str, Any]:
    body: dict[str, Any] = {"deviceClassName": device_class, "allocationMode": "ExactCount", "count": count}
    if capacity:
        body["capacity"] = {"requests": capacity}
    return body


def spec_of(*requests: dict[str, Any]) -> dict[str, Any]:
    return {"devices": {"requests": [{"name": f"r{i}", **r} for i, r in enumerate(requests)]}}


# --- names and limits -----------------------------------------------------------------------------------


def test_hami_names_of_every_vendor_are_managed() -> None:
    for key in (
        "limits.nvidia.com/gpumem",
        "limits.nvidia.com/gpucores",
        "limits.hygon.com/dcumem",
        "limits.hygon.com/dcucores",
        "limits.cambricon.com/mlu.smlu.vmemory",
        "limits.cambricon.com/mlu.smlu.vcore",
        "limits.iluvatar.ai/vcuda-memory",
        "limits.iluvatar.ai/MR-V100.vMem",
        "limits.huawei.com/Ascend910B3-memory",
        "limits.huawei.com/Ascend910B-memory",
    ):
        assert CATALOG.managed(key) is not None, key
    # HAMi tracks only the limits. prefix; Kubernetes's own names are not ours.
    for key in ("requests.nvidia.com/gpumem", "nvidia.com/gpumem", "limits.cpu", "limits.nvidia.com/gpu"):
        assert CATALOG.managed(key) is None, key


def test_limits_take_the_lowest_of_several_quotas_and_only_our_names() -> None:
    limits = CATALOG.limits(
        [
            quota_obj("team", {"limits.nvidia.com/gpumem": "20480", "limits.cpu": "8", "pods": "10"}),
            quota_obj("gpu", {"limits.nvidia.com/gpumem": 10240, "limits.nvidia.com/gpucores": "300"}),
            quota_obj("going", {"limits.nvidia.com/gpumem": "1"}, deletionTimestamp="2024-01-01T00:00:00Z"),
            quota_obj("odd", {"limits.nvidia.com/gpucores": "2.5k", "limits.hygon.com/dcumem": "1.5"}),
        ]
    )
    assert limits == {
        "nvidia.com/gpumem": q.Limit(10240, "gpu"),
        "nvidia.com/gpucores": q.Limit(300, "gpu"),
        "hygon.com/dcumem": q.Limit(1, "odd"),  # whole numbers, rounded down
    }


# --- charges ------------------------------------------------------------------------------------------


def test_a_pod_is_charged_memory_and_cores_per_device_times_count(inventory: Inventory) -> None:
    spec = claim_spec(seed_pods()["gpu-pod12"], inventory)  # 2 GPUs, 10240 MiB and 30 % each
    assert CATALOG.charge(spec, inventory).amounts == {"nvidia.com/gpucores": 60, "nvidia.com/gpumem": 20480}


def test_init_containers_are_charged_too(inventory: Inventory) -> None:
    pod = make_pod(
        container("main", {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 2048}),
        init=[container("warm", {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1024})],
    )
    assert CATALOG.charge(claim_spec(pod, inventory), inventory).amounts == {"nvidia.com/gpumem": 3072}


def test_a_whole_card_counts_the_largest_card_it_may_get(inventory: Inventory) -> None:
    spec = claim_spec(make_pod(container("c", {"nvidia.com/gpu": 2})), inventory)
    charged = CATALOG.charge(spec, inventory)
    # count only: cores 100 each (HAMi's exclusive card), memory of the largest NVIDIA card (an H200)
    assert charged.amounts == {"nvidia.com/gpucores": 200, "nvidia.com/gpumem": 2 * 143771}
    assert any("143771 MiB" in note and "H200" in note for note in charged.notes)
    typed = claim_spec(
        make_pod(container("c", {"nvidia.com/gpu": 1}), annotations={"nvidia.com/use-gputype": "A100"}), inventory
    )
    # a type annotation is a regex selector, not one the charge can read: still the largest card
    assert CATALOG.charge(typed, inventory).amounts["nvidia.com/gpumem"] == 143771


def test_a_whole_card_without_an_inventory_is_refused_only_where_memory_is_limited() -> None:
    spec = spec_of({"exactly": exact("nvidia.tessera.dev", 1, cores="100")})
    with pytest.raises(q.QuotaError, match=r"no nvidia\.tessera\.dev device is published"):
        CATALOG.charge(spec, None, {"nvidia.com/gpumem"})
    assert CATALOG.charge(spec, None, {"nvidia.com/gpucores"}).amounts == {"nvidia.com/gpucores": 100}


def test_memory_only_asks_are_charged_no_cores() -> None:
    """HAMi's rule: cores a request does not name are not charged (the device's default of 1 is bookkeeping)."""
    spec = spec_of({"exactly": exact("nvidia.tessera.dev", 3, memory="1Gi")})
    assert CATALOG.charge(spec, None).amounts == {"nvidia.com/gpumem": 3072}


def test_memory_is_rounded_up_to_the_quota_unit() -> None:
    iluvatar = q.Catalog([Iluvatar()])
    spec = spec_of({"exactly": exact("iluvatar.tessera.dev", 1, memory="1000Mi", cores="25")})
    assert iluvatar.charge(spec, None).amounts == {"iluvatar.ai/vcuda-core": 25, "iluvatar.ai/vcuda-memory": 4} | {
        f"iluvatar.ai/{chip}.{kind}": value
        for chip in ("BI-V100", "BI-V150", "MR-V100", "MR-V50")
        for kind, value in (("vMem", 4), ("vCore", 25))
    }
    # a Cambricon unit of 256 MiB counts in those units; a percentage unit counts MiB
    spec = spec_of({"exactly": exact("cambricon.tessera.dev", 2, memory="512Mi")})
    assert q.Catalog([Cambricon(vmemory_unit=256)]).charge(spec, None).amounts == {"cambricon.com/mlu.smlu.vmemory": 4}
    assert q.Catalog([Cambricon()]).charge(spec, None).amounts == {"cambricon.com/mlu.smlu.vmemory": 1024}


def test_first_available_is_charged_its_most_expensive_alternative(inventory: Inventory) -> None:
    spec = claim_spec(make_pod(container("c", {"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 50})), inventory)
    alternatives = spec["devices"]["requests"][0]["firstAvailable"]
    assert len(alternatives) >= 2
    largest = max(int(a["capacity"]["requests"]["memory"].removesuffix("Mi")) for a in alternatives)
    assert CATALOG.charge(spec, inventory).amounts == {"nvidia.com/gpumem": largest}


def test_ascend_requests_are_charged_under_their_chip_and_family_names(inventory: Inventory) -> None:
    ascend = q.Catalog([Ascend()])
    pod = make_pod(container("c", {"huawei.com/Ascend910B3": 1, "huawei.com/Ascend910B3-memory": 16384}))
    spec = claim_spec(pod, inventory)
    assert ascend.charge(spec, inventory).amounts == {
        "huawei.com/Ascend910-memory": 16384,
        "huawei.com/Ascend910B-memory": 16384,
        "huawei.com/Ascend910B3-memory": 16384,
    }
    # a family word may get any of its chips: charged under each chip's names it covers
    family = claim_spec(make_pod(container("c", {"huawei.com/Ascend910B": 1, "huawei.com/Ascend910B-memory": 8192})))
    charged = ascend.charge(family, inventory).amounts
    assert charged["huawei.com/Ascend910B4-memory"] == 8192 and charged["huawei.com/Ascend910B2-memory"] == 8192
    assert "huawei.com/Ascend910A-memory" not in charged and "huawei.com/Ascend310P-memory" not in charged


def test_models_are_read_only_from_exact_model_selectors() -> None:
    names = vendors.admission_vendor("ascend").names
    attr = 'device.attributes["ascend.tessera.dev"].type'

    def sel(*expressions: str) -> list[dict[str, Any]]:
        return [{"cel": {"expression": e}} for e in expressions]

    assert q.models_of(names, sel(f'{attr} == "910B3"')) == {"910B3"}
    assert q.models_of(names, sel(f'{attr} in ["910B3", "910B4"]', f'{attr} == "910B4"')) == {"910B4"}
    assert q.models_of(names, sel(f'{attr} == "910B3" || true')) is None  # not our form: any model
    assert q.models_of(names, sel('device.attributes["other.dev"].type == "910B3"')) is None
    assert q.models_of(names, None) is None


def test_what_is_not_charged_and_what_cannot_be() -> None:
    assert CATALOG.charge(spec_of({"exactly": exact("gpu.example.com", 4)}), None).amounts == {}
    admin = {**exact("nvidia.tessera.dev", 1, memory="1Gi"), "adminAccess": True}
    assert CATALOG.charge(spec_of({"exactly": admin}), None).amounts == {}
    every = {"deviceClassName": "nvidia.tessera.dev", "allocationMode": "All"}
    with pytest.raises(q.QuotaError, match="allocationMode: All"):
        CATALOG.charge(spec_of({"exactly": every}), None, {"nvidia.com/gpumem"})
    assert CATALOG.charge(spec_of({"exactly": every}), None, {"hygon.com/dcumem"}).amounts == {}
    for junk in (None, {}, {"devices": None}, {"devices": {"requests": "x"}}, {"devices": {"requests": [1]}}):
        assert CATALOG.charge(junk, None).amounts == {}


# --- the ledger ---------------------------------------------------------------------------------------

GPUMEM = {"nvidia.com/gpumem": q.Limit(10240, "gpu")}


def test_ledger_round_trips_and_refuses_what_is_not_a_ledger() -> None:
    ledger = q.Ledger(
        "team-a",
        {"u1": q.ClaimEntry("c1", {"nvidia.com/gpumem": 1024}, NOW)},
        (q.Reservation("r1", "p1", {"nvidia.com/gpumem": 2048}, NOW + 30),),
    )
    assert q.Ledger.from_data("team-a", ledger.to_data()) == ledger
    assert ledger.used(NOW) == {"nvidia.com/gpumem": 3072}
    assert ledger.used(NOW + 31) == {"nvidia.com/gpumem": 1024}  # the reservation expired
    for data in (None, {}, {"ledger.json": "{"}, {"ledger.json": '{"version": 2}'}):
        with pytest.raises(q.QuotaError, match="unreadable"):
            q.Ledger.from_data("team-a", data)
    with pytest.raises(q.QuotaError, match="ledger of namespace 'team-a'"):
        q.Ledger.from_data("team-b", ledger.to_data())
    forged = ledger.to_data()["ledger.json"].replace("1024", "-5")
    with pytest.raises(q.QuotaError):
        q.Ledger.from_data("team-a", {"ledger.json": forged})


def test_reservations_admit_exactly_up_to_the_limit() -> None:
    ledger = q.Ledger("team-a")
    charge = {"nvidia.com/gpumem": 1024, "nvidia.com/gpucores": 30}
    admitted = 0
    for i in range(15):
        outcome = q.reserve(CATALOG, ledger, id=f"r{i}", pod=f"p{i}", charge=charge, limits=GPUMEM, now=NOW, ttl=30)
        if outcome.allowed:
            assert outcome.ledger is not None
            ledger = outcome.ledger
            admitted += 1
        else:
            (excess,) = outcome.excesses
            assert (excess.used, excess.asked, excess.limit.value) == (10240, 1024, 10240)
    assert admitted == 10
    # the same review again changes nothing
    again = q.reserve(CATALOG, ledger, id="r0", pod="p0", charge=charge, limits=GPUMEM, now=NOW, ttl=30)
    assert again.allowed and again.ledger is None
    # a limit of 0 allows nothing (Kubernetes's meaning), a name without a limit is not checked
    zero = {"nvidia.com/gpucores": q.Limit(0, "none")}
    assert not q.reserve(CATALOG, q.Ledger("x"), id="z", pod="z", charge=charge, limits=zero, now=NOW, ttl=30).allowed


def test_a_pods_claim_takes_over_its_reservation() -> None:
    charge = {"nvidia.com/gpumem": 5120}
    ledger = q.reserve(CATALOG, q.Ledger("team-a"), id="r", pod="p", charge=charge, limits=GPUMEM, now=NOW, ttl=30)
    assert ledger.ledger is not None
    full = q.reserve(CATALOG, ledger.ledger, id="r2", pod="p2", charge=charge, limits=GPUMEM, now=NOW, ttl=30).ledger
    assert full is not None and full.used(NOW) == {"nvidia.com/gpumem": 10240}
    # the claim made for a pod takes a reservation of the same charge: no new room needed
    taken = q.admit_claim(CATALOG, full, uid="u1", name="p-tessera-x", charge=charge, limits=GPUMEM, now=NOW,
                          from_pod=True)  # fmt: skip
    assert taken.allowed and taken.ledger is not None
    assert taken.ledger.used(NOW) == {"nvidia.com/gpumem": 10240} and len(taken.ledger.pending) == 1
    # a user's own claim is charged afresh: the namespace is full
    own = q.admit_claim(CATALOG, taken.ledger, uid="u2", name="mine", charge=charge, limits=GPUMEM, now=NOW,
                        from_pod=False)  # fmt: skip
    assert not own.allowed and own.excesses[0].used == 10240
    # once a reservation expired, the pod's claim is checked against the limits like any other
    late = q.admit_claim(CATALOG, taken.ledger, uid="u3", name="late", charge=charge, limits=GPUMEM, now=NOW + 31,
                         from_pod=True)  # fmt: skip
    assert late.allowed and late.ledger is not None and late.ledger.pending == ()
    # admitting the same claim again changes nothing
    assert q.admit_claim(CATALOG, taken.ledger, uid="u1", name="x", charge=charge, limits=GPUMEM, now=NOW,
                         from_pod=True).ledger is None  # fmt: skip


def test_reconcile_releases_deleted_claims_and_counts_unseen_ones() -> None:
    mem = {"nvidia.com/gpumem": 1024}
    ledger = q.Ledger(
        "team-a",
        {
            "kept": q.ClaimEntry("a", mem, NOW - 600),
            "deleted": q.ClaimEntry("b", mem, NOW - 1),  # young, but its deletion was seen
            "vanished": q.ClaimEntry("c", mem, NOW - 120),  # old and not there: gone while nobody watched
            "young": q.ClaimEntry("d", mem, NOW - 5),  # admitted, maybe not stored or seen yet
        },
        (q.Reservation("r1", "p1", mem, NOW + 10), q.Reservation("r2", "p2", mem, NOW - 1)),
    )
    existing = {
        "kept": q.Existing("a", mem, True),
        "unseen": q.Existing("e", mem, True),  # exists, never charged (the webhook was bypassed)
    }
    after = q.reconcile(ledger, existing, {"deleted"}, now=NOW, grace=60)
    assert set(after.claims) == {"kept", "young", "unseen"}
    # the unseen claim of a pod took over the live reservation of the same charge; the expired one went
    assert after.pending == ()
    assert after.used(NOW) == {"nvidia.com/gpumem": 3072}
    # idempotent: a second pass (another replica) changes nothing
    assert q.reconcile(after, existing, {"deleted"}, now=NOW, grace=60) == after


def test_denial_says_the_numbers_and_what_to_do() -> None:
    resource = CATALOG.resources["nvidia.com/gpumem"]
    text = q.denial("team-a", "pod p", [q.Excess(resource, 9216, 2048, q.Limit(10240, "gpu-quota"))], ["a note"])
    assert "pod p would exceed the quota of namespace team-a" in text
    assert "limits.nvidia.com/gpumem: used 9216, asked 2048, limit 10240 (MiB; ResourceQuota gpu-quota)" in text
    assert "a note" in text and "Delete pods or resource claims in team-a" in text and "raise the quota" in text


def test_mangled_claims_and_ledgers_are_charged_or_refused_never_crash(inventory: Inventory) -> None:
    """5,000 claim specs and ledgers with values replaced by junk: a charge of whole non-negative amounts
    or a QuotaError, a ledger or a QuotaError; nothing else escapes."""
    import copy
    import json
    import random

    from .test_fuzz import NASTY, _paths

    rnd = random.Random(12)
    base_spec = claim_spec(seed_pods()["gpu-pod12"], inventory)
    ledger = q.Ledger(
        "team-a",
        {"u1": q.ClaimEntry("c1", {"nvidia.com/gpumem": 1024}, NOW)},
        (q.Reservation("r1", "p1", {"nvidia.com/gpucores": 30}, NOW + 30),),
    )
    base_ledger = json.loads(ledger.to_data()["ledger.json"])
    for _ in range(2500):
        spec = copy.deepcopy(base_spec)
        *parent_path, last = rnd.choice(_paths(spec)[1:])
        parent: Any = spec
        for key in parent_path:
            parent = parent[key]
        parent[last] = copy.deepcopy(rnd.choice(NASTY))
        try:
            charged = CATALOG.charge(spec, rnd.choice([inventory, None]), rnd.choice([None, {"nvidia.com/gpumem"}]))
        except q.QuotaError as exc:
            assert str(exc)
        else:
            assert all(isinstance(v, int) and v > 0 for v in charged.amounts.values()), charged
        body = copy.deepcopy(base_ledger)
        *parent_path, last = rnd.choice(_paths(body)[1:])
        parent = body
        for key in parent_path:
            parent = parent[key]
        parent[last] = copy.deepcopy(rnd.choice(NASTY))
        try:
            read = q.Ledger.from_data("team-a", {"ledger.json": json.dumps(body)})
        except q.QuotaError:
            continue
        assert all(v >= 0 for v in read.used(NOW).values())
