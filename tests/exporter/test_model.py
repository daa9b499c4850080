"""The cluster view from slices, claims and pods (pure): what each device holds, who holds each share,
what waits and why."""

from __future__ import annotations

import copy

from tessera_exporter.model import (
    REASON_NO_POD,
    REASON_WAITING,
    ClusterState,
    parse_pod,
    reduce_pod,
)

from .helpers import GIB, claim, device_uuid, pod, request, reserved, result, slices

NODE = "node1"


def state(*objs: dict[str, object]) -> ClusterState:
    s = ClusterState()
    for obj in objs:
        {"ResourceSlice": s.on_slice, "ResourceClaim": s.on_claim, "Pod": s.on_pod}[str(obj["kind"])]("ADDED", obj)
    return s


def test_two_shares_of_one_card_with_their_pods_and_containers() -> None:
    sl = slices(NODE, "2xH200")
    a = pod("a", {"main": [("gpu", "")]}, claims={"gpu": "claim-a"}, node=NODE, phase="Running")
    b = pod("b", {"main": [("gpu", "")], "side": [("gpu", "")]}, claims={"gpu": "claim-b"}, node=NODE)
    ca = reserved(claim("claim-a", [result("gpu-0", pool=NODE, memory="40Gi", cores="30")]), a)
    cb = reserved(claim("claim-b", [result("gpu-0", pool=NODE, memory="20Gi", cores="1")]), b)
    view = state(*sl, a, b, ca, cb).view()
    by_name = {v.device.name: v for v in view.devices}
    assert set(by_name) == {"gpu-0", "gpu-1"}
    card = by_name["gpu-0"]
    assert (card.memory_allocated, card.cores_allocated, card.shares_allocated) == (60 * GIB, 31, 2)
    assert card.device.uuid == device_uuid(sl, "gpu-0") and card.device.node == NODE
    assert card.device.shares == 10 and card.device.cores == 100 and card.device.type == "H200"
    idle = by_name["gpu-1"]
    assert (idle.memory_allocated, idle.cores_allocated, idle.shares_allocated) == (0, 0, 0)
    held = {(s.pod, s.container, s.container_index, s.memory, s.cores) for s in view.shares}
    # pod b's one share is named by both of its containers: listed under each
    assert held == {("a", "main", "0", 40 * GIB, 30), ("b", "main", "0", 20 * GIB, 1), ("b", "side", "1", 20 * GIB, 1)}
    assert all(s.device_uuid == card.device.uuid and s.node == NODE for s in view.shares)
    assert not view.pending_pods and not view.pending_claims


def test_a_container_holds_only_the_requests_it_names() -> None:
    """One claim, one request per container (as the webhook converts a pod), two results."""
    p = pod("p", {"train": [("gpus", "train")], "log": [("gpus", "log")]}, templates={"gpus": "t"},
            created={"gpus": "p-gpus-x1"}, node=NODE)  # fmt: skip
    c = reserved(
        claim(
            "p-gpus-x1",
            [result("gpu-0", "train", pool=NODE, memory="10Gi"), result("gpu-1", "log/small", pool=NODE, memory="1Gi")],
            [request("train"), request("log")],
        ),
        p,
    )
    view = state(*slices(NODE), p, c).view()
    assert {(s.container, s.device, s.request) for s in view.shares} == {
        ("train", "gpu-0", "train"),
        ("log", "gpu-1", "log/small"),  # a firstAvailable result names request/subrequest
    }


def test_a_result_without_consumed_capacity_holds_the_whole_device() -> None:
    """As when the API server drops consumable capacity and the driver publishes whole devices."""
    sl = slices(NODE, "1xH200")
    c = claim("whole", [result("gpu-0", pool=NODE, share=False)])
    view = state(*sl, c).view()
    (card,) = view.devices
    assert card.memory_allocated == card.device.memory and card.cores_allocated == 100 and card.shares_allocated == 1
    (share,) = view.shares
    assert share.pod == "" and share.container == ""  # allocated, not reserved by any pod yet


def test_only_our_drivers_and_the_newest_pool_generation_count() -> None:
    old = slices(NODE, "4xH200", generation=1)
    new = slices(NODE, "2xH200", generation=2)
    theirs = copy.deepcopy(slices("node2", "1xH200"))
    for s in theirs:
        s["spec"]["driver"] = "gpu.nvidia.com"
    other = claim("other", [result("gpu-0", driver="gpu.nvidia.com", pool="node2")],
                  [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}])  # fmt: skip
    s = state(*old, *new, *theirs, other)
    assert [v.device.name for v in s.view().devices] == ["gpu-0", "gpu-1"]
    assert not s.claims and not s.view().shares


def test_reservation_of_a_pod_recreated_under_the_same_name_is_not_its_containers() -> None:
    p = pod("p", {"main": [("gpu", "")]}, claims={"gpu": "c"}, node=NODE)
    c = reserved(claim("c", [result("gpu-0", pool=NODE, memory="1Gi")]), p)
    newer = copy.deepcopy(p)
    newer["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
    (share,) = state(*slices(NODE), newer, c).view().shares
    assert share.pod == "p" and share.container == ""


def test_pending_pod_and_claim_carry_the_schedulers_reason() -> None:
    message = "0/2 nodes are available: 2 cannot allocate all claims. still not schedulable"
    p = pod("big", {"main": [("gpu", "")]}, templates={"gpu": "t"}, created={"gpu": "big-gpu-1"}, unschedulable=message)
    c = claim("big-gpu-1", [], allocated=False)
    fresh = pod("fresh", {"main": [("gpu", "")]}, templates={"gpu": "t"})  # its claim is not created yet
    lonely = claim("lonely", [], allocated=False)
    view = state(*slices(NODE), p, c, fresh, lonely).view()
    assert [(x.name, x.reason, x.message) for x in view.pending_pods] == [
        ("big", "Unschedulable", message),
        ("fresh", REASON_WAITING, ""),
    ]
    assert [(x.name, x.pod, x.reason, x.message) for x in view.pending_claims] == [
        ("big-gpu-1", "big", "Unschedulable", message),
        ("lonely", "", REASON_NO_POD, ""),
    ]


def test_pods_of_other_drivers_claims_are_not_pending_here() -> None:
    theirs = claim("nic", [], [{"name": "nic", "exactly": {"deviceClassName": "nic.example.com"}}], allocated=False)
    p = pod("p", {"main": [("nic", "")]}, claims={"nic": "nic"}, unschedulable="no NIC")
    plain = pod("plain", {"main": []})
    view = state(theirs, p, plain).view()
    assert not view.pending_pods and not view.pending_claims


def test_deleted_objects_leave_the_view() -> None:
    sl = slices(NODE, "1xH200")
    p = pod("p", {"main": [("gpu", "")]}, claims={"gpu": "c"}, node=NODE)
    c = reserved(claim("c", [result("gpu-0", pool=NODE, memory="1Gi")]), p)
    s = state(*sl, p, c)
    assert s.view().shares
    s.on_claim("DELETED", c)
    s.on_pod("DELETED", p)
    view = s.view()
    assert not view.shares and view.devices[0].shares_allocated == 0
    for obj in sl:
        s.on_slice("DELETED", obj)
    assert not s.view().devices


def test_device_taints_are_read_from_the_slice() -> None:
    sl = slices(NODE, "2xH200")
    sl[0]["spec"]["devices"][1]["taints"] = [
        {"key": "nvidia.tessera.dev/unhealthy", "value": "xid-79", "effect": "NoExecute"},
        {"key": "example.com/maintenance", "effect": "NoSchedule"},
    ]
    view = state(*sl).view()
    assert [str(t) for t in view.devices[1].device.taints] == [
        "nvidia.tessera.dev/unhealthy=xid-79:NoExecute",
        "example.com/maintenance:NoSchedule",
    ]
    assert not view.devices[0].device.taints


def test_the_view_is_recomputed_only_after_a_change() -> None:
    s = state(*slices(NODE))
    first = s.view()
    assert s.view() is first
    s.on_pod("ADDED", pod("p", {"main": [("gpu", "")]}, claims={"gpu": "c"}))
    assert s.view() is not first


def test_reduced_pod_keeps_what_the_view_reads_and_drops_the_rest() -> None:
    p = pod("p", {"main": [("gpu", "train")]}, templates={"gpu": "t"}, created={"gpu": "p-gpu"}, unschedulable="no")
    p["status"]["conditions"].append({"type": "Ready", "status": "False"})
    p["metadata"]["resourceVersion"] = "7"
    reduced = reduce_pod(p)
    assert parse_pod(reduced) == parse_pod(p)
    assert "hunter2" not in repr(reduced) and "env" not in repr(reduced)
    assert reduced["metadata"]["resourceVersion"] == "7"  # the watch cache compares versions on relist
    plain = reduce_pod(pod("plain", {"main": []}))
    assert set(plain["spec"]) == {"nodeName"}


def test_malformed_fields_are_skipped_not_fatal() -> None:
    sl = slices(NODE, "1xH200")
    sl[0]["spec"]["devices"][0]["capacity"]["memory"] = {"value": "lots"}
    c = claim("c", [result("gpu-0", pool=NODE, memory="1Gi")])
    c["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"]["cores"] = "-5"
    c["status"]["reservedFor"] = [{"resource": "pods"}, "junk"]
    view = state(*sl, c, {"kind": "Pod", "metadata": {"name": "x"}, "spec": "nonsense"}).view()
    (card,) = view.devices
    assert card.device.memory is None and card.memory_allocated == GIB and card.cores_allocated == 0


def test_unchanged_claims_are_not_computed_again_and_changes_are_seen() -> None:
    """The view keeps the shares of a claim whose records are the same objects; a new version of the
    claim, of a pod holding it or of its device's slice is computed again."""
    sl = slices(NODE, "2xH200")
    a = pod("a", {"main": [("gpu", "")]}, claims={"gpu": "claim-a"}, node=NODE)
    b = pod("b", {"main": [("gpu", "")]}, claims={"gpu": "claim-b"}, node=NODE)
    ca = reserved(claim("claim-a", [result("gpu-0", pool=NODE, memory="4Gi")]), a)
    cb = reserved(claim("claim-b", [result("gpu-1", pool=NODE, memory="2Gi")]), b)
    s = state(*sl, a, b, ca, cb)

    def by_pod() -> dict[str, object]:
        return {x.pod: x for x in s.view().shares}

    first = by_pod()
    ca["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"]["memory"] = "8Gi"
    s.on_claim("MODIFIED", ca)
    second = by_pod()
    assert second["b"] is first["b"] and second["a"].memory == 8 * GIB  # type: ignore[attr-defined]
    b["spec"]["containers"][0]["name"] = "renamed"
    s.on_pod("MODIFIED", b)
    assert by_pod()["b"].container == "renamed"  # type: ignore[attr-defined]
    sl[0]["spec"]["devices"][1]["attributes"]["uuid"] = {"string": "GPU-new"}
    s.on_slice("MODIFIED", sl[0])
    assert by_pod()["b"].device_uuid == "GPU-new"  # type: ignore[attr-defined]
    assert by_pod()["a"].device_uuid == device_uuid(sl, "gpu-0")  # type: ignore[attr-defined]
