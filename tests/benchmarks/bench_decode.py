"""Decode speed of the app's path (agent_loop.serving.LlamaCppBackend, streamed as the app streams) against raw llama-cpp-python on the same GGUF.

    .venv/bin/python tests/benchmarks/bench_decode.py [path/to/model.gguf]   (default: the promoted model)

Both decode the same prompt greedily for the same number of tokens, alternating, several rounds; prints tokens/s and the ratio."""
import json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent_loop.format import render
from agent_loop.registry import sha256_file
from agent_loop.serving import LlamaCppBackend
from agent_loop.tools import tool_schemas

def main(gguf: Path, rounds: int = 5, tokens: int = 64):
    prompt = render([{"role": "user", "content": "Tell me about the history of the calculator in a few sentences."}], tool_schemas())
    ours = LlamaCppBackend(gguf, sha256_file(gguf), context_length=2048)
    from llama_cpp import Llama
    raw = Llama(str(gguf), n_threads=os.cpu_count(), n_ctx=2048, verbose=False)
    ids = raw.tokenize(prompt.encode(), add_bos=True, special=True)
    speeds = {"agent_loop": [], "raw llama-cpp-python": []}
    for _ in range(rounds):
        out = ours.complete(prompt, tokens, on_text=lambda piece: None); speeds["agent_loop"].append(out.tokens / out.seconds)  # streamed, as the app decodes
        t0 = time.time(); r = raw.create_completion(ids, max_tokens=tokens, temperature=0.0)
        speeds["raw llama-cpp-python"].append(r["usage"]["completion_tokens"] / (time.time() - t0))
    med = {k: sorted(v)[len(v) // 2] for k, v in speeds.items()}
    for k, v in med.items(): print(f"{k:>22}: {v:6.1f} tokens/s (median of {rounds}, {tokens} tokens incl. prompt of {len(ids)})")
    print(f"{'ratio ours/raw':>22}: {med['agent_loop'] / med['raw llama-cpp-python']:.3f}")

if __name__ == "__main__":
    if len(sys.argv) > 1: path = Path(sys.argv[1])
    else:
        cur = json.loads((ROOT / "models/current.json").read_text()); path = ROOT / cur["gguf"]
    main(path)
