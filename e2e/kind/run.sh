#!/usr/bin/env bash
# Build the images, start a kind cluster with DRA and consumable capacity, install the chart with the
# mock backend, and run the e2e tests (e2e/tests) against it.
#
#   e2e/kind/run.sh              # everything; the cluster is kept for inspection
#   e2e/kind/run.sh --delete     # ... and delete the cluster at the end
#   KIND_NODE_IMAGE=kindest/node:v1.35.0 e2e/kind/run.sh
#
# Needs: docker (a running engine), kind >= 0.30, helm (make setup installs .tools/bin/helm), the
# project's venv (make setup). Run from anywhere; paths are relative to the repository.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${TESSERA_KIND_CLUSTER:-tessera-e2e}"
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.34.0}"
TAG="${TESSERA_IMAGE_TAG:-e2e}"
NAMESPACE=tessera-system
STATE="${TESSERA_KIND_STATE:-$ROOT/.demo/kind}"  # .demo/ is git-ignored
HELM="$ROOT/.tools/bin/helm"
[ -x "$HELM" ] || HELM="$(command -v helm || true)"
PY="$ROOT/.venv/bin/python"
DELETE=0
if [ "${1:-}" = "--delete" ]; then DELETE=1; shift; fi

need() { command -v "$1" >/dev/null 2>&1 || { echo "run.sh: $1 is needed: $2" >&2; exit 2; }; }
need docker "install Docker and start its engine"
need kind "install kind 0.30 or newer (https://kind.sigs.k8s.io)"
[ -n "$HELM" ] || { echo "run.sh: helm is needed: run make setup" >&2; exit 2; }
[ -x "$PY" ] || { echo "run.sh: the venv is missing: run make setup" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "run.sh: the Docker engine is not running" >&2; exit 2; }
mkdir -p "$STATE"

echo "== building images (tessera/webhook:$TAG, tessera/driver:$TAG)"
docker build -f docker/webhook.Dockerfile -t "tessera/webhook:$TAG" .
docker build -f docker/driver.Dockerfile -t "tessera/driver:$TAG" .

echo "== cluster $CLUSTER ($NODE_IMAGE)"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config e2e/kind/cluster.yaml --wait 120s
fi
kind get kubeconfig --name "$CLUSTER" > "$STATE/kubeconfig"
export KUBECONFIG="$STATE/kubeconfig"

echo "== loading images"
for image in busybox:1.36 ubuntu:18.04 ubuntu:22.04; do
  docker image inspect "$image" >/dev/null 2>&1 || docker pull "$image"
done
kind load docker-image --name "$CLUSTER" "tessera/webhook:$TAG" "tessera/driver:$TAG" busybox:1.36 ubuntu:18.04 ubuntu:22.04

echo "== installing the chart (mock backend)"
"$HELM" upgrade --install tessera charts/tessera --namespace "$NAMESPACE" --create-namespace \
  -f e2e/kind/values.yaml \
  --set webhook.image.tag="$TAG" --set driver.image.tag="$TAG" \
  --wait --timeout 5m

echo "== waiting for the drivers to publish their devices"
# every vendor's driver on every node labelled for it: (driver, node) pairs with slices, expected as
# many as there are (vendor, labelled node) pairs
for _ in $(seq 1 120); do
  missing="$("$PY" - "$KUBECONFIG" <<'PYEOF'
import asyncio, sys
from kubeapi import KubeClient
VENDORS = ("nvidia", "ascend", "cambricon", "hygon", "iluvatar")
async def main() -> None:
    kube = await KubeClient.connect(sys.argv[1])
    try:
        nodes = (await kube.list("/api/v1/nodes")).get("items") or []
        wanted = {
            (f"{v}.tessera.dev", n["metadata"]["name"])
            for n in nodes
            for v in VENDORS
            if (n["metadata"].get("labels") or {}).get(f"tessera.dev/{v}") == "true"
        }
        got = (await kube.list("/apis/resource.k8s.io/v1/resourceslices")).get("items") or []
        have = {(s["spec"]["driver"], s["spec"].get("nodeName")) for s in got}
        print(" ".join(sorted(f"{d}@{n}" for d, n in wanted - have)))
    finally:
        await kube.close()
asyncio.run(main())
PYEOF
)"
  [ -z "$missing" ] && break
  sleep 2
done
[ -z "$missing" ] || { echo "run.sh: no ResourceSlices yet from: $missing" >&2; exit 1; }

echo "== e2e tests"
status=0
TESSERA_E2E_KUBECONFIG="$KUBECONFIG" "$PY" -m pytest -q e2e/tests "$@" || status=$?

if [ "$DELETE" = 1 ]; then
  kind delete cluster --name "$CLUSTER"
fi
exit "$status"
