"""The harness's PodTopologySpread score (e2e.allocator.spread) on cases worked out by hand from
kube-scheduler's formulas, and how schedule() weighs it against the DynamicResources score."""

from __future__ import annotations

from typing import Any

from e2e.allocator import schedule
from e2e.allocator.spread import HOSTNAME, ZONE, constraints, scores
from webhook.spreading import NO_POD

Obj = dict[str, Any]


def node(name: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "labels": {HOSTNAME: name, **labels}}, "spec": {}}


def pod(name: str, ns: str = "ns", *, labels: dict[str, str] | None = None, owner: tuple[str, str] | None = None,
        tsc: list[Obj] | None = None, deleting: bool = False, **spec: Any) -> Obj:  # fmt: skip
    meta: Obj = {"name": name, "namespace": ns, "labels": labels or {}}
    if owner is not None:
        meta["ownerReferences"] = [{"kind": owner[0], "name": "w", "uid": owner[1], "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    body: Obj = dict(spec)
    if tsc is not None:
        body["topologySpreadConstraints"] = tsc
    return {"metadata": meta, "spec": body}


def soft(key: str = HOSTNAME, skew: int = 1, **selector: Any) -> Obj:
    out: Obj = {"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway"}
    out.update(selector)
    return out


RS = ("ReplicaSet", "rs-1")


def test_a_pod_without_constraints_or_controller_is_not_scored() -> None:
    nodes = [node("a"), node("b")]
    assert scores(pod("p"), nodes, nodes, {}) is None
    assert scores(pod("p", owner=("Job", "j")), nodes, nodes, {}) is None  # Jobs get no defaults
    hard = [{"maxSkew": 1, "topologyKey": HOSTNAME, "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {}}]
    assert scores(pod("p", tsc=hard), nodes, nodes, {}) is None  # hard ones filter, they do not score


def test_system_defaults_count_the_same_owners_pods_per_node() -> None:
    nodes = [node("a"), node("b")]
    mine = [pod(f"m{i}", owner=RS) for i in range(3)]
    others = [pod("o", owner=("ReplicaSet", "rs-2")), pod("x", "other-ns", owner=RS)]
    found, require_all = constraints(pod("p", owner=RS))
    assert [(c.key, c.max_skew) for c in found] == [(HOSTNAME, 3), (ZONE, 5)] and not require_all
    # hostname weight ln(2 + 2); a: 3 * 1.386 + 2 = 6.16 -> 6, b: 0 + 2 = 2; no zone labels: zone skipped
    # normalised: a = 100 * (6 + 2 - 6) // 6 = 33, b = 100 * (6 + 2 - 2) // 6 = 100
    assert scores(pod("p", owner=RS), nodes, nodes, {"a": mine + others, "b": others}) == {"a": 33, "b": 100}


def test_own_constraint_counts_its_selector_in_the_namespace_and_skips_terminating_pods() -> None:
    nodes = [node("a"), node("b"), node("c")]
    web = {"app": "web"}
    tsc = [soft(labelSelector={"matchLabels": web})]
    on = {
        "a": [pod("w1", labels=web), pod("w2", labels=web), pod("gone", labels=web, deleting=True)],
        "b": [pod("w3", labels=web), pod("db", labels={"app": "db"}), pod("w4", "elsewhere", labels=web)],
        "c": [],
    }
    # weight ln(3 + 2) = 1.609; a: 2 -> 3.22 -> 3; b: 1 -> 1.61 -> 2; c: 0. max 3, min 0
    assert scores(pod("p", labels=web, tsc=tsc), nodes, nodes, on) == {"a": 0, "b": 33, "c": 100}


def test_match_label_keys_take_the_pods_own_values() -> None:
    nodes = [node("a"), node("b")]
    tsc = [soft(labelSelector={}, matchLabelKeys=["pod-template-hash"])]
    me = {"pod-template-hash": "v2"}
    on = {"a": [pod("old", labels={"pod-template-hash": "v1"})] * 3, "b": [pod("new", labels=me)]}
    assert scores(pod("p", labels=me, tsc=tsc), nodes, nodes, on) == {"a": 100, "b": 0}


def test_a_selector_that_matches_no_pod_scores_every_node_the_same() -> None:
    nodes = [node("a"), node("b")]
    on = {"a": [pod(f"m{i}", labels={"tessera.dev/binpack": "x"}, owner=RS) for i in range(5)]}
    assert scores(pod("p", owner=RS, tsc=[soft(labelSelector=NO_POD)]), nodes, nodes, on) == {"a": 100, "b": 100}
    assert scores(pod("p", tsc=[soft()]), nodes, nodes, on) == {"a": 100, "b": 100}  # no selector: none counted


def test_own_constraints_ignore_nodes_without_the_key_and_zones_count_every_node_of_the_zone() -> None:
    feasible = [node("a", **{ZONE: "z1"}), node("b", **{ZONE: "z2"}), node("c")]
    full = node("d", **{ZONE: "z1"})  # not feasible (say, no room), its pods still count for z1
    web = {"app": "web"}
    tsc = [soft(ZONE, labelSelector={"matchLabels": web})]
    on = {"d": [pod("w1", labels=web), pod("w2", labels=web)], "c": [pod("w3", labels=web)] * 4}
    # two zone values: weight ln(4) = 1.386; z1: 2 -> 2.77 -> 3, z2: 0; c has no zone: ignored (0)
    got = scores(pod("p", labels=web, tsc=tsc), feasible, [*feasible, full], on)
    assert got == {"a": 0, "b": 100, "c": 0}


def test_node_selector_keeps_other_nodes_pods_out_of_the_zone_counts() -> None:
    feasible = [node("a", **{ZONE: "z1", "pool": "gpu"}), node("b", **{ZONE: "z2", "pool": "gpu"})]
    cpu = node("cpu", **{ZONE: "z2", "pool": "cpu"})
    web = {"app": "web"}
    tsc = [soft(ZONE, labelSelector={"matchLabels": web})]
    on = {"cpu": [pod(f"w{i}", labels=web) for i in range(3)], "a": [pod("wa", labels=web)]}
    p = pod("p", labels=web, tsc=tsc, nodeSelector={"pool": "gpu"})
    assert scores(p, feasible, [*feasible, cpu], on) == {"a": 0, "b": 100}  # cpu's three not counted
    p = pod("p", labels=web, tsc=tsc)  # z1: 1 -> 1.39 -> 1, z2: 3 -> 4.16 -> 4; b = 100 * (4 + 1 - 4) // 4
    assert scores(p, feasible, [*feasible, cpu], on) == {"a": 100, "b": 25}


def test_max_skew_waters_the_difference_down() -> None:
    nodes = [node("a"), node("b")]
    web = {"app": "web"}
    on = {"a": [pod("w", labels=web)]}
    # maxSkew 1: a 1.386 -> 1, b 0: a = 100 * (1 + 0 - 1) // 1 = 0
    tsc = [soft(skew=1, labelSelector={"matchLabels": web})]
    assert scores(pod("p", labels=web, tsc=tsc), nodes, nodes, on) == {"a": 0, "b": 100}
    # maxSkew 2 adds 1: a 2.386 -> 2, b 1: a = 100 * (2 + 1 - 2) // 2 = 50
    tsc = [soft(skew=2, labelSelector={"matchLabels": web})]
    assert scores(pod("p", labels=web, tsc=tsc), nodes, nodes, on) == {"a": 50, "b": 100}


# --- weighed against DynamicResources ---------------------------------------------------------------------


def _cluster() -> tuple[list[Obj], list[Obj], dict[str, Obj]]:
    driver = "gpu.example.com"
    nodes = [node("a"), node("b")]
    slices = [
        {
            "metadata": {"name": f"{n}-slice"},
            "spec": {
                "driver": driver,
                "nodeName": n,
                "pool": {"name": n, "generation": 1, "resourceSliceCount": 1},
                "devices": [{"name": "gpu-0", "attributes": {"preferred": {"bool": n == "a"}}}],
            },
        }
        for n in ("a", "b")
    ]
    classes = {
        "gpu": {
            "metadata": {"name": "gpu"},
            "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{driver}'"}}]},
        }
    }
    return nodes, slices, classes


def _claim() -> Obj:
    preferred = {"cel": {"expression": "device.attributes['gpu.example.com'].preferred == true"}}
    return {
        "metadata": {"name": "c", "namespace": "ns", "uid": "c"},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "r",
                        "firstAvailable": [
                            {"name": "pref", "deviceClassName": "gpu", "selectors": [preferred]},
                            {"name": "any", "deviceClassName": "gpu"},
                        ],
                    }
                ]
            }
        },
    }


def test_topology_spread_outweighs_the_dra_preference_and_bare_pods_follow_dra() -> None:
    nodes, slices, classes = _cluster()
    on = {"a": [pod(f"m{i}", owner=RS) for i in range(2)]}
    bare = schedule(pod("p"), nodes, [_claim()], classes, slices, [], pods_on=on)
    assert bare.node == "a" and bare.spread is None  # DRA: a 100, b 87
    owned = schedule(pod("p", owner=RS), nodes, [_claim()], classes, slices, [], pods_on=on)
    # spread: a 2 * 1.386 + 2 = 4.77 -> 5, b 2 -> a 100 * 2 // 5 = 40, b 100; totals a 100 + 80, b 87 + 200
    assert owned.scores == {"a": 100, "b": 87} and owned.spread == {"a": 40, "b": 100} and owned.node == "b"
