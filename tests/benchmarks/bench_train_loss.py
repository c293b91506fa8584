"""Training throughput of agent_loop's loss (LM head only at supervised positions) against transformers' own
full-logits loss, on the same LoRA model and batches.

    .venv/bin/python tests/benchmarks/bench_train_loss.py [steps]

Prints tokens/s of each (forward + backward + optimizer step) and the ratio."""
import sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent_loop.config import load_params, load_settings
from agent_loop.data import generate_seed_tasks
from agent_loop.models import resolve_base
from agent_loop.tools import tool_schemas
from agent_loop.train import batches, collate, lora_model, supervised_loss, tokenize_example

def main(steps: int = 6):
    settings, params = load_settings(ROOT), load_params(ROOT / "params.yaml")
    model, tok = lora_model(resolve_base(params.model.base, settings.path("cache")), params.train)
    rows = generate_seed_tasks(steps * params.train.batch_size, seed=0)
    ex = [e for e in (tokenize_example(r["messages"], tok, tool_schemas(), params.model.max_length) for r in rows) if e]
    groups = batches(ex, params.train.batch_size, seed=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    def ours(b): return supervised_loss(model, b["input_ids"], b["attention_mask"], b["labels"])[0]
    def full(b): return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
    result = {}
    for name, fn in [("agent_loop supervised head", ours), ("transformers full logits", full)]:
        fn(collate(groups[0], tok.pad_token_id)).backward(); opt.zero_grad()  # warm-up
        tokens, t0 = 0, time.time()
        for g in groups:
            b = collate(g, tok.pad_token_id); loss = fn(b); loss.backward(); opt.step(); opt.zero_grad()
            tokens += int(b["attention_mask"].sum())
        result[name] = tokens / (time.time() - t0)
        print(f"{name:>28}: {result[name]:6.1f} tokens/s over {len(groups)} steps")
    a, b = result.values()
    print(f"{'ratio':>28}: {a / b:.2f}x")

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
