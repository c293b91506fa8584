"""The OpenAI-compatible API as clients meet it: the official `openai` client and a `smolagents` agent against `python app.py`,
serving the app tests' model (tests/conftest.py), which was trained on the built-in tools."""
import json, time, urllib.request
import pytest
from conftest import AppProcess

openai = pytest.importorskip("openai")

from agent_loop.tools import DEFAULT_TOOLS, run_tool, tool_schemas  # noqa: E402

TOOLS = [{"type": "function", "function": t} for t in tool_schemas(DEFAULT_TOOLS)]  # the tools the model was trained on
ASK = [{"role": "user", "content": "What is 37 times 12?"}]


@pytest.fixture(scope="module")
def app(trained_project):
    proc = AppProcess(trained_project).wait()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(app):
    return openai.OpenAI(base_url=app.url + "v1", api_key="unused", max_retries=0, timeout=300)  # a reply on 2 busy cores


def model_id(client) -> str:
    return client.models.list().data[0].id


def logged(project) -> list[dict]:
    return [json.loads(line) for p in sorted((project / "data/interactions").glob("*.jsonl")) for line in p.read_text().splitlines() if line.strip()]


def calculator_result(call) -> str:
    return run_tool({"name": call.function.name, "arguments": json.loads(call.function.arguments)}, DEFAULT_TOOLS)["content"]


def test_models_lists_the_promoted_version(client, trained_project):
    current = json.loads((trained_project / "models/current.json").read_text())
    assert [m.id for m in client.models.list().data] == [f"agent-loop:{current['version']}"]


def test_a_tool_loop_through_the_openai_client(client, trained_project):
    first = client.chat.completions.create(model=model_id(client), messages=ASK, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls, choice
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "calculator" and calculator_result(call) == "444"
    # the client runs its tool and sends the result back under the call's id
    second = client.chat.completions.create(model=model_id(client), tools=TOOLS, messages=ASK + [
        choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "444"}])
    assert second.choices[0].finish_reason == "stop" and "444" in second.choices[0].message.content
    assert not second.choices[0].message.tool_calls and second.usage.completion_tokens > 0 and second.usage.prompt_tokens > 0
    turns = [r for r in logged(trained_project) if r.get("source") == "v1"]
    assert len(turns) >= 2 and turns[-1]["tools"] == tool_schemas(DEFAULT_TOOLS) and turns[-1]["messages"][-1]["content"] == second.choices[0].message.content


def test_tool_choice_maps_onto_the_call_decision(client):
    none = client.chat.completions.create(model=model_id(client), messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=48)
    assert none.choices[0].finish_reason in ("stop", "length") and not none.choices[0].message.tool_calls and none.choices[0].message.content
    hello = [{"role": "user", "content": "Hello there!"}]
    required = client.chat.completions.create(model=model_id(client), messages=hello, tools=TOOLS, tool_choice="required", max_tokens=96)
    assert required.choices[0].finish_reason == "tool_calls" and required.choices[0].message.tool_calls
    named = client.chat.completions.create(model=model_id(client), messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "count_letter"}})
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["count_letter"]
    no_tools = client.chat.completions.create(model=model_id(client), messages=hello, max_tokens=48)
    assert no_tools.choices[0].message.content and "<tool_call>" not in no_tools.choices[0].message.content


def test_streaming_sends_content_and_tool_call_deltas(client):
    chunks = list(client.chat.completions.create(model=model_id(client), messages=ASK, tools=TOOLS, stream=True))
    calls = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "calculator" and calculator_result(calls[0]) == "444"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    answer = list(client.chat.completions.create(model=model_id(client), messages=ASK, tools=TOOLS, tool_choice="none", stream=True, max_tokens=48))
    text = "".join(ch.choices[0].delta.content or "" for ch in answer)
    assert text.strip() and answer[-1].choices[0].finish_reason in ("stop", "length") and not any(ch.choices[0].delta.tool_calls for ch in answer)


def test_bad_requests_get_openai_errors_with_their_status(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id(client), messages=ASK, tools=[{"type": "function", "function": {"name": "bad name"}}])
    assert e.value.status_code == 400 and "tools[0].function.name" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_id(client), messages=[{"role": "robot", "content": "hi"}])
    long = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 700} for i in range(9)]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id(client), messages=long)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:  # refused before the stream opens
        client.chat.completions.create(model=model_id(client), messages=ASK, tools=TOOLS, tool_choice="always", stream=True)
    assert e.value.status_code == 400


def test_a_login_is_needed_when_the_app_asks_for_one(trained_project):
    app = AppProcess(trained_project, env={"AGENT_LOOP_APP_AUTH": "ana:pw1"})
    try:
        deadline = time.time() + 120
        while True:  # the app's / asks for a login too, so wait on /health
            try: urllib.request.urlopen(app.url + "health", timeout=2); break
            except OSError:
                assert app.proc.poll() is None and time.time() < deadline, app.output()
                time.sleep(0.5)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=app.url + "v1", api_key="ana:wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=app.url + "v1", api_key="ana:pw1", max_retries=0, timeout=120)
        reply = ok.chat.completions.create(model=model_id(ok), messages=ASK, tools=TOOLS)
        assert reply.choices[0].message.tool_calls
        assert [r.get("user") for r in logged(trained_project) if r.get("source") == "v1"][-1] == "ana"
    finally: app.stop()


def test_a_smolagents_agent_runs_its_tool_loop_against_the_api(app):
    smolagents = pytest.importorskip("smolagents")
    ran = []

    class Calculator(smolagents.Tool):
        name, description = "calculator", tool_schemas(DEFAULT_TOOLS)[0]["description"]
        inputs = {"expression": {"type": "string", "description": "The arithmetic expression, e.g. (3 + 4) * 12"}}
        output_type = "string"
        def forward(self, expression: str) -> str:
            result = run_tool({"name": "calculator", "arguments": {"expression": expression}}, DEFAULT_TOOLS)["content"]
            ran.append((expression, result)); return result

    model = smolagents.OpenAIServerModel(model_id="agent-loop", api_base=app.url + "v1", api_key="unused")
    import importlib.resources, yaml
    templates = yaml.safe_load(importlib.resources.files("smolagents.prompts").joinpath("toolcalling_agent.yaml").read_text())
    templates["system_prompt"] = "You are a helpful assistant with tools."  # smolagents' own is about 1,000 tokens of a 2,048-token context
    agent = smolagents.ToolCallingAgent(tools=[Calculator()], model=model, prompt_templates=templates, max_steps=2, verbosity_level=0)
    answer = agent.run("What is 37 times 12?")
    assert ran and ran[0][1] == "444", ran  # smolagents ran the tool the model called, with the model's arguments
    assert answer is not None
