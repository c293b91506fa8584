"""Training throughput of agent_loop's own trainer (`agent_loop.train.train_lora`, called as the pipeline calls it) against what a
user would otherwise run: a plain transformers `Trainer` + peft with its usual padding collator (`DataCollatorForSeq2Seq`) and
transformers' own full-logits loss, on the same base model, LoRA config, examples, batches, seed, precision, lr schedule and steps.

    .venv/bin/python tests/benchmarks/bench_trainer.py [--steps N] [--json] [--first-token-weight 1|params]

Each side runs in a fresh subprocess (`--side ours|plain`), so model loading and peak memory of one never touch the other;
the parent prints a table and the ratio ours/plain of tokens/s.

What is measured, per side:
- tokens/s: real (non-padding) input tokens of steps 2..N divided by the wall time from the end of step 1 to the end of step N
  (step 1 is the warm-up; model loading, optimizer set-up and saving are outside). Ours: taken from train_lora's own history
  (each row holds the cumulative tokens/s since its loop started, so the end time of step k is tokens_k / rate_k); plain: a
  TrainerCallback's on_step_end times. Both include fetching/collating each batch, forward, backward, optimizer and lr step.
- loss at each step: ours as train_lora returns it, plain as the Trainer logs it (logging_steps=1).
- peak RSS: the child's VmHWM from /proc/self/status at exit (whole process, model loading included), and VmHWM again after
  resetting it (/proc/self/clear_refs) when the training loop starts (ours: its first batch; plain: on_train_begin).

Both sides train on the same rows (generated seed tasks that fit model.max_length), in the batches and order train_lora picks
(`batches(..., seed=train.seed)`; the plain Trainer reads them sequentially), checked by a digest of every batch's tensors.
Losses are comparable only with first_token_weight 1 (the default here): train.first_token_weight in params.yaml weighs
decision tokens more, which transformers' loss cannot; pass `--first-token-weight params` to run ours exactly as configured.
Differences kept on purpose: plain uses the Trainer's default optimizer (adamw_torch_fused on torch >= 2.8; ours: torch AdamW),
and pads on the right (Gemma's tokenizer pads left by default, which would shift positions and so the loss); gradient clipping is
off on both (train_lora does not clip)."""
import argparse, dataclasses, hashlib, json, math, os, subprocess, sys, tempfile, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent_loop.config import load_params, load_settings
from agent_loop.data import generate_seed_tasks
from agent_loop.models import resolve_base
from agent_loop.tools import tool_schemas
import agent_loop.train as T
from agent_loop.train import batches, resolve_precision, tokenize_example

MARK = "BENCH_TRAINER_JSON "

def _status(key: str) -> float | None:
    "A kB field of /proc/self/status (VmHWM, VmRSS), in MiB."
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"): return int(line.split()[1]) / 1024
    except OSError: pass
    return None

def _reset_peak() -> float | None:
    "Reset VmHWM to the current RSS (Linux >= 4.0); the peak before, in MiB, or None where not allowed."
    before = _status("VmHWM")
    try: Path("/proc/self/clear_refs").write_text("5"); return before
    except OSError: return None

def _digest(b: dict) -> str:
    "A short digest of a batch's input ids, attention mask and labels, to check both sides saw the same batches."
    h = hashlib.sha1()
    for k in ("input_ids", "attention_mask", "labels"): h.update(b[k].to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:12]

def setup(steps: int, ftw: str):
    "Settings, params (train.max_steps = steps), base model, tokenizer and the rows both sides train on: steps * batch_size that fit."
    settings, params = load_settings(ROOT), load_params(ROOT / "params.yaml")
    tp = params.train
    if tp.grad_accum != 1: sys.exit("bench_trainer: train.grad_accum must be 1 (train_lora counts micro-batches as steps, the Trainer optimizer steps)")
    tp = dataclasses.replace(tp, max_steps=steps, first_token_weight=tp.first_token_weight if ftw == "params" else float(ftw))
    params = dataclasses.replace(params, train=tp)
    base = resolve_base(params.model.base, settings.path("cache"))
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(base.path)
    need, rows = steps * tp.batch_size, []
    for r in generate_seed_tasks(need * 2, seed=params.data.seed):
        r = r | {"tools": tool_schemas()}
        if tokenize_example(r["messages"], tok, r["tools"], params.model.max_length) is not None: rows.append(r)
        if len(rows) == need: break
    if len(rows) < need: sys.exit(f"bench_trainer: only {len(rows)} of {need} generated rows fit model.max_length")
    return params, base, tok, rows

def run_ours(params, base, tok, rows) -> dict:
    "train_lora itself, with `collate` and `lora_model` wrapped only to observe the batches it trains on and the LoRA config it builds."
    seen, lora, started = [], {}, []
    real_collate, real_lora_model = T.collate, T.lora_model
    def collate(examples, pad_id):
        b = real_collate(examples, pad_id)
        if not started: started.append(_reset_peak())  # the training loop starts
        seen.append((int(b["attention_mask"].sum()), int((b["labels"][:, 1:] != -100).sum()), _digest(b)))
        return b
    def lora_model(base_, tp_, *args, **kwargs):
        model, tok_ = real_lora_model(base_, tp_, *args, **kwargs)
        lora.update(_lora_info(model)); return model, tok_
    T.collate, T.lora_model = collate, lora_model
    try:
        with tempfile.TemporaryDirectory() as out:
            res = T.train_lora(base, rows, [], params, Path(out), run=None, progress=False)
    finally: T.collate, T.lora_model = real_collate, real_lora_model
    hist, m = res["history"], res["metrics"]
    tokens = [t for t, _, _ in seen]
    assert len(hist) == len(seen) == params.train.max_steps, (len(hist), len(seen))
    assert sum(tokens) == m["tokens"], (sum(tokens), m["tokens"])
    ends, cum = [], 0
    for t, row in zip(tokens, hist): cum += t; ends.append(cum / row["tokens_per_s"])  # seconds since train_lora's t0 at the end of each step
    return {"side": "ours", "what": "agent_loop.train.train_lora", "losses": [h["loss"] for h in hist], "step_ends": ends, "tokens": tokens,
            "supervised_tokens": [s for _, s, _ in seen], "digests": [d for _, _, d in seen], "lora": lora, "peak_before_loop": started[0] if started else None,
            "precision": m["precision"], "reported_tokens_per_s_incl_warmup": m["tokens_per_s"], "first_token_weight": params.train.first_token_weight,
            "optimizer": "torch.optim.AdamW"}

def _lora_info(model) -> dict:
    cfg = model.peft_config["default"]
    return {"r": cfg.r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "targets": sorted(cfg.target_modules) if not isinstance(cfg.target_modules, str) else cfg.target_modules,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}

def run_plain(params, base, tok, rows) -> dict:
    "What a user would write: AutoModelForCausalLM + peft LoRA + Trainer with DataCollatorForSeq2Seq and the model's own loss."
    from accelerate.utils import set_seed
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainerCallback, TrainingArguments
    tp, mp = params.train, params.model
    precision = resolve_precision(tp.precision)
    set_seed(tp.seed)  # as train_lora does before loading, so the LoRA A matrices start the same
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    targets = tp.target_modules if tp.target_modules == "all-linear" else [m.strip() for m in tp.target_modules.split(",")]
    model = get_peft_model(model, LoraConfig(r=tp.lora_r, lora_alpha=tp.lora_alpha, lora_dropout=tp.lora_dropout, target_modules=targets, task_type="CAUSAL_LM"))
    tok.padding_side = "right"  # as agent_loop's collate pads; Gemma's tokenizer pads left by default
    examples = [tokenize_example(r["messages"], tok, r["tools"], mp.max_length, r.get("supervise_from", 0)) for r in rows]
    ordered = [e for group in batches(examples, tp.batch_size, seed=tp.seed) for e in group]  # train_lora's first-epoch order
    data = Dataset.from_list([{"input_ids": e["input_ids"], "attention_mask": [1] * len(e["input_ids"]), "labels": e["labels"]} for e in ordered])
    seen, ends, state = [], [], {}
    pad = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100, return_tensors="pt")
    def collator(features):
        b = pad(features)
        seen.append((int(b["attention_mask"].sum()), int((b["labels"][:, 1:] != -100).sum()), _digest(b)))
        return b
    class Clock(TrainerCallback):
        def on_train_begin(self, args, st, control, **kw): state["peak_before_loop"] = _reset_peak(); state["t0"] = time.time()
        def on_step_end(self, args, st, control, **kw): ends.append(time.time() - state["t0"])
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=tp.batch_size, gradient_accumulation_steps=1, max_steps=tp.max_steps,
                                 learning_rate=tp.lr, lr_scheduler_type="linear", warmup_steps=tp.warmup_steps, weight_decay=tp.weight_decay,
                                 max_grad_norm=0.0, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, dataloader_num_workers=0,
                                 seed=tp.seed, bf16=precision == "bf16", train_sampling_strategy="sequential", disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)  # ours prints nothing per step either (progress=False)
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    n = tp.max_steps
    assert len(ends) == n and len(seen) >= n, (len(ends), len(seen))
    seen = seen[:n]  # accelerate's loader may fetch one batch ahead
    return {"side": "plain", "what": "transformers.Trainer + peft, DataCollatorForSeq2Seq, model's own loss", "losses": losses, "step_ends": ends,
            "tokens": [t for t, _, _ in seen], "supervised_tokens": [s for _, s, _ in seen], "digests": [d for _, _, d in seen], "lora": _lora_info(model),
            "peak_before_loop": state.get("peak_before_loop"), "precision": precision, "first_token_weight": 1.0, "optimizer": str(args.optim)}

def child(side: str, steps: int, ftw: str, as_json: bool):
    params, base, tok, rows = setup(steps, ftw)
    t, load_before = time.time(), os.getloadavg()[0]
    r = (run_ours if side == "ours" else run_plain)(params, base, tok, rows)
    hwm, tokens, ends = _status("VmHWM"), r["tokens"], r["step_ends"]
    timed = ends[-1] - ends[0]
    r |= {"steps": steps, "batch_size": params.train.batch_size, "lr": params.train.lr, "seed": params.train.seed, "threads": torch.get_num_threads(),
          "timed_steps": steps - 1, "timed_seconds": round(timed, 3), "timed_tokens": sum(tokens[1:]),
          "tokens_per_s": sum(tokens[1:]) / timed if timed > 0 else None, "step_seconds": [round(b - a, 3) for a, b in zip([0.0] + ends, ends)],
          "loss_last": r["losses"][-1], "loss_mean_last3": sum(r["losses"][-3:]) / len(r["losses"][-3:]),
          "peak_rss_mib": max(hwm, r["peak_before_loop"] or 0), "peak_rss_train_mib": hwm if r["peak_before_loop"] is not None else None, "run_seconds": round(time.time() - t, 1),
          "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    print(MARK + json.dumps(r) if as_json else json.dumps(r, indent=1), flush=True)

def parent(steps: int, ftw: str, as_json: bool):
    results = {}
    for side in ("ours", "plain"):
        print(f"[bench_trainer] {side}: {steps} steps in a fresh process ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--side", side, "--steps", str(steps), "--first-token-weight", ftw, "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"})
        lines = [l for l in p.stdout.splitlines() if l.startswith(MARK)]
        if p.returncode or not lines:
            sys.stderr.write(p.stdout[-4000:] + p.stderr[-8000:]); sys.exit(f"bench_trainer: the {side} side failed (exit {p.returncode})")
        results[side] = json.loads(lines[-1][len(MARK):])
    ours, plain = results["ours"], results["plain"]
    ratio = ours["tokens_per_s"] / plain["tokens_per_s"] if ours["tokens_per_s"] and plain["tokens_per_s"] else None
    same = {"batches": ours["digests"] == plain["digests"], "lora": ours["lora"] == plain["lora"], "precision": ours["precision"] == plain["precision"]}
    if as_json: print(json.dumps({"ratio_ours_plain_tokens_per_s": ratio, "same": same, **results}, indent=1)); return
    print(f"steps {steps} (1 warm-up, {steps - 1} timed) | batch {ours['batch_size']} | lr {ours['lr']} | seed {ours['seed']} | precision {ours['precision']} | "
          f"torch threads {ours['threads']}/{plain['threads']} | LoRA r={ours['lora']['r']} alpha={ours['lora']['alpha']} dropout={ours['lora']['dropout']} "
          f"targets={ours['lora']['targets']} trainable={ours['lora']['trainable_params']:,}")
    print(f"same batches: {same['batches']} | same LoRA config: {same['lora']} | same precision: {same['precision']} | "
          f"first_token_weight ours {ours['first_token_weight']} (plain: unweighted mean) | optimizer ours {ours['optimizer']}, plain {plain['optimizer']}")
    mib = lambda v: f"{v:.0f}" if v is not None else "n/a"
    head = f"{'side':>6} | {'tokens/s':>8} | {'s/step':>6} | {'loss step 1':>11} | {'loss last':>9} | {'mean last 3':>11} | {'peak RSS MiB':>12} | {'peak in training MiB':>20}"
    print(head); print("-" * len(head))
    for r in (ours, plain):
        print(f"{r['side']:>6} | {r['tokens_per_s']:8.1f} | {r['timed_seconds'] / r['timed_steps']:6.2f} | {r['losses'][0]:11.4f} | {r['loss_last']:9.4f} | "
              f"{r['loss_mean_last3']:11.4f} | {mib(r['peak_rss_mib']):>12} | {mib(r['peak_rss_train_mib']):>20}")
    for r in (ours, plain): print(f"{r['side']:>6} losses: {' '.join(f'{l:.4f}' for l in r['losses'])}")
    print(f"1-min load average before/after each run (CPUs: {os.cpu_count()}; above that, other processes shared the cores): "
          f"ours {ours['loadavg_1min']}, plain {plain['loadavg_1min']}")
    print(f"ours as train_lora reports it (step 1 included): {ours['reported_tokens_per_s_incl_warmup']} tokens/s")
    print(f"ratio ours/plain: {ratio:.2f}x" if ratio else "ratio ours/plain: n/a")

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per side, the first a warm-up (default 8: the plain side took 40-60 s a step on 2 shared cores; >= 2)")
    ap.add_argument("--side", choices=["ours", "plain"], help="run one side in this process (what the parent starts)")
    ap.add_argument("--json", action="store_true", help="print machine-readable results")
    ap.add_argument("--first-token-weight", default="1", help="train_lora's first_token_weight: a number, or 'params' for params.yaml's (default 1: losses comparable)")
    a = ap.parse_args()
    if a.steps < 2: ap.error("--steps must be >= 2 (step 1 is the warm-up)")
    if a.first_token_weight != "params": float(a.first_token_weight)
    if a.side: child(a.side, a.steps, a.first_token_weight, a.json)
    else: parent(a.steps, a.first_token_weight, a.json)
