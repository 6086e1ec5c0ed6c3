#!/usr/bin/env bash
# Creates .venv with everything diet-hf, its tests and the real-model job need (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# --no-compile: pip byte-compiles every module it installs (all of torch's and transformers'), half of a fresh
# set-up's time on 2 cores (117 s against 65 s for scripts/test.sh's two environments, 2026-12-07); Python compiles
# the modules a run imports at their first import instead, and keeps them (scripts/test.sh and main_job.sh let it
# write them where PYTHONDONTWRITEBYTECODE is set)
QUIET=(-q --disable-pip-version-check --no-compile)
# torch first, pinned: the CPU build on this machine's disk (a bare `torch` would pull a multi-GB CUDA build).
.venv/bin/pip install "${QUIET[@]}" torch==2.13.0
.venv/bin/pip install "${QUIET[@]}" -e ".[test,gemma3-270m]"
