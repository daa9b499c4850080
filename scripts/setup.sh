#!/usr/bin/env bash
# Installs everything the tests, the demo and the benchmarks need, into the repository only:
# a virtual environment (.venv), the official helm binary (.tools/bin/helm, sha256-checked),
# checkov, the chart's security linter, in its own environment (.tools/checkov), and kubectl
# (.tools/bin/kubectl, sha256-checked) where the machine has none.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

bash scripts/install-helm.sh
bash scripts/install-checkov.sh
bash scripts/install-kubectl.sh
