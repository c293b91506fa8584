"""The notebooks are the source: exporting and cleaning them must not change what is committed."""
import shutil, subprocess, sys
from pathlib import Path
from conftest import ROOT, run

BIN = Path(sys.executable).parent


def _copy(tmp_path: Path) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".venv", "__pycache__", "data", "models", "reports", "wandb", ".dvc"))
    return dest


def test_nbdev_export_changes_nothing(tmp_path):
    repo = _copy(tmp_path)
    before = {p.name: p.read_text() for p in (repo / "agent_loop").glob("*.py")}
    run([BIN / "nbdev-export"], repo)
    after = {p.name: p.read_text() for p in (repo / "agent_loop").glob("*.py")}
    assert after == before, f"agent_loop/ differs from the notebooks: {[k for k in after if after.get(k) != before.get(k)]}"


def test_nbdev_clean_changes_nothing(tmp_path):
    repo = _copy(tmp_path)
    nbs = sorted((repo / "nbs").rglob("*.ipynb"))
    before = [p.read_text() for p in nbs]
    run([BIN / "nbdev-clean"], repo)
    changed = [p.name for p, b in zip(nbs, before) if p.read_text() != b]
    assert not changed, f"notebooks not clean (run nbdev-clean): {changed}"


def test_pipeline_notebooks_keep_the_parameters_tag():
    import json
    nbs = sorted((ROOT / "nbs/pipeline").glob("*.ipynb"))
    assert [nb.stem for nb in nbs] == ["00_foundation", "01_prepare", "02_train", "03_evaluate", "04_export", "05_sealed"]
    for nb in nbs:
        tags = [t for c in json.loads(nb.read_text())["cells"] for t in c.get("metadata", {}).get("tags", [])]
        assert "parameters" in tags, nb.name


def test_every_module_imports_on_its_own():
    "Exported cells must not lean on names that only the notebook defines (test helpers, earlier cells)."
    mods = sorted(p.stem for p in (ROOT / "agent_loop").glob("*.py") if not p.stem.startswith("_"))
    code = "import importlib\n" + "".join(f"importlib.import_module('agent_loop.{m}')\n" for m in mods)
    run([sys.executable, "-c", code], ROOT)


def test_nbdev_test_runs_the_library_notebooks():
    "nbdev's own runner (not only nbval) passes: it runs cells in IPython, where names like `_i` are taken, and skips nbs/pipeline."
    run([BIN / "nbdev-test", "--n-workers", "2"], ROOT)
