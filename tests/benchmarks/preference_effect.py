"""Does the preference stage help? KTO (or DPO) from logged feedback, measured on held-out logged turns and on the evaluation suites.

    .venv/bin/python tests/benchmarks/preference_effect.py [--method kto|dpo] [--requests 160] [--steps 20] [--lr 5e-5]

Run after `dvc repro` (it starts from the SFT adapter in models/candidate and its GGUF models/candidate.gguf):

1. Fresh requests for the served tools (seed tasks of another seed; none whose request is in the val or test split) are answered by the
   SFT model through the app's own `Agent` and logged with `InteractionLog`, as a user would chat. Each turn's first reply is judged
   against the task's reference with the evaluation's own checker: right -> 👍; wrong -> 👎 and a correction with the reference reply.
2. Half the requests are held out. The other half's log goes through `load_interactions` and `preference_set` (the prepare stage's code)
   and `train_preference` trains the SFT adapter further; the result is merged and quantised like the shipped model.
3. SFT and preference model are scored on the held-out requests (the rate of the rejected behaviour: a wrong first reply) and on the
   evaluation suites of the evaluate stage (test split and BFCL sample). Figures are printed and written to reports/preference_effect.json.
"""
import argparse, json, random, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent_loop.app import Agent
from agent_loop.bfcl import check_calls
from agent_loop.config import load_params, load_settings
from agent_loop.data import generate_seed_tasks, load_interactions, load_split, normalize_prompt, preference_set
from agent_loop.evaluate import eval_cases, score_gguf, stage_cases
from agent_loop.models import build_gguf
from agent_loop.interactions import InteractionLog
from agent_loop.models import resolve_base
from agent_loop.registry import sha256_file
from agent_loop.serving import LlamaCppBackend
from agent_loop.tools import DEFAULT_TOOLS, tool_schemas
from agent_loop.train import train_preference

def log_feedback(tasks: list[dict], gguf: Path, folder: Path, settings) -> dict:
    "Answer each task's request with the SFT model through the app's Agent, log it, and rate or correct its first reply; counts."
    backend = LlamaCppBackend(gguf, sha256_file(gguf), settings.serving.threads, settings.serving.context_length)
    agent, schemas, counts = Agent(backend, {"version": "sft"}, InteractionLog(folder)), tool_schemas(), {"up": 0, "corrected": 0}
    for i, task in enumerate(tasks):
        case = eval_cases([task | {"tools": schemas}])[0]
        out = agent.turn(case["prompt"][-1]["content"], session_id=f"user-{i}")
        first = next(m for m in out["new_messages"] if m["role"] == "assistant")
        ok = not first.get("error") and check_calls({"category": case["category"], "tools": schemas, "expected": case["expected"]}, first.get("tool_calls") or [])[0]
        if ok: agent.log.log_feedback(out["turn_id"], "up"); counts["up"] += 1
        else:
            reference = next(m for m in task["messages"] if m["role"] == "assistant")
            agent.log.log_feedback(out["turn_id"], "down")
            agent.correct(out["turn_id"], reference.get("tool_calls") or [], None if reference.get("tool_calls") else reference["content"])
            counts["corrected"] += 1
    backend.close()
    return counts

def first_reply_error_rate(rows: list[dict]) -> float:
    first = [r for r in rows if r["step"] == "first"]
    return round(1 - sum(r["correct"] for r in first) / len(first), 4)

def main(method: str, n_requests: int, steps: int, lr: float | None = None, seed: int = 2026):
    params, settings = load_params(ROOT / "params.yaml"), load_settings(ROOT)
    models, cache, processed = settings.path("models"), settings.path("cache"), settings.path("processed")
    sft_adapter, sft_gguf = models / "candidate", models / "candidate.gguf"
    if not (sft_adapter / "adapter_model.safetensors").exists() or not sft_gguf.exists(): sys.exit("run `dvc repro` first: no SFT adapter and GGUF in models/")
    evaluation = load_split(processed / "val.jsonl") + load_split(processed / "test.jsonl")
    seen = {normalize_prompt(r["prompt"]) for r in evaluation}
    tasks = [t for t in generate_seed_tasks(n_requests * 2, seed) if normalize_prompt(t["messages"][0]["content"]) not in seen][:n_requests]
    random.Random(seed).shuffle(tasks)
    feedback, held_out = tasks[: len(tasks) // 2], tasks[len(tasks) // 2:]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        counts = log_feedback(feedback, sft_gguf, scratch / "interactions", settings)
        print(f"feedback logged on {len(feedback)} requests in {time.time() - t0:.0f}s: {counts}")
        _, judged, report = load_interactions(scratch / "interactions", DEFAULT_TOOLS)
        judged = [j | {"tools": tool_schemas()} for j in judged]
        blocked = seen | {normalize_prompt(t["messages"][0]["content"]) for t in held_out}
        (scratch / "p").mkdir(); preference_set(judged, blocked).to_json(scratch / "p/preference.jsonl", lines=True, force_ascii=False)
        rows = load_split(scratch / "p/preference.jsonl")
        params.train.preference, params.train.preference_steps = method, steps
        if lr: params.train.preference_lr = lr
        base = resolve_base(params.model.base, cache)
        shutil.copytree(sft_adapter, scratch / "adapter")
        trained = train_preference(base, scratch / "adapter", rows, params, scratch / "adapter")
        print(f"{method}: {trained['metrics']}")
        pref_gguf = build_gguf(base, scratch / "adapter", scratch / "preference.gguf", params.export.quantization, settings.serving.threads)
        suites = stage_cases(params, settings)
        held = eval_cases([t | {"tools": tool_schemas(), "id": f"held-{i}", "kind": "feedback"} for i, t in enumerate(held_out)])
        results = {}
        for who, gguf in (("sft", sft_gguf), (method, pref_gguf)):
            sha = sha256_file(gguf)
            held_metrics, held_rows = score_gguf(gguf, sha, held, params.evaluate.max_new_tokens, cache, settings.serving.threads, desc=f"{who} held-out")
            suite_metrics, _ = score_gguf(gguf, sha, suites, params.evaluate.max_new_tokens, cache, settings.serving.threads, desc=f"{who} suites")
            results[who] = {"held_out_wrong_first_reply": first_reply_error_rate(held_rows), "held_out_answer_accuracy": held_metrics["answer_accuracy"],
                            **{k: suite_metrics[k] for k in ("tool_call_accuracy", "no_call_accuracy", "answer_accuracy", "format_valid_rate")},
                            **{c: v for c, v in suite_metrics["categories"].items() if c.startswith("bfcl/")}}
    out = {"method": method, "requests": {"feedback": len(feedback), "held_out": len(held_out)}, "feedback": counts, "judged": report["judged_as"],
           "preference_rows": len(rows), "training": trained["metrics"], "results": results, "seconds": round(time.time() - t0)}
    (ROOT / "reports").mkdir(exist_ok=True); (ROOT / "reports/preference_effect.json").write_text(json.dumps(out, indent=2) + "\n")
    keys = list(results["sft"])
    print(f"\n{'':>28} {'sft':>8} {method:>8}")
    for k in keys: print(f"{k:>28} {results['sft'][k]!s:>8} {results[method][k]!s:>8}")
    print(f"\nheld-out wrong first replies, {method}/sft: {results[method]['held_out_wrong_first_reply']} / {results['sft']['held_out_wrong_first_reply']}")

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=("kto", "dpo"), default="kto")
    ap.add_argument("--requests", type=int, default=160)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, help="train.preference_lr (default: params.yaml's)")
    a = ap.parse_args()
    main(a.method, a.requests, a.steps, a.lr)
