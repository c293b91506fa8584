"""Decode speed of the app's path (agent_loop.serving.LlamaCppBackend, streamed as the app streams) against raw llama-cpp-python on the same GGUF,
free and inside a tool call held to the tools' schemas (nbs/19_decoding).

    .venv/bin/python tests/benchmarks/bench_decode.py [path/to/model.gguf]   (default: the promoted model)

Three sides decode greedily, alternating, several rounds: raw llama-cpp-python's `create_completion` (the baseline), our loop decoding
freely, and our loop decoding a forced call constrained by an llguidance grammar (tokens the grammar forces are fed in one batch and
counted as generated, as they are in the reply). Prints tokens/s and each side's ratio to the baseline."""
import json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent_loop.format import render
from agent_loop.registry import sha256_file
from agent_loop.serving import LlamaCppBackend
from agent_loop.tools import tool_schemas

def main(gguf: Path, rounds: int = 5, tokens: int = 64):
    tools = tool_schemas()
    prompt = render([{"role": "user", "content": "Tell me about the history of the calculator in a few sentences."}], tools)
    call_prompt = render([{"role": "user", "content": "Convert 12.5 kilometres to miles, 3 feet to centimetres and 2 pounds to grams, and compute 3.75 * (12 + 9) / 4."}], tools)
    # one context per side, so that each finds its own prompt's prefix cached from its previous round, as the raw side does
    ours, ours_call = (LlamaCppBackend(gguf, sha256_file(gguf), context_length=2048) for _ in range(2))
    ours_call.guidance_tokenizer()  # built once per model, at load in the app
    from llama_cpp import Llama
    raw = Llama(str(gguf), n_threads=os.cpu_count(), n_ctx=2048, verbose=False)
    ids = raw.tokenize(prompt.encode(), add_bos=True, special=True)
    speeds = {"raw llama-cpp-python": [], "agent_loop free": [], "agent_loop constrained call": []}
    for _ in range(rounds):
        t0 = time.time(); r = raw.create_completion(ids, max_tokens=tokens, temperature=0.0)
        speeds["raw llama-cpp-python"].append(r["usage"]["completion_tokens"] / (time.time() - t0))
        out = ours.complete(prompt, tokens, on_text=lambda piece: None); speeds["agent_loop free"].append(out.tokens / out.seconds)  # streamed, as the app decodes
        out = ours_call.complete(call_prompt, tokens, on_text=lambda piece: None, tools=tools, call_threshold=0.0)
        speeds["agent_loop constrained call"].append(out.tokens / out.seconds)
    med = {k: sorted(v)[len(v) // 2] for k, v in speeds.items()}
    base = med["raw llama-cpp-python"]
    for k, v in med.items(): print(f"{k:>28}: {v:6.1f} tokens/s  ratio {v / base:.3f}  (median of {rounds}, up to {tokens} tokens)")
    print(f"constrained call, last reply: {out.text[:160]!r}")

if __name__ == "__main__":
    if len(sys.argv) > 1: path = Path(sys.argv[1])
    else:
        cur = json.loads((ROOT / "models/current.json").read_text()); path = ROOT / cur["gguf"]
    main(path)
