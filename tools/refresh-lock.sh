#!/usr/bin/env bash
# Refresh requirements.lock: resolve pyproject.toml's dependencies (with the dev extra) afresh in a
# throw-away virtual environment on the CPU build of torch, run nothing, and write the exact
# versions that resolved. Commit the new lock only after `.ci/run` passes with it.
#
#   bash tools/refresh-lock.sh            # → requirements.lock
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet torch==2.13.0 -e ".[dev]"
{
  echo "# Exact versions CI tested (CPU build of torch; Python $("$venv/bin/python" -c 'import sys; print(*sys.version_info[:2], sep=".")'))"
  echo "# Install: pip install -c requirements.lock torch==2.13.0 -e \".[dev]\"   Refresh: bash tools/refresh-lock.sh"
  "$venv/bin/python" -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock
rm -rf "$(dirname "$venv")"
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
