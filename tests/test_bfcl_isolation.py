"""Invariant 4: benchmarks are for evaluation only. The training data that `prepare` writes at the project's params with the
larger preset's data section (more of the generated corpus), and the conversations the foundation trains on, hold no BFCL
question and no BFCL function (of the live suites, no question and no description), none of the hand-written requests for the
built-in tools, and none of the corpus functions held out (for the test split, or for validation, where the
call threshold meets tools never trained on)."""
import json
from pathlib import Path
import pytest
import yaml
from conftest import ROOT


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from agent_loop.config import load_params
    from agent_loop.data import load_split, prepare
    out = tmp_path_factory.mktemp("processed")
    params = load_params(ROOT / "params.yaml")
    for key, value in yaml.safe_load((ROOT / "presets/large.yaml").read_text())["data"].items(): setattr(params.data, key, value)
    assert params.data.corpus_examples > 0
    stats = prepare(params, ROOT, tmp_path_factory.mktemp("no-logs"), out, tmp_path_factory.mktemp("snapshot"), ROOT / "models/foundation")
    return stats, {s: load_split(out / f"{s}.jsonl") for s in ("train", "val", "test")}


def _words(text: str) -> str: return " ".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())


@pytest.fixture(scope="module")
def foundation_rows():
    from agent_loop.config import load_params
    from agent_loop.foundation import foundation_rows
    return foundation_rows(load_params(ROOT / "params.yaml"), ROOT)  # what it trains on, what it only measures its loss on


def no_bfcl_in(trained: list[dict]):
    from agent_loop.bfcl import BFCL_SUITES, LIVE_SUITES, load_suite
    prompts = {_words(m["content"]) for r in trained for m in r["messages"] if m["role"] == "user"}
    functions = {t["name"] for r in trained for t in r["tools"]}
    descriptions = {_words(t["description"]) for r in trained for t in r["tools"]}
    cache = Path("~/.cache/agent-loop").expanduser()
    items = [item for suite in BFCL_SUITES for item in load_suite(suite, cache)]
    counts = {suite: sum(item["suite"] == suite for item in items) for suite in BFCL_SUITES}
    assert counts == {"simple_python": 400, "multiple": 200, "parallel": 200, "irrelevance": 240}, "every item of every suite is checked"
    assert len({item["id"] for item in items}) == len(items) and all(item["tools"] and item["messages"] for item in items)
    leaked = [item["id"] for item in items if any(_words(m["content"]) in prompts for m in item["messages"] if m["role"] == "user")]
    assert not leaked, f"BFCL questions in the training data: {leaked[:5]}"
    clashes = sorted({t["name"] for item in items for t in item["tools"] if t["name"] in functions or _words(t["description"]) in descriptions})
    assert not clashes, f"BFCL functions in the training data: {clashes[:10]}"
    # the live suites: users' requests to real APIs, whose common names (get_weather...) a generated family may share; their questions and
    # descriptions may not
    live = [item for suite in LIVE_SUITES for item in load_suite(suite, cache)]
    assert len(live) == 258 + 1053 + 884, "every live item is checked"
    # users greet hosted models as the generators' small talk does ("hi there", "How are you?", "Tell me a joke"): a question of four words
    # or fewer is shared by chance, not copied; any longer live question in the training data is a leak
    leaked = [item["id"] for item in live for m in item["messages"] if m["role"] == "user" and len(_words(m["content"]).split()) > 4 and _words(m["content"]) in prompts]
    assert not leaked, f"live BFCL questions in the training data: {leaked[:5]}"
    copied = sorted({t["name"] for item in live for t in item["tools"] if _words(t["description"]) and _words(t["description"]) in descriptions})
    assert not copied, f"live BFCL descriptions in the training data: {copied[:10]}"
    from agent_loop.evaluate import builtin_requests
    requests = builtin_requests()
    assert len(requests) >= 100
    typed = [r["request"] for r in requests if _words(r["request"]) in prompts]
    assert not typed, f"hand-written evaluation requests in the training data: {typed[:5]}"


def test_no_bfcl_question_or_function_in_training(prepared):
    _, splits = prepared
    no_bfcl_in(splits["train"] + splits["val"])


def test_no_bfcl_question_or_function_in_the_foundation(foundation_rows):
    no_bfcl_in(foundation_rows[0] + foundation_rows[1])


def test_held_out_families_never_reach_training(prepared, foundation_rows):
    from agent_loop.corpus import FAMILIES
    stats, splits = prepared
    held, for_validation = set(stats["heldout_families"]), set(stats["validation_families"])
    assert held and for_validation and not held & for_validation and {r["suite"] for r in splits["test"]} >= {"heldout"}
    held_descriptions = {_words(FAMILIES[f].description) for f in held}
    validation_descriptions = {_words(FAMILIES[f].description) for f in for_validation}
    for r in splits["train"] + splits["val"]:
        assert not held_descriptions & {_words(t["description"]) for t in r["tools"]}, r["id"]
    for r in splits["train"]:
        assert not validation_descriptions & {_words(t["description"]) for t in r["tools"]}, r["id"]
    trained, measured = foundation_rows
    for r in trained + measured:
        assert not (held_descriptions | validation_descriptions) & {_words(t["description"]) for t in r["tools"]}, r["id"]
    offered_in_validation = {_words(t["description"]) for r in splits["val"] if r["suite"] == "heldout" for t in r["tools"]}
    assert offered_in_validation and offered_in_validation <= validation_descriptions, "the threshold's held-out cases offer only tools never trained on"
    # the committed foundation's own list of what it trained on: once the generators change, `foundation_rows` says what `make foundation`
    # would train on next, and `prepare` keeps out of test what the foundation in models/ did train on
    from agent_loop.data import TRAINED_PROMPTS, prompt_key
    trained_keys = set((ROOT / "models/foundation" / TRAINED_PROMPTS).read_text().split())
    assert len(trained_keys) > 1000 and not {prompt_key(r["prompt"]) for r in splits["test"]} & trained_keys, "no test conversation trained the foundation"
    test_descriptions = {_words(t["description"]) for r in splits["test"] if r["suite"] == "heldout" for t in r["tools"]}
    assert test_descriptions and test_descriptions <= held_descriptions, "held-out test cases offer only held-out functions"
