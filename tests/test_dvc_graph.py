"""dvc.yaml declares everything of `agent_loop` that each stage runs: the modules its notebook imports, directly or through other
modules (at module level or inside a function). A module missing from a stage's deps is a change `dvc repro` would not re-run it for."""
import ast, json
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(source: str, package: Path = ROOT / "agent_loop") -> set[str]:
    "The modules of `package` that `source` imports anywhere: `from .x import`, `from . import x`, `from agent_loop.x import`, `import agent_loop.x`."
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if node.level == 1 or parts[0] == package.name:
                inner = parts[1:] if node.level == 0 else parts
                names |= {inner[0]} if inner and inner[0] else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith(package.name + ".")}
    return {n for n in names if (package / f"{n}.py").exists()}


def import_closure(modules: set[str], package: Path = ROOT / "agent_loop") -> set[str]:
    "`modules` and every module of `package` they import, transitively."
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m); todo += imported_modules((package / f"{m}.py").read_text(), package)
    return seen


def data_folders(modules: set[str], package: Path = ROOT / "agent_loop") -> set[str]:
    "The folders of package data (`agent_loop/<folder>/`) that `modules` read: those whose name a module's source quotes."
    folders = [d.name for d in package.iterdir() if d.is_dir() and not d.name.startswith(("_", "."))]
    return {f"agent_loop/{d}" for m in modules for d in folders if f'"{d}"' in (package / f"{m}.py").read_text()}


def notebook_source(path: Path) -> str:
    "The code cells of a notebook as one Python source (IPython magics and shell lines left out)."
    cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    return "\n".join(line for cell in cells for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))


def missing_deps(stages: dict, root: Path = ROOT) -> dict[str, list[str]]:
    "For each stage that runs a notebook, the `agent_loop` modules it runs but does not declare in `deps`."
    out = {}
    for name, stage in stages.items():
        notebook = next(w for w in stage["cmd"].split() if w.endswith(".ipynb") and not w.startswith("reports/"))
        deps = {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}
        modules = import_closure(imported_modules(notebook_source(root / notebook)))
        runs = {f"agent_loop/{m}.py" for m in modules} | data_folders(modules)
        if missing := sorted(runs - deps - {"agent_loop/__init__.py"}): out[name] = missing
    return out


def stages() -> dict: return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_closure_follows_imports_inside_functions_and_relative_ones():
    assert imported_modules("from .format import render\ndef f():\n    from agent_loop.serving import x\n    import agent_loop.ollama\nfrom . import bfcl") == \
        {"format", "serving", "ollama", "bfcl"}
    assert imported_modules("import json\nfrom pathlib import Path\nfrom agent_loop import not_a_module") == set()
    assert "corpus" in import_closure({"data"})  # data imports corpus
    assert data_folders({"corpus"}) == {"agent_loop/corpus_families"}  # the function families are data files the corpus reads


def test_every_stage_declares_the_modules_it_runs():
    assert missing_deps(stages()) == {}


def test_a_removed_module_is_reported():
    s = stages()
    s["train"]["deps"].remove("agent_loop/config.py")
    assert missing_deps(s) == {"train": ["agent_loop/config.py"]}
    s["prepare"]["deps"].remove("agent_loop/corpus_families")
    assert missing_deps(s) == {"train": ["agent_loop/config.py"], "prepare": ["agent_loop/corpus_families"]}
