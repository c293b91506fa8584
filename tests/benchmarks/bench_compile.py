"""Training steps of agent_loop's loss with the decoder eager against the decoder under `torch.compile` (dynamic shapes, inductor),
on the same LoRA model and default-run batches, each side in its own process with a time limit.

    .venv/bin/python tests/benchmarks/bench_compile.py [--steps 6] [--limit 540]

Prints each step's seconds per side (the compiled side's first step includes compiling) and the mean of the steps after the first.
Needs `dvc repro`'s processed data (data/processed/train.jsonl) and a C compiler for inductor."""
import argparse, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def side(mode: str, steps: int):
    import torch
    from agent_loop.config import load_params, load_settings
    from agent_loop.data import load_split
    from agent_loop.models import resolve_base
    from agent_loop.train import batches, collate, lora_model, supervised_loss, tokenize_example
    settings, params = load_settings(ROOT), load_params(ROOT / "params.yaml")
    torch.manual_seed(0)
    model, tok = lora_model(resolve_base(params.model.base, settings.path("cache")), params.train)
    rows = load_split(settings.path("processed") / "train.jsonl")
    examples = [e for e in (tokenize_example(r["messages"], tok, r["tools"], params.model.max_length) for r in rows[:10 * steps]) if e]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params.train.lr)
    if mode == "compile":
        decoder = model.get_base_model().model
        decoder.forward = torch.compile(decoder.forward, dynamic=True)
    model.train()
    for group in batches(examples, params.train.batch_size, params.train.seed)[:steps]:
        b, t0 = collate(group, tok.pad_token_id), time.time()
        loss, _ = supervised_loss(model, b["input_ids"], b["attention_mask"], b["labels"], params.train.first_token_weight, b["decisions"])
        loss.backward(); opt.step(); opt.zero_grad()
        print(f"{mode} step {time.time() - t0:.2f} s, loss {float(loss):.4f}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--limit", type=int, default=540, help="seconds each side may run")
    ap.add_argument("--side", choices=["eager", "compile"], help="run one side in this process (what the parent starts)")
    args = ap.parse_args()
    if args.side: side(args.side, args.steps); sys.exit()
    for mode in ("eager", "compile"):
        t0 = time.time()
        try: out = subprocess.run([sys.executable, __file__, "--side", mode, "--steps", str(args.steps)], capture_output=True, text=True, timeout=args.limit).stdout
        except subprocess.TimeoutExpired as e: out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        times = [float(line.split()[2]) for line in out.splitlines() if line.startswith(f"{mode} step")]
        done = f"{len(times)} of {args.steps} steps in {time.time() - t0:.0f} s" + ("" if len(times) == args.steps else f" (stopped at the {args.limit} s limit)")
        rest = f"; after the first: {sum(times[1:]) / len(times[1:]):.2f} s a step" if len(times) > 1 else ""
        print(f"{mode}: {done}; steps {[round(t, 2) for t in times]}{rest}")
