"""The foundation as users meet it: the adapter committed with the project is the one `dvc.lock` names; `make foundation`
makes one (on the tiny random Gemma 3 here) without leaving the stage unfrozen; the next `dvc repro` trains from it and the
manifest names it; and a toolset declared without EXAMPLES, which no training example ever shows, is served and called."""
import hashlib, json
from pathlib import Path
import pytest
import yaml
from conftest import BIN, ROOT, make_project, run
from test_pipeline import set_params

# A user's toolset declared the documented way, with no EXAMPLES: only the foundation's reading of tools can serve it.
LIGHTHOUSE = '''
from typing import Literal

def lighthouse_status(name: Literal["Tarbat Ness", "Fastnet", "Eddystone"]) -> str:
    """Whether a lighthouse is lit tonight.

    Args:
        name: The lighthouse.
    """
    return f"{name}: lit from sunset, one white flash every 5 s"
'''

TINY = {"tools": {"toolsets": ["toolsets/lighthouse.py"]},
        "data": {"corpus_examples": 30, "heldout_examples": 6, "heldout_val_examples": 6}, "model": {"base": "tiny-random:gemma3", "max_length": 384},
        "foundation": {"corpus_examples": 16, "max_steps": 2, "batch_size": 2, "warmup_steps": 0},
        "train": {"max_steps": 2, "batch_size": 2, "log_every": 1},
        "evaluate": {"max_examples": 4, "max_new_tokens": 8, "bfcl_examples": 1, "bfcl_suites": ["simple_python"],
                     "gate": {"min_tool_call_accuracy": 0.0, "min_format_valid_rate": 0.0, "min_gain_over_base": 0.0,
                              "max_regression_vs_current": 1.0, "max_category_regression": 1.0}}}


def md5(path: Path) -> str: return hashlib.md5(path.read_bytes()).hexdigest()


def lock_entry(project: Path, stage: str, kind: str, path: str) -> dict:
    return next(e for e in yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage][kind] if e["path"] == path)


def test_the_committed_foundation_is_what_dvc_lock_names():
    "A fresh clone finds the foundation up to date: its files are the ones dvc.lock hashed, and foundation.json names its adapter."
    status = run(["dvc", "status", "foundation", "--json"], ROOT).stdout
    assert json.loads(status or "{}") == {}, status
    rec = json.loads((ROOT / "models/foundation/foundation.json").read_text())
    assert rec["adapter_sha256"] == hashlib.sha256((ROOT / "models/foundation/adapter_model.safetensors").read_bytes()).hexdigest()
    assert rec["base"]["name"] == yaml.safe_load((ROOT / "params.yaml").read_text())["model"]["base"]
    assert "frozen: true" in (ROOT / "dvc.yaml").read_text().split("foundation:")[1].split("cmd:")[0], "no `dvc repro` re-makes the foundation by accident"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    p = make_project(tmp_path_factory.mktemp("foundation") / "project")
    (p / "toolsets/lighthouse.py").write_text(LIGHTHOUSE)
    set_params(p, TINY)
    run(["git", "add", "-A"], p); run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"], p)
    stamp = ROOT / ".venv/.setup-complete"  # set-up is this checkout's: the test runs `make foundation` itself, not its pip installs
    run(["make", "foundation", f"BIN={BIN}", f"STAMP={stamp}", "-o", str(stamp)], p)
    run(["dvc", "repro"], p)
    return p


def test_make_foundation_makes_it_and_freezes_the_stage_again(project):
    assert run(["git", "diff", "--stat", "dvc.yaml"], project).stdout == "", "make foundation leaves dvc.yaml as it found it"
    rec = json.loads((project / "models/foundation/foundation.json").read_text())
    assert rec["steps"] == 2 and rec["base"]["name"] == "tiny-random:gemma3" and rec["trained_on"].startswith(("CPU", "NVIDIA"))
    assert "changed" not in run(["dvc", "status"], project).stdout
    assert json.loads((project / "reports/foundation.json").read_text())["adapter_sha256"] == rec["adapter_sha256"]


def test_train_starts_from_the_foundation_and_the_manifest_names_it(project):
    rec = json.loads((project / "models/foundation/foundation.json").read_text())
    report = json.loads((project / "reports/train.json").read_text())
    assert report["foundation"]["from_foundation"] is True and report["foundation"]["adapter_sha256"] == rec["adapter_sha256"], report["foundation"]
    assert report["started_from"] == {"adapter_sha256": rec["adapter_sha256"], "step": 0}
    # dvc.lock: what train read is what foundation wrote
    assert lock_entry(project, "train", "deps", "models/foundation")["md5"] == lock_entry(project, "foundation", "outs", "models/foundation")["md5"]
    current = json.loads((project / "models/current.json").read_text())
    manifest = json.loads((project / current["gguf"]).with_name("manifest.json").read_text())
    assert manifest["foundation"]["adapter_sha256"] == rec["adapter_sha256"]
    assert rec["adapter_sha256"][:12] in (project / current["gguf"]).with_name("README.md").read_text()


def test_another_base_trains_from_the_base_and_says_why(project):
    original = (project / "params.yaml").read_text()
    try:
        set_params(project, {"model": {"base": "tiny-random:gemma3n"}})
        run(["dvc", "repro", "train"], project)
        report = json.loads((project / "reports/train.json").read_text())
        assert report["foundation"]["from_foundation"] is False and "made for tiny-random:gemma3" in report["foundation"]["why"]
        assert report["started_from"] is None
    finally: (project / "params.yaml").write_text(original)


def test_a_toolset_without_examples_is_served_and_called(project):
    """The lighthouse toolset has no EXAMPLES: no training conversation shows its tool. The app serves it, and at a threshold that
    calls whenever a tool is offered, the tiny random model's reply is a call held to its schema (an enum: a random model would
    never end a free string), which the app runs."""
    from agent_loop.app import chat_ui, load_agent
    from agent_loop.config import load_settings
    train = (project / "data/processed/train.jsonl").read_text()
    assert "lighthouse_status" not in train, "nothing trains on the new tool"
    agent = load_agent(load_settings(project, environ={"AGENT_LOOP_SERVING_CALL_THRESHOLD": "0"})); demo = chat_ui(agent)
    try:
        assert [t.name for t in agent.tools] == ["lighthouse_status"]
        turn = agent.turn("Is the Tarbat Ness lighthouse lit tonight?")
    finally: demo.close(); agent.backend.close()
    calls = [c for m in turn["new_messages"] if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    results = [m for m in turn["new_messages"] if m["role"] == "tool"]
    assert calls and calls[0]["name"] == "lighthouse_status" and calls[0]["arguments"]["name"] in ("Tarbat Ness", "Fastnet", "Eddystone"), turn["new_messages"]
    assert results and results[0]["content"].endswith("lit from sunset, one white flash every 5 s"), results
