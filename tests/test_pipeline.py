"""The real pipeline, end to end: `dvc repro` runs the four papermill stages on a tiny random Gemma 3 (real tokenizer),
W&B offline, for the built-in tools plus a toolset module the built-in data never mentions; the app serves exactly that
toolset; then the loop closes: a logged interaction changes `prepare` and the next `dvc repro` trains on it."""
import hashlib, json, math
from pathlib import Path
import pytest
import yaml
from conftest import make_project, run

TINY = {"tools": {"toolsets": ["builtin", "toolsets/harbour.py"]},
        "data": {"n_examples": 60, "corpus_examples": 40, "heldout_examples": 10, "heldout_val_examples": 12}, "model": {"base": "tiny-random:gemma3"},
        "train": {"max_steps": 3, "batch_size": 2, "log_every": 1},
        "evaluate": {"max_examples": 6, "max_new_tokens": 8, "bfcl_examples": 2, "sealed_examples": 2, "max_requests": 3,
                     # a random model scores zero: open the gate so that promotion itself is exercised
                     "gate": {"min_tool_call_accuracy": 0.0, "min_format_valid_rate": 0.0, "min_gain_over_base": 0.0,
                              "max_regression_vs_current": 1.0, "max_category_regression": 1.0}}}

# A user's toolset: tools the built-in data never mentions, with examples of requests and the calls they need.
HARBOUR = '''
from typing import Literal

def tide_times(harbour: str, day: Literal["today", "tomorrow"] = "today") -> list:
    """High and low tide times at a harbour.

    Args:
        harbour: The harbour, e.g. Bergen.
        day: Which day.
    """
    return [f"{harbour} {day}: high 06:12", "low 12:30"]

def berth_fee(length_m: float, nights: int) -> dict:
    """The fee for mooring a boat in the marina.

    Args:
        length_m: Length of the boat in metres.
        nights: Number of nights.
    """
    return {"fee_eur": round(length_m * 2.5 * nights, 2)}

EXAMPLES = [
    {"request": f"When is high tide in {h}?", "calls": [{"name": "tide_times", "arguments": {"harbour": h}}], "answer": "Tides: {0}."}
    for h in ("Bergen", "Brest", "Dover", "Cork", "Kiel", "Oban")
] + [
    {"request": f"What does a {l} m boat pay for {n} nights?", "calls": [{"name": "berth_fee", "arguments": {"length_m": l, "nights": n}}], "answer": "The fee: {0}."}
    for l, n in ((8.5, 2), (12, 3), (6, 1), (10, 4))
] + [{"request": "Tomorrow's tides in Oban, please.", "calls": [{"name": "tide_times", "arguments": {"harbour": "Oban", "day": "tomorrow"}}]},
     {"request": "Hello harbour master!", "calls": [], "answer": "Hello! Ask me about tides and berth fees."}]
'''


def set_params(project: Path, overrides: dict):
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in overrides.items():
        for k, v in values.items():
            if isinstance(v, dict): params[section].setdefault(k, {}).update(v)
            else: params[section][k] = v
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    p = make_project(tmp_path_factory.mktemp("pipeline") / "project")
    (p / "toolsets/harbour.py").write_text(HARBOUR)
    set_params(p, TINY)
    run(["dvc", "repro"], p)
    return p


def sha256(path: Path) -> str: return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_artefact(project):
    processed = project / "data/processed"
    counts = {s: len((processed / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "val", "test")}
    stats = json.loads((processed / "stats.json").read_text())
    left_out = sum(stats["seen_by_foundation"].values())  # val/test requests the committed foundation trained on
    assert counts == stats["examples"] and sum(counts.values()) + left_out == 60 + 12 + 40 + 10 + 12  # built-in, the toolset's examples, corpus, held-out for test and for validation
    assert {"heldout/simple", "heldout/multiple", "toolset/multiple"} <= set(stats["categories"]["test"])
    assert (project / "models/candidate/adapter_model.safetensors").exists()
    ev = json.loads((project / "reports/evaluate.json").read_text())
    for who in ("base", "candidate"):
        assert set(ev[who]) >= {"tool_call_accuracy", "format_valid_rate", "no_call_accuracy", "categories"}
    assert {"heldout/simple", "bfcl/simple_python", "bfcl/irrelevance"} <= set(ev["candidate"]["categories"])
    gate_reads = {c for c in ev["candidate"]["categories"] if c.startswith("toolset/") and c != "toolset/answer"}
    assert "toolset/multiple" in ev["base"]["categories"] and set(ev["base"]["categories"]) <= gate_reads, \
        "the base is scored only where the gate reads it (the toolsets' first turns), unless evaluate.base_bfcl"
    assert ev["current"] is None and ev["promoted"] is True
    assert (project / ev["candidate_gguf"]).exists(), "the GGUF evaluate scored is kept for export to ship"
    assert "bfcl/parallel" in (project / "reports/evaluate_categories.csv").read_text()
    curve = (project / "reports/train_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,loss") and len(curve) == 4
    for nb in ("01_prepare", "02_train", "03_evaluate", "04_export", "05_sealed"): assert (project / f"reports/{nb}.ipynb").exists()
    assert len(list((project / "wandb").glob("offline-run-*"))) == 5, "each stage logs an offline W&B run (foundation is frozen)"


def test_the_reports_say_which_sample(project):
    "The development sample (evaluate: may be studied) and the sealed one (its own stage, which export does not depend on) are disjoint, and each report says which it holds."
    ev, sealed = (json.loads((project / f"reports/{name}.json").read_text()) for name in ("evaluate", "sealed"))
    assert ev["samples"]["bfcl"].startswith("development:") and ev["samples"]["requests"].startswith("development:")
    assert sealed["samples"]["bfcl"].startswith("sealed:") and sealed["samples"]["requests"].startswith("sealed:")
    assert sealed["candidate_sha256"] == ev["candidate_sha256"] and sealed["call_threshold"] == ev["call_threshold"]
    cases = lambda name: [json.loads(line) for line in (project / f"reports/{name}_cases.jsonl").read_text().splitlines()]
    dev = {r["id"] for r in cases("evaluate") if r["suite"] == "bfcl"}
    held = {r["id"] for r in cases("sealed") if r["suite"] == "bfcl"}
    assert len(dev) == 4 * 2 and len(held) == 7 * 2 and not dev & held
    assert {r["category"] for r in cases("sealed") if r["suite"] == "bfcl"} >= {"live_simple", "live_multiple", "live_irrelevance"}
    asked = lambda name: {r["request"] for r in cases(name) if r["suite"] == "requests"}
    assert len(asked("evaluate")) == len(asked("sealed")) == 3 and not asked("evaluate") & asked("sealed")
    assert ev["candidate"]["requests"]["cases"] == sealed["requests"]["cases"] == 3
    export_deps = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["export"]["deps"]
    assert not [d for d in export_deps if "sealed" in d], "the gate and export never read the sealed sample"


def test_registry_and_current(project):
    current = json.loads((project / "models/current.json").read_text())
    gguf = project / current["gguf"]
    manifest = json.loads((gguf.parent / "manifest.json").read_text())
    assert manifest["sha256"] == current["sha256"] == sha256(gguf)
    ev = json.loads((project / "reports/evaluate.json").read_text())
    assert manifest["sha256"] == ev["candidate_sha256"], "what ships is the very file the gate scored"
    assert [m["spec"] for m in manifest["toolset"]["toolsets"]] == ["builtin", "toolsets/harbour.py"]
    assert {"tide_times", "berth_fee", "calculator"} <= {s["name"] for s in manifest["toolset"]["schemas"]}
    assert manifest["base"]["name"] == "tiny-random:gemma3"
    assert manifest["dataset_sha256"] == json.loads((project / "data/processed/stats.json").read_text())["dataset_sha256"]
    # the params this test wrote are the one change since the project's commit: dvc.lock and the reports DVC rewrote are not
    assert manifest["dirty_paths"] == ["params.yaml"] and manifest["code_commit"].endswith("-dirty")
    assert set(manifest["wandb_runs"]) == {"prepare", "train", "evaluate", "export"}
    assert "<tool_call>" in (gguf.parent / "Modelfile").read_text()
    assert "# agent-loop" in (gguf.parent / "README.md").read_text()


def test_gguf_loads_and_answers(project):
    from agent_loop.serving import LlamaCppBackend
    current = json.loads((project / "models/current.json").read_text())
    backend = LlamaCppBackend(project / current["gguf"], current["sha256"], context_length=512)
    prompt = "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    out, again = backend.complete(prompt, 4), backend.complete(prompt, 4)
    # a random model says nothing in particular, but greedily, so the same every time, within the 4 tokens asked for
    assert 0 < out.tokens <= 4 and (out.text, out.tokens) == (again.text, again.tokens)
    with pytest.raises(Exception, match="sha256"):
        LlamaCppBackend(project / current["gguf"], "0" * 64)


def test_no_test_prompt_in_training_data(project):
    "Invariant 4: the test split is for evaluation only."
    from agent_loop.data import load_split, normalize_prompt
    train = {normalize_prompt(r["prompt"]) for r in load_split(project / "data/processed/train.jsonl")}
    for split in ("test", "val"):
        assert not train & {normalize_prompt(r["prompt"]) for r in load_split(project / f"data/processed/{split}.jsonl")}


def test_same_params_same_bytes(project, tmp_path):
    from agent_loop.config import load_params
    from agent_loop.data import prepare
    stats = prepare(load_params(project / "params.yaml"), project, project / "data/interactions", tmp_path / "processed", tmp_path / "snapshot", project / "models/foundation")
    for split in ("train", "val", "test"):
        assert (tmp_path / "processed" / f"{split}.jsonl").read_bytes() == (project / f"data/processed/{split}.jsonl").read_bytes()


def test_the_loop_closes(project):
    """New interaction records make prepare stale; the next repro trains on the turns users vouched for and a reviewer approved (rated up,
    or corrected through the API: then on the correction, never the rejected reply), drops what it must, and registers a second version."""
    from gradio_client import Client
    from agent_loop.app import chat_ui, load_agent
    from agent_loop.config import load_settings
    from agent_loop.data import load_split
    from agent_loop.interactions import InteractionLog
    from agent_loop.review import decide
    assert "changed" not in run(["dvc", "status"], project).stdout
    first = json.loads((project / "models/current.json").read_text())["version"]
    git_before = run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout
    log = InteractionLog(project / "data/interactions")
    calc = lambda q, expr, result, answer: [{"role": "user", "content": q}, {"role": "assistant", "content": "", "tool_calls": [{"name": "calculator", "arguments": {"expression": expr}}]},
                                            {"role": "tool", "name": "calculator", "content": result}, {"role": "assistant", "content": answer}]
    liked = log.log_turn(calc("Please compute 1234 plus 4321 for me", "1234+4321", "5555", "1234 + 4321 = 5555."), {"version": first, "sha256": "x"}, "s1")
    approved = [log.log_feedback(liked, "up")]
    forged = log.log_turn(calc("What is 2 plus 2?", "2+2", "5", "2 + 2 = 5."), {"version": first, "sha256": "x"}, "s3")
    approved.append(log.log_feedback(forged, "up"))  # a result the calculator never gave: must not teach anything, approved or not
    unrated = log.log_turn(calc("What is 3 plus 3?", "3+3", "6", "It is 6."), {"version": first, "sha256": "x"}, "s4")
    pending = log.log_turn(calc("What is 5 plus 5?", "5+5", "10", "It is 10."), {"version": first, "sha256": "x"}, "s5")
    log.log_feedback(pending, "up")  # no reviewer has looked at it: as if unrated
    held_out = load_split(project / "data/processed/test.jsonl")[0]["messages"]  # a user asks a benchmark question in the app
    leak = log.log_turn(held_out, {"version": first, "sha256": "x"}, "s2")
    approved.append(log.log_feedback(leak, "up"))
    # a user of the API corrects what the (random) model served
    agent = load_agent(load_settings(project)); demo = chat_ui(agent)
    demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        served = client.predict("What is 37 times 12?", "", api_name="/chat")
        right = [{"name": "calculator", "arguments": {"expression": "37*12"}}]
        approved.append(client.predict(served["turn_id"], json.dumps(right), "37 times 12 is 444.", "use the calculator", api_name="/correct")["correction_id"])
    finally: demo.close(); agent.backend.close()
    for proposal in approved: decide(project / "data/interactions", proposal, "approve", "reviewer")
    with open(log.path(), "a") as f: f.write("this line is not JSON\n")
    assert run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout == git_before, "raw chat logs never show up in git"
    status = run(["dvc", "status"], project).stdout
    assert "prepare" in status and "data/interactions" in status
    # 3 steps of 2 see 6 examples, which need not include the new ones (then the same adapter and GGUF come out, and export
    # rightly registers nothing): train on every example once, so that the model must change; then KTO on the judged replies
    original = (project / "params.yaml").read_text()
    set_params(project, {"train": {"max_steps": 0, "batch_size": 16, "preference": "kto", "preference_steps": 2}})
    try: run(["dvc", "repro"], project)
    finally: (project / "params.yaml").write_text(original)
    train = {r["id"]: r for r in load_split(project / "data/processed/train.jsonl")}
    assert "1234 plus 4321" in train[f"log-{liked}"]["prompt"]
    assert train[f"log-{served['turn_id']}"]["messages"] == [{"role": "user", "content": "What is 37 times 12?"}, {"role": "assistant", "content": "", "tool_calls": right},
                                                            {"role": "tool", "name": "calculator", "content": "444"}, {"role": "assistant", "content": "37 times 12 is 444."}]
    for dropped in (forged, unrated, pending, leak): assert f"log-{dropped}" not in train  # the leak: a logged turn that repeats a test prompt
    # what preference learning may read: the correction as a pair (its call chosen over what the model served), the 👍 reply as chosen
    judged = {r["id"]: r for r in load_split(project / "data/processed/preference.jsonl")}
    assert set(judged) == {f"judged-{liked}", f"judged-{served['turn_id']}"}
    assert judged[f"judged-{served['turn_id']}"]["chosen"] == {"role": "assistant", "content": "", "tool_calls": right}
    assert judged[f"judged-{served['turn_id']}"]["rejected"] != judged[f"judged-{served['turn_id']}"]["chosen"]
    assert judged[f"judged-{liked}"]["rejected"] is None
    report = json.loads((project / "reports/prepare.json").read_text())
    assert report["log_problems"] == 1
    assert report["interactions"]["kept_as"] == {"corrected": 1, "rated up": 2}
    assert report["interactions"]["skipped"] == {"a tool result does not replay (forged or stale)": 1, "unrated": 2}
    assert report["interactions"]["review"] == {"proposed": 5, "trusted": 0, "approved": 4, "rejected": 0, "pending": 1, "superseded": 0}
    trained = json.loads((project / "reports/train.json").read_text())
    assert trained["steps"] == math.ceil(trained["examples"] / 16), "one pass over every training example"
    assert (trained["preference"]["method"], trained["preference"]["steps"], trained["preference"]["desirable"]) == ("kto", 2, 2)
    versions = sorted(p.name for p in (project / "models/registry").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(versions) == 2 and first in versions, "earlier versions stay for rollback"
    assert (project / "models/registry" / first / "model.gguf").exists()
    # the new model's manifest names exactly the log records it was trained on; they are in the DVC snapshot, not in git
    manifest = json.loads((project / "models/registry" / max(set(versions) - {first}) / "manifest.json").read_text())
    assert manifest["interactions"]["turns"] == sorted([liked, served["turn_id"]])
    snapshot = [json.loads(line) for line in (project / "data/snapshot/interactions.jsonl").read_text().splitlines()]
    assert {r["type"] for r in snapshot} == {"turn", "feedback", "correction", "review"} and len(snapshot) == 6  # with the approvals


def test_the_app_serves_the_toolset_the_model_was_trained_with(project):
    "The app offers the manifest's toolset and runs its tools; a toolset changed after training stops it with a clear message. (It logs a turn: after the loop test.)"
    from agent_loop.app import chat_ui, load_agent
    from agent_loop.config import load_settings
    from agent_loop.serving import Completion
    from agent_loop.tools import ToolsetError
    agent = load_agent(load_settings(project)); demo = chat_ui(agent)
    assert {"tide_times", "berth_fee", "calculator"} <= {t.name for t in agent.tools}
    assert "`tide_times`" in " ".join(str(c.get("props", {}).get("value", "")) for c in demo.config["components"])
    class Scripted:  # the tiny random model cannot call a tool; this stands in for its output only, the tool runs for real
        outs = ['<tool_call>{"name": "berth_fee", "arguments": {"length_m": 8, "nights": 2}}</tool_call>', "40 euros."]
        def complete(self, prompt, max_tokens=128, on_text=None, **decoding): return Completion(self.outs.pop(0), 3, 0.1)
    real = agent.backend; agent.swap(Scripted(), agent.model_info)
    turn = agent.turn("What does an 8 m boat pay for 2 nights?")
    real.close()
    assert [m.get("content") for m in turn["new_messages"] if m["role"] == "tool"] == ['{"fee_eur": 40.0}']
    source = project / "toolsets/harbour.py"
    original = source.read_text()
    try:
        source.write_text(original.replace("The fee for mooring", "What it costs to moor"))
        assert "prepare" in run(["dvc", "status"], project).stdout, "DVC watches toolsets/"
        with pytest.raises(ToolsetError, match="berth_fee changed"): load_agent(load_settings(project))
    finally: source.write_text(original)


def test_dvc_push_and_pull_round_trip(project, tmp_path):
    "What `dvc repro` made (data, the log snapshot, models) goes to a remote and comes back byte for byte into an empty cache. (Before the tests that break a repro: DVC removes a failed stage's outputs.)"
    outs = [project / p for p in ("data/processed/train.jsonl", "data/snapshot/interactions.jsonl", "models/candidate.gguf", "models/candidate/training.json")]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in outs}
    run(["dvc", "remote", "add", "--local", "-f", "scratch", str(tmp_path / "remote")], project)
    try:
        run(["dvc", "push", "-r", "scratch"], project)
        import shutil
        shutil.rmtree(project / ".dvc/cache")
        for p in outs: p.unlink()
        run(["dvc", "pull", "-r", "scratch"], project)
        assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in outs} == before
    finally: run(["dvc", "remote", "remove", "--local", "scratch"], project)


def test_a_failing_gate_registers_but_does_not_promote(project):
    before = json.loads((project / "models/current.json").read_text())
    original = (project / "params.yaml").read_text()
    try:
        # a new candidate (another seed) that cannot pass: the random model scores zero
        set_params(project, {"train": {"seed": 8}, "evaluate": {"gate": {"min_format_valid_rate": 1.0, "min_tool_call_accuracy": 1.0}}})
        run(["dvc", "repro"], project)
        ev = json.loads((project / "reports/evaluate.json").read_text())
        assert ev["promoted"] is False and any("tool-call accuracy" in r for r in ev["reasons"])
        assert json.loads((project / "models/current.json").read_text()) == before, "a failing gate never moves current.json"
        newest = max((p for p in (project / "models/registry").iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
        manifest = json.loads((newest / "manifest.json").read_text())
        assert manifest["promoted"] is False and manifest["sha256"] == ev["candidate_sha256"]
    finally: (project / "params.yaml").write_text(original)


def test_a_broken_toolset_stops_prepare_naming_it(project):
    original = (project / "params.yaml").read_text()
    (project / "toolsets/broken.py").write_text("def lookup(x):\n    return x\n")
    try:
        set_params(project, {"tools": {"toolsets": ["builtin", "toolsets/broken.py"]}})
        res = run(["dvc", "repro"], project, check=False)
        assert res.returncode != 0 and "toolsets/broken.py: lookup: Cannot generate JSON schema for lookup because it has no docstring" in res.stdout + res.stderr
    finally:
        (project / "params.yaml").write_text(original); (project / "toolsets/broken.py").unlink()


def test_bad_params_value_stops_with_a_clear_message(project):
    original = (project / "params.yaml").read_text()
    set_params(project, {"train": {"lr": -1}})
    try:
        res = run(["dvc", "repro"], project, check=False)
        assert res.returncode != 0
        assert "train.lr: must be > 0" in res.stdout + res.stderr
    finally:
        (project / "params.yaml").write_text(original)

