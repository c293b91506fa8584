"""`python app.py` as users run it, driven through its Gradio API with gradio_client, with a model that really learned the format."""
import json, shutil
from pathlib import Path
import pytest
from conftest import AppProcess, make_project, run


@pytest.fixture(scope="module")
def app(trained_project):
    a = AppProcess(trained_project).wait()
    yield a
    a.stop()


def log_records(project: Path) -> list[dict]:
    "Every record the project's app processes logged (one file per day and process), in the order they were written."
    from agent_loop.interactions import read_log
    return read_log(project / "data/interactions")[0]


def test_calculator_question_gets_tool_call_result_and_answer(app, trained_project):
    from gradio_client import Client
    client = Client(app.url, verbose=False)
    res = client.predict("What is 37 times 12?", "", api_name="/chat")
    conv = res["conversation"]
    calls = [c for m in conv if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    assert calls and calls[0]["name"] == "calculator", conv
    tool = next(m for m in conv if m["role"] == "tool")
    assert tool["content"] == "444", conv
    assert conv[-1]["role"] == "assistant" and "error" not in conv[-1] and conv[-1]["content"], conv
    fb = client.predict(res["turn_id"], "up", "", api_name="/feedback")
    assert fb["turn_id"] == res["turn_id"]
    records = log_records(trained_project)
    turn = next(r for r in records if r.get("id") == res["turn_id"])
    assert turn["model"]["sha256"] == json.loads((trained_project / "models/current.json").read_text())["sha256"]
    assert [m["role"] for m in turn["messages"]] == [m["role"] for m in conv]
    assert any(r["type"] == "feedback" and r["turn_id"] == res["turn_id"] and r["rating"] == "up" for r in records)


def test_oversized_message_is_a_visible_logged_turn(app, trained_project):
    from gradio_client import Client
    before = len(log_records(trained_project))
    res = Client(app.url, verbose=False).predict("x" * 5000, "", api_name="/chat")
    assert res["new_messages"][-1]["error"] == "oversized" and "limit" in res["answer"]
    after = log_records(trained_project)
    assert len(after) == before + 1 and after[-1]["id"] == res["turn_id"]


def test_bad_feedback_is_refused_clearly(app):
    from gradio_client import Client
    with pytest.raises(Exception, match="rating must be"):
        Client(app.url, verbose=False).predict("some-turn", "meh", "", api_name="/feedback")


def test_a_correction_is_checked_against_the_served_tools_and_logged(app, trained_project):
    from gradio_client import Client
    client = Client(app.url, verbose=False)
    turn_id = next(r for r in reversed(log_records(trained_project)) if r["type"] == "turn")["id"]
    before = len(log_records(trained_project))
    for calls, answer, message in [('[{"name": "calculator", "arguments": {"formula": "37*12"}}]', "", "do not match its schema"),
                                   ('[{"name": "web_search", "arguments": {}}]', "", "unknown tool 'web_search'"),
                                   ("not json", "", "not valid JSON"), ("", "", "needs the right answer")]:
        with pytest.raises(Exception, match=message): client.predict(turn_id, calls, answer, "", api_name="/correct")
    assert len(log_records(trained_project)) == before, "a refused correction writes nothing"
    fix = client.predict(turn_id, '[{"name": "calculator", "arguments": {"expression": "37*12"}}]', "444.", "", api_name="/correct")
    assert fix["turn_id"] == turn_id and log_records(trained_project)[-1]["id"] == fix["correction_id"]


def test_malformed_conversation_from_an_api_client_is_refused_and_nothing_is_logged(app, trained_project):
    from gradio_client import Client
    before = len(log_records(trained_project))
    with pytest.raises(Exception, match="content must be text"):
        Client(app.url, verbose=False).predict("hi", '[{"role": "user", "content": 5}]', api_name="/chat")
    assert len(log_records(trained_project)) == before


def test_missing_model_exits_with_a_clear_message(tmp_path):
    project = make_project(tmp_path / "p")
    a = AppProcess(project)
    assert a.proc.wait(120) != 0
    assert "no promoted model" in a.output()


@pytest.mark.parametrize("damage, message", [(b"GGUF" + b"\0" * 100, "was changed or is corrupt"), (b"<html>502</html>", "not a GGUF file")])
def test_corrupt_gguf_exits_with_a_clear_message_and_keeps_logs(trained_project, tmp_path, damage, message):
    from agent_loop.interactions import InteractionLog
    project = tmp_path / "corrupt"
    shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("*.gguf"))
    InteractionLog(project / "data/interactions").log_turn([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}], {})
    current = json.loads((project / "models/current.json").read_text())
    (project / current["gguf"]).write_bytes(damage)
    logs_before = sorted(p.read_bytes() for p in (project / "data/interactions").glob("*.jsonl"))
    a = AppProcess(project)
    assert a.proc.wait(120) != 0
    assert message in a.output()
    assert sorted(p.read_bytes() for p in (project / "data/interactions").glob("*.jsonl")) == logs_before


def test_bad_setting_exits_with_a_clear_message(tmp_path):
    project = make_project(tmp_path / "p")
    a = AppProcess(project, env={"AGENT_LOOP_SERVING_BACKEND": "vllm"})
    assert a.proc.wait(120) != 0
    assert "serving.backend: must be one of llama_cpp, ollama" in a.output()


def test_health_ready_metrics_and_hot_reload(app, trained_project):
    """/health, /ready and /metrics answer; a newly promoted model is served from the next turn without a restart, a bad promotion is
    refused while the old model goes on answering, and a rollback is served like any promotion."""
    import time, urllib.request
    from gradio_client import Client
    from agent_loop.registry import promote, sha256_file, write_json_atomic
    get = lambda path: urllib.request.urlopen(app.url + path, timeout=10).read().decode()
    current = trained_project / "models/current.json"
    first = json.loads(current.read_text())
    assert json.loads(get("health")) == {"status": "ok"}
    assert json.loads(get("ready"))["sha256"] == first["sha256"]
    # a second version: the same weights with bytes appended (a GGUF llama.cpp loads, with a sha256 of its own), registered with its manifest
    folder = trained_project / "models/registry/v-reload-test"; folder.mkdir()
    gguf = folder / "model.gguf"; gguf.write_bytes((trained_project / first["gguf"]).read_bytes() + b"\0" * 32)
    manifest = json.loads((trained_project / first["gguf"]).with_name("manifest.json").read_text())
    manifest |= {"version": folder.name, "gguf": str(gguf.relative_to(trained_project)), "sha256": sha256_file(gguf)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    def ready_after(change, done):
        change(); deadline = time.time() + 60
        while time.time() < deadline:
            if done(state := json.loads(get("ready"))): return state
            time.sleep(0.5)
        raise AssertionError(f"the app did not pick up the change: {state}")
    refused = ready_after(lambda: write_json_atomic(current, {k: manifest[k] for k in ("version", "gguf")} | {"sha256": "0" * 64}), lambda s: s["reload_error"])
    assert refused["version"] == first["version"] and "ModelFileError" in refused["reload_error"]
    client = Client(app.url, verbose=False)
    assert client.predict("What is 58 plus 23?", "", api_name="/chat")["model"]["version"] == first["version"]  # the old model still answers
    ready_after(lambda: promote(current, manifest, trained_project), lambda s: s["version"] == folder.name)
    assert client.predict("What is 58 plus 23?", "", api_name="/chat")["model"]["version"] == folder.name
    ready_after(lambda: promote(current, first, trained_project), lambda s: s["version"] == first["version"])  # rollback
    metrics = get("metrics")
    for line in ('agent_loop_model_reloads_total{result="loaded"} 2.0', 'agent_loop_model_reloads_total{result="refused"} 1.0',
                 'agent_loop_http_requests_total{route="/health",status="200"} 1.0'):
        assert line in metrics, line
    print(f"\nhot reload: refused a bad promotion ({refused['reload_error'][:90]}…), served {folder.name}, rolled back to {first['version']}")


def test_chat_stream_sends_the_turn_as_it_happens(app, trained_project):
    "/chat_stream yields the tool call, its result and the answer's text before the whole turn, which is what /chat returns, logged once."
    from gradio_client import Client
    job = Client(app.url, verbose=False).submit("What is 58 plus 23?", "", api_name="/chat_stream")
    events = list(job)
    final = events[-1]
    assert [e["type"] for e in events[:2]] == ["message", "message"] and events[0]["message"]["tool_calls"][0]["name"] == "calculator", events
    assert events[1]["message"]["content"] == "81" and final["type"] == "turn"
    assert "".join(e["text"] for e in events if e["type"] == "text").strip() == final["answer"].strip() and "81" in final["answer"]
    assert final["stats"]["first_token_seconds"] < final["stats"]["seconds"]
    assert sum(r.get("id") == final["turn_id"] for r in log_records(trained_project)) == 1


def test_the_manifest_call_threshold_decides_whether_the_agent_calls(trained_project, tmp_path):
    "The decision to call follows the threshold the promoted model's manifest records: the app's own loader and agent, on the real model."
    from agent_loop.app import Agent, load_backend
    from agent_loop.config import load_settings
    from agent_loop.interactions import InteractionLog
    from agent_loop.registry import read_current
    project = tmp_path / "project"
    shutil.copytree(trained_project, project)
    settings = load_settings(project)
    manifest_path = (project / read_current(settings.path("current"), project)["gguf"]).with_name("manifest.json")
    turns = {}
    for threshold in (0.0, 1.01):  # every reply a call; no reply a call (P(call) never reaches 1.01)
        manifest_path.write_text(json.dumps(json.loads(manifest_path.read_text()) | {"call_threshold": threshold}))
        backend, info = load_backend(settings)
        try:
            assert info["call_threshold"] == threshold
            turns[threshold] = Agent(backend, info, InteractionLog(tmp_path / f"log-{threshold}")).turn("What is 58 times 11?")["new_messages"]
        finally: backend.close()
    first = next(m for m in turns[0.0] if m["role"] == "assistant")  # at 0.0 every step calls, until the agent's step limit
    assert first.get("tool_calls") and first["tool_calls"][0]["name"] == "calculator", turns[0.0]
    assert [m["role"] for m in turns[1.01]] == ["user", "assistant"] and not turns[1.01][1].get("tool_calls"), turns[1.01]
    backend, info = load_backend(load_settings(project, environ={"AGENT_LOOP_SERVING_CALL_THRESHOLD": "0"}))  # the manifest still says 1.01
    backend.close()
    assert info["call_threshold"] == 0.0, "[serving] call_threshold, when set, overrides the manifest's"
