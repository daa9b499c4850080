#!/usr/bin/env bash
# checkov (security linter for the rendered Helm chart) in its own virtual environment,
# .tools/checkov/, because it pins many packages that must not leak into .venv.
# The chart test runs `.tools/checkov/bin/checkov --framework kubernetes --skip-download`.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
PYTHON=${PYTHON:-python3}
venv=.tools/checkov
stamp="$venv/.installed-$CHECKOV_VERSION"

if [ -f "$stamp" ] && [ -x "$venv/bin/checkov" ]; then
  exit 0
fi
rm -rf "$venv"
mkdir -p .tools
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
"$venv/bin/checkov" --version >/dev/null
touch "$stamp"
