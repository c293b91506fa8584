"""How a GGUF reads BFCL once the decision is taken away, and the decision trade-off its P(call) offers there (a reading; nothing is fitted on BFCL).

    .venv/bin/python tests/benchmarks/call_decision.py [path/to/model.gguf or adapter folder] [items per suite]   (default: models/candidate.gguf, 50)

An adapter folder (models/foundation, models/candidate) is first merged into the base of params.yaml and quantised as export
would ship it (cached by the adapter's sha256).

Scores BFCL's suites as `evaluate` does (schema-held calls through llama.cpp, completions cached by GGUF sha256), three ways:
the call threshold fitted on the validation split (what `evaluate` reports), greedy (no threshold), and every reply forced to be a call
(threshold 0: how well the model fills arguments when it does call). Then prints the BFCL trade-off between calling when a tool is
needed and abstaining when none fits, for a range of thresholds, and the AUC of P(call) there."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent_loop.config import load_params, load_settings
from agent_loop.data import load_split
from agent_loop.evaluate import bfcl_cases, decision_curve, eval_cases, evaluate_model, fit_call_threshold, gguf_cache, roc_auc
from agent_loop.models import build_gguf
from agent_loop.models import resolve_base
from agent_loop.train import adapter_sha256
from agent_loop.format import render
from agent_loop.registry import sha256_file

def scored_gguf(path: Path, params, settings) -> Path:
    "`path` when it is a GGUF; an adapter folder merged into params' base and quantised as export ships it (built once, cached by the adapter's sha256)."
    if not Path(path).is_dir(): return Path(path)
    cache = settings.path("cache")
    out = cache / "gguf" / f"adapter-{adapter_sha256(path)[:16]}-{params.export.quantization}.gguf"
    if not out.exists(): build_gguf(resolve_base(params.model.base, cache), path, out, params.export.quantization, settings.serving.threads)
    print(f"scoring {out} ({path})")
    return out

def main(gguf: Path, per_suite: int = 50):
    params, settings = load_params(ROOT / "params.yaml"), load_settings(ROOT)
    cache = settings.path("cache")
    gguf = scored_gguf(gguf, params, settings)
    store = gguf_cache(gguf, sha256_file(gguf), cache, settings.serving.threads, settings.serving.context_length)
    val = [c for c in eval_cases(load_split(settings.path("processed") / "val.jsonl")) if c["step"] == "first"]
    fitted, how = fit_call_threshold([store.call_probability(render(c["prompt"], c["tools"]), c["tools"]) for c in val], [bool(c["expected"]) for c in val])
    cases = bfcl_cases(params.evaluate.bfcl_suites, per_suite, cache, params.data.seed)
    for name, threshold in (("fitted", fitted), ("greedy", None), ("forced call", 0.0)):
        metrics, rows = evaluate_model(store, cases, params.evaluate.max_new_tokens, True, name, threshold)
        print(f"{name:>12} (threshold {threshold}): " + ", ".join(f"{k.split('/')[1]} {v:.2f} {metrics['intervals'][k]}" for k, v in metrics["categories"].items()))
    print(f"fitted threshold: {how}")
    ps, ys = [r["call_probability"] for r in rows], [r["category"] != "irrelevance" for r in rows]
    print(f"AUC of P(call), BFCL calls vs irrelevance: {roc_auc(ps, ys)}")
    curve = decision_curve(ps, ys)
    for r in curve[::max(1, len(curve) // 20)]: print(json.dumps(r))
    store.close()

if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models/candidate.gguf", int(sys.argv[2]) if len(sys.argv) > 2 else 50)
