#!/usr/bin/env bash
# Runs the default test suite with every dependency at the lower bound of its pin in pyproject.toml, all at once:
# what the pins claim was tested. torch stays at the CPU build the other environments use (2.13.0: the one build
# reachable here); transformers is at its floor, 4.57.6, or at the version given first. Extra arguments go to pytest.
#
#   scripts/test_lower_bounds.sh           # transformers 4.57.6
#   scripts/test_lower_bounds.sh 5.1.0     # the lowest 5.x release the pin admits (huggingface_hub as it requires)
#
# Not part of CI (.ci/run): its own environment takes a few minutes to set up. Run it when a pin changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ENV=.venv-lower-bounds
TRANSFORMERS=
if [[ ${1:-} =~ ^[0-9] ]]; then TRANSFORMERS=$1; shift; fi
[ -x "$ENV/bin/python" ] || "$PYTHON" -m venv "$ENV"
"$ENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0
# one `name==floor` constraint per dependency with a `>=` floor; torch as installed above
"$ENV/bin/python" - "$TRANSFORMERS" > "$ENV/constraints.txt" <<'EOF'
import re
import sys
import tomllib

transformers = sys.argv[1]
for requirement in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    name, floor = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", requirement).groups()
    if name == "torch":
        floor = "2.13.0"
    elif name == "transformers" and transformers:
        floor = transformers
    elif name == "huggingface_hub" and transformers.startswith("5"):
        continue  # transformers 5 needs a newer huggingface_hub than the floor, which is transformers 4.57's; its choice
    print(f"{name}=={floor}")
EOF
"$ENV/bin/pip" install -q --disable-pip-version-check -c "$ENV/constraints.txt" -e ".[test]"
echo "--- the default suite with:"
"$ENV/bin/pip" list --disable-pip-version-check 2>/dev/null \
    | grep -i -E "^(torch|transformers|safetensors|huggingface.hub|datasets|accelerate|tqdm|peft|matplotlib) "
export DIET_DATA_DIR="${DIET_DATA_DIR:-$PWD/../shared/data}"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$ENV/bin/python" -m pytest -n auto "$@"
