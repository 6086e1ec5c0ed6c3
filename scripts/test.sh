#!/usr/bin/env bash
# Sets up .venv and a second environment with transformers 4.57.6 (the last 4.x: for the compatibility tests, and
# the ONNX export, whose optimum-onnx caps transformers below 4.58), then runs the test suite on transformers 5.x and
# again on 4.57.6 (one file set serves both; tests of 5.x-only features skip themselves there). Extra arguments go
# to pytest, e.g. `scripts/test.sh -m slow` for the real-model tests (5.x only).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
QUIET=(-q --disable-pip-version-check --no-compile)  # as in setup.sh: modules compile at their first import
scripts/setup.sh &
setup=$!
copy=
trap 'wait; rm -rf "$copy"' EXIT  # a failure below still lets setup.sh finish: no pip left writing into .venv
[ -x .venv-tf457/bin/python ] || "$PYTHON" -m venv .venv-tf457
.venv-tf457/bin/pip install "${QUIET[@]}" torch==2.13.0
if ! .venv-tf457/bin/pip show -q diet-hf 2>/dev/null; then
    # a fresh environment: its downloads run beside setup.sh's (CI's set-up in 85 s instead of 150 s on 2 cores). Its
    # dependencies come from a regular build of a copy of the project: the editable build writes diet_hf.egg-info
    # into this tree, which setup.sh's editable build writes at the same time
    copy=$(mktemp -d)
    cp -r pyproject.toml README.md diet_hf modeling "$copy"
    .venv-tf457/bin/pip install "${QUIET[@]}" "transformers==4.57.6" "$copy[onnx,test,torchao]"
fi
wait "$setup"
.venv-tf457/bin/pip install "${QUIET[@]}" "transformers==4.57.6" -e ".[onnx,test,torchao]"
if [[ " $* " == *slow* ]]; then  # the slow tests include the agreement with lm-eval-harness itself
    .venv/bin/pip install "${QUIET[@]}" -e ".[test,gemma3-270m,lm-eval]"
fi
unset PYTHONDONTWRITEBYTECODE  # the environments were installed uncompiled: the first import compiles and keeps
export DIET_TF457_PYTHON="$PWD/.venv-tf457/bin/python"
export DIET_ONNX_PYTHON="$DIET_TF457_PYTHON"
export DIET_DATA_DIR="${DIET_DATA_DIR:-$PWD/../shared/data}"
if [[ " $* " == *slow* ]]; then
    .venv/bin/python -m pytest "$@"
else
    # the default suite in one pytest-xdist worker per core, each torch on one thread: 40% less wall time on 2 cores
    # than one process on two threads (the real-model tests above run alone: they hold the 270M model). Two tests
    # handed out at a time, the longest files first (tests/conftest.py): no worker idles at the end while the other
    # finishes a long test (255-260 s on 5.25 against 270-290 s in xdist's default chunks, 2026-12-06)
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    XDIST=(-n auto --maxschedchunk 2)
    .venv/bin/python -m pytest "${XDIST[@]}" "$@"
    echo "--- the same suite on transformers 4.57.6"
    env -u DIET_TF457_PYTHON -u DIET_ONNX_PYTHON .venv-tf457/bin/python -m pytest "${XDIST[@]}" "$@"
fi
