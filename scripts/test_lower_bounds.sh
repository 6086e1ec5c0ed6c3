#!/usr/bin/env bash
# Runs the default test suite with every dependency at the lower bound of its pin in pyproject.toml, all at once:
# what the pins claim was tested. torch is the CPU build the other environments use (2.13.0) unless TORCH names
# another release (TORCH=2.6.0: the pin's floor; on Linux PyPI serves it as a CUDA build with its nvidia-* wheels,
# about 2.7 GB, which runs on the CPU as well); transformers is at its floor, 4.57.6, or at the version given first,
# and a floor below what that transformers requires (huggingface_hub, safetensors on 5.x) is raised to it. Extra
# arguments go to pytest.
#
#   scripts/test_lower_bounds.sh                 # transformers 4.57.6
#   scripts/test_lower_bounds.sh 5.1.0           # the lowest 5.x release the pin admits
#   TORCH=2.6.0 scripts/test_lower_bounds.sh     # and torch at its floor
#
# Not part of CI (.ci/run): its own environment takes a few minutes to set up. Run it when a pin changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ENV=.venv-lower-bounds
TRANSFORMERS=
if [[ ${1:-} =~ ^[0-9] ]]; then TRANSFORMERS=$1; shift; fi
[ -x "$ENV/bin/python" ] || "$PYTHON" -m venv "$ENV"
TORCH=${TORCH:-2.13.0}
"$ENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH"
# transformers first, without its dependencies, to read what it requires of them
TRANSFORMERS=${TRANSFORMERS:-$("$ENV/bin/python" -c 'import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(re.search(r">=([0-9.]+)", d)[1] for d in deps if d.startswith("transformers")))')}
"$ENV/bin/pip" install -q --disable-pip-version-check --no-deps "transformers==$TRANSFORMERS" packaging
# one `name==floor` constraint per dependency with a `>=` floor, the floor raised where this transformers requires
# more (transformers 5 needs newer huggingface_hub and safetensors than 4.57 does); torch as installed above
"$ENV/bin/python" - "$TRANSFORMERS" "$TORCH" > "$ENV/constraints.txt" <<'EOF'
import re
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

transformers = sys.argv[1]
required = {}  # what this transformers requires of each package (unconditional `>=` floors)
for text in metadata.requires("transformers") or []:
    requirement = Requirement(text)
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    if requirement.marker is None and floors:
        required[canonicalize_name(requirement.name)] = max(floors)
for requirement in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    name, floor = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", requirement).groups()
    if name == "torch":
        floor = sys.argv[2]
    elif name == "transformers":
        floor = transformers
    else:
        floor = str(max(Version(floor), required.get(canonicalize_name(name), Version("0"))))
    print(f"{name}=={floor}")
EOF
"$ENV/bin/pip" install -q --disable-pip-version-check -c "$ENV/constraints.txt" -e ".[test]"
echo "--- the default suite with:"
"$ENV/bin/pip" list --disable-pip-version-check 2>/dev/null \
    | grep -i -E "^(torch|transformers|safetensors|huggingface.hub|datasets|accelerate|tqdm|peft|matplotlib) "
export DIET_DATA_DIR="${DIET_DATA_DIR:-$PWD/../shared/data}"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$ENV/bin/python" -m pytest -n auto "$@"
