"""The benchmark scripts and examples import only names diet-hf defines: no test runs most of them, so a module split
that moves a name would otherwise break them silently (it did once: `first_token_inputs` left `diet_hf.profiler`)."""

import ast
import importlib
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SCRIPTS = sorted([*(REPO_ROOT / "benchmarks").glob("*.py"), *(REPO_ROOT / "examples").glob("*.py")])


def _diet_hf_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from diet_hf... import name` in `path`, at any depth (lazy imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "diet_hf":
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_diet_hf_name_a_script_imports_exists(path):
    missing = []
    for module_name, name in _diet_hf_imports(path):
        if module_name == "diet_hf.onnx":
            pytest.importorskip("optimum.exporters.onnx")  # the `onnx` extra's own environment
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            try:  # a submodule imported by name (`from diet_hf import moments`)
                importlib.import_module(f"{module_name}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"{path.name} imports names diet-hf does not define: {missing}"


def test_the_check_sees_a_missing_name(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("def run():\n    from diet_hf.profiler import first_token_inputs\n")
    assert _diet_hf_imports(script) == [("diet_hf.profiler", "first_token_inputs")]
    assert not hasattr(importlib.import_module("diet_hf.profiler"), "first_token_inputs")


def _unmapped(root: Path, architecture: str) -> list[str]:
    """The modules of diet_hf/ and the scripts of benchmarks/, examples/ and scripts/ under `root` that
    `architecture` (the text of ARCHITECTURE.md) does not name, by file name or module name."""
    files = [
        *(path for path in (root / "diet_hf").rglob("*.py") if not path.name.startswith("__")),
        *(root / "benchmarks").glob("*.py"),
        *(root / "examples").glob("*.py"),
        *(root / "scripts").glob("*.sh"),
    ]
    return sorted(
        str(path.relative_to(root))
        for path in files
        if path.name not in architecture and (path.suffix != ".py" or f"`{path.stem}`" not in architecture)
    )


def test_architecture_md_names_every_module_and_script():
    # the map of the code: a module or script it does not name is one a reader cannot find from it
    missing = _unmapped(REPO_ROOT, (REPO_ROOT / "ARCHITECTURE.md").read_text("utf-8"))
    assert not missing, f"ARCHITECTURE.md does not name: {missing}"


def test_the_map_check_sees_an_unnamed_module(tmp_path):
    (tmp_path / "diet_hf").mkdir()
    (tmp_path / "diet_hf" / "plan.py").write_text("")
    (tmp_path / "diet_hf" / "new_module.py").write_text("")
    assert _unmapped(tmp_path, "`plan.py` owns plans") == ["diet_hf/new_module.py"]
