"""The order the calls grammar holds arguments to: the order the tool declares them (what the decoder does) against sorted keys (what
training writes: `format_call` sorts them, as Go's encoding/json and so Ollama's template do). Both decode the evaluate stage's GGUF on
the development sample (BFCL, held-out families, the toolset's test split) and the development requests, with the threshold evaluate
fitted, and print the rates side by side. About 30 minutes on 2 cores.

    python tests/benchmarks/argument_order.py
"""
import json, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import agent_loop.decoding as decoding
from agent_loop.config import load_params, load_settings
from agent_loop.evaluate import builtin_requests, evaluate_model, evaluate_requests, gguf_cache, stage_cases
from agent_loop.registry import sha256_file

DECLARED = decoding.arguments_schema


def sorted_keys(spec):
    "`arguments_schema`, with every object's properties in sorted order."
    def walk(s):
        if isinstance(s, list): return [walk(x) for x in s]
        if not isinstance(s, dict): return s
        s = {k: walk(v) for k, v in s.items()}
        if isinstance(s.get("properties"), dict): s["properties"] = dict(sorted(s["properties"].items()))
        return s
    return walk(DECLARED(spec))


def score(order, gguf, sha, cases, requests, threshold, params, settings) -> dict:
    decoding.arguments_schema = order
    decoding._grammar.cache_clear()
    store = gguf_cache(gguf, sha, Path(tempfile.mkdtemp()), settings.serving.threads, settings.serving.context_length)  # nothing cached
    try:
        metrics, _ = evaluate_model(store, cases, params.evaluate.max_new_tokens, True, order.__name__, threshold)
        asked, _ = evaluate_requests(store, requests, None, threshold, params.evaluate.max_new_tokens, True)
    finally: store.close()
    return metrics["categories"] | {"requests": asked["accuracy"]}


def main():
    params, settings = load_params(ROOT / "params.yaml"), load_settings(ROOT)
    report = json.loads((ROOT / "reports/evaluate.json").read_text())
    gguf = ROOT / report["candidate_gguf"]
    sha = sha256_file(gguf)
    if sha != report["candidate_sha256"]: sys.exit(f"{gguf} is not the GGUF reports/evaluate.json scored: run `dvc checkout` or `dvc repro evaluate`")
    cases, requests = stage_cases(params, settings), builtin_requests("development")
    declared, by_key = (score(o, gguf, sha, cases, requests, report["call_threshold"], params, settings) for o in (DECLARED, sorted_keys))
    print(f"GGUF {sha[:8]}, threshold {report['call_threshold']}, development sample")
    print(f"{'category':24s} {'declared':>9s} {'sorted':>9s}")
    for k in declared: print(f"{k:24s} {declared[k]:9.3f} {by_key[k]:9.3f}")


if __name__ == "__main__":
    main()
