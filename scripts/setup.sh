#!/usr/bin/env bash
# Creates .venv with everything diet-hf, its tests and the real-model job need (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, pinned: the CPU build on this machine's disk (a bare `torch` would pull a multi-GB CUDA build).
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e ".[test,gemma3-270m]"
