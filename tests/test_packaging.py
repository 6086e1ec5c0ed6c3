"""What `pip install diet-hf` installs: the wheel built from this tree. Every other test imports the editable
install, which maps the source folders whatever `pyproject.toml` lists, so a module left out of the wheel, or remote
code not where `diet_hf.hub` looks for it, would pass them all and break every installed copy."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import transformers
from conftest import REPO_ROOT

import diet_hf
from diet_hf.constants import REMOTE_CODE_FILES

# The wheel is the same whatever transformers is installed, and every other test runs the same modules from source on
# transformers 4.57 too: scripts/test.sh's 5.x run builds and runs it, its 4.57 run does not again (about 10 s of CI).
pytestmark = pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) < 5, reason="the wheel is built and run by the transformers 5.x suite"
)

SMOKE_SCRIPT = """
import contextlib
import io
import runpy
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

import diet_hf
from diet_hf import build_pruned_model
from diet_hf.hub import remote_code_dir, save_pruned_model
from diet_hf.plan import PruningPlan

site, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
assert Path(diet_hf.__file__).resolve().is_relative_to(site), diet_hf.__file__  # not the source tree
assert remote_code_dir().resolve() == site / "diet_hf" / "_remote_code", remote_code_dir()
config = Gemma3TextConfig(
    vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, layer_types=["sliding_attention", "full_attention"], sliding_window=4,
)
torch.manual_seed(0)
dense = Gemma3ForCausalLM(config).eval()
plan = PruningPlan.keep_all(dense.config)
plan.mlp_kept_indices = [list(range(0, 64, 2)), list(range(32))]
plan.__post_init__()
pruned = build_pruned_model(dense, plan).eval()
save_pruned_model(pruned, out)
loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
ids = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    torch.testing.assert_close(loaded(ids).logits, pruned(ids).logits, rtol=0, atol=1e-6)
# the command line starts, as `python -m diet_hf.cli` and as `python -m diet_hf` (like `python -m pip`), in this
# process: a second interpreter importing torch and transformers again cost 4-6 s each
for module in ("diet_hf.cli", "diet_hf"):
    sys.argv = [module, "prune", "--help"]
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as error:
        assert error.code in (0, None), (module, error.code)
    assert "--sparsity" in shown.getvalue(), (module, shown.getvalue()[-500:])
elsewhere = [
    name for name, module in sys.modules.items()
    if name.split(".")[0] == "diet_hf" and getattr(module, "__file__", None)
    and not Path(module.__file__).resolve().is_relative_to(site)
]
assert not elsewhere, elsewhere
print("ok")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from the source distribution of a copy of this tree's package files, the way `python -m
    build` makes a release (the build writes beside its sources): so the sdist is checked to carry what the wheel
    needs, too."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for name in ("diet_hf", "modeling"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))

    def run(*args: str, cwd: Path = root) -> None:
        result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    run(
        "-c",
        "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])",
        str(root),
        cwd=source,
    )
    (sdist,) = root.glob("diet_hf-*.tar.gz")
    run("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(sdist))
    (built,) = root.glob("diet_hf-*.whl")
    return built


def test_the_wheel_holds_every_module_the_remote_code_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        commands = archive.read(entry_points).decode()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    package = REPO_ROOT / "diet_hf"
    expected = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in package.rglob("*.py")
        if "_optimum_register" not in path.parts and "__pycache__" not in path.parts
    }
    expected |= {f"diet_hf/_remote_code/{path.name}" for path in (REPO_ROOT / "modeling").glob("*.py")}
    expected |= {  # optimum-cli's plug-in namespace
        f"optimum/commands/register/{path.name}" for path in (package / "_optimum_register").glob("*.py")
    }
    assert {f"diet_hf/_remote_code/{name}" for name in REMOTE_CODE_FILES} <= expected
    assert {name for name in names if name.endswith(".py")} == expected
    assert "diet-hf = diet_hf.cli:main" in commands
    # the release's version is diet_hf.__version__ (pyproject.toml reads it), which every saved record carries
    assert f"\nVersion: {diet_hf.__version__}\n" in metadata


def test_diet_hf_from_the_wheel_prunes_saves_and_loads(wheel, tmp_path):
    """Run from the unpacked wheel, not the source tree: the saved checkpoint carries the wheel's remote code,
    byte for byte this tree's `modeling/`, and loads through the Auto class with the pruned model's logits; the
    command line starts (`python -m diet_hf.cli` and `python -m diet_hf`); nothing of diet_hf comes from elsewhere."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    # -S: site-packages without their .pth files, so the editable install's finder (which maps this source tree) is
    # not there to fill in what the wheel lacks; the dependencies come from site-packages on PYTHONPATH
    paths = [str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env["HF_HUB_OFFLINE"] = "1"
    script = tmp_path / "smoke.py"
    script.write_text(SMOKE_SCRIPT)
    out = tmp_path / "pruned"

    result = subprocess.run(
        [sys.executable, "-S", str(script), str(site), str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    for name in REMOTE_CODE_FILES:
        assert (out / name).read_bytes() == (REPO_ROOT / "modeling" / name).read_bytes()
