"""Whether a fitted "another call?" decision could help: P(another call) after each call a GGUF writes on BFCL's development sample
(a reading; nothing is fitted on BFCL).

    .venv/bin/python tests/benchmarks/another_call.py [path/to/model.gguf] [items per suite]   (default: models/candidate.gguf, 50)

After `</tool_call>` the calls grammar allows two tokens: a newline (another call follows) or the end of the turn. Greedy decoding
takes the likelier, a threshold of 0.5 on P(more) = P(newline) / (P(newline) + P(end)). For each call the model writes (its call
branch, from the completion cache), this prints P(more) there and whether the reference has more calls, then the AUC and, for a
range of thresholds, how often the reply would go on where it should and stop where it should."""
import sys
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent_loop.config import load_params, load_settings
from agent_loop.evaluate import bfcl_cases, gguf_cache, roc_auc
from agent_loop.format import CALL_CLOSE, END, render
from agent_loop.registry import sha256_file

def main(gguf: Path, per_suite: int = 50):
    params, settings = load_params(ROOT / "params.yaml"), load_settings(ROOT)
    store = gguf_cache(gguf, sha256_file(gguf), settings.path("cache"), settings.serving.threads, settings.serving.context_length)
    cases = bfcl_cases(["simple_python", "multiple", "parallel"], per_suite, settings.path("cache"), params.data.seed)
    points = []
    for case in cases:
        prompt = render(case["prompt"], case["tools"])
        text = store.complete(prompt, params.evaluate.max_new_tokens, case["tools"], call_threshold=0.0).text  # the call branch
        backend = store.backend or store.open_backend()
        store.backend = backend
        newline, end = (backend.llm.tokenize(t.encode(), add_bos=False, special=True)[0] for t in ("\n", END))
        parts = text.split(CALL_CLOSE)
        for k in range(1, len(parts)):
            logits = backend._prefill(backend.tokenize(prompt + CALL_CLOSE.join(parts[:k]) + CALL_CLOSE)).astype(np.float64)
            more = 1 / (1 + np.exp(logits[end] - logits[newline]))
            points.append((more, k < len(case["expected"])))
            print(f"{case['id']:>20} call {k} of {len(case['expected'])} expected: P(more) {more:.3f}")
    ps, ys = [p for p, _ in points], [y for _, y in points]
    print(f"{len(points)} points, {sum(ys)} where more calls follow; AUC {roc_auc(ps, ys)}")
    for t in (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9):
        go = sum(p >= t and y for p, y in points); stop = sum(p < t and not y for p, y in points)
        print(f"threshold {t}: goes on {go}/{sum(ys)} where it should, stops {stop}/{len(ys) - sum(ys)} where it should")
    store.close()

if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models/candidate.gguf", int(sys.argv[2]) if len(sys.argv) > 2 else 50)
