"""Every CUDA path of the trainer, run once on a GPU machine: `make gpu-check` (under 10 minutes on one GPU).

    .venv/bin/python tests/gpu_check.py [--steps N]

The CPU machines this project is built on cannot run these paths, so they are checked here, each on its own and each reported
with what it measured, whether or not the others passed:

1. bf16 LoRA through transformers + peft (the `peft` backend);
2. bitsandbytes 4-bit QLoRA through the same backend;
3. Unsloth's QLoRA (the `unsloth` backend, bf16, 4-bit): `tests/test_train.py::test_unsloth_qlora_on_cuda`, which skips on CPU;
4. DDP on one GPU: the train stage under `accelerate launch --multi_gpu --num_processes 1` (accelerate's DDP wrapper, NCCL);
5. a short real training of the embedded Gemma 3 270M (`train.backend: auto`, bf16), with its tokens/s and loss.

It exits 1 when any check failed, 2 without CUDA (nothing to check)."""
import argparse, copy, json, os, subprocess, sys, tempfile, time, traceback
from pathlib import Path
import torch, yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
from agent_loop.config import load_params, load_settings
from agent_loop.data import generate_seed_tasks, write_splits
from agent_loop.models import resolve_base
from agent_loop.tools import tool_schemas
from agent_loop.train import train_lora


def rows(n: int, seed: int = 3) -> list[dict]:
    return [r | {"tools": tool_schemas()} for r in generate_seed_tasks(n, seed=seed)]


def tiny_params(**train):
    params = load_params(ROOT / "params.yaml")
    params.model.base = "tiny-random:gemma3"
    for k, v in ({"max_steps": 4, "batch_size": 2, "checkpoint_every": 0} | train).items(): setattr(params.train, k, v)
    return params


def lora(params, base_name: str, steps_rows: int = 16) -> dict:
    "train_lora in this process; the metrics that say which path it took."
    base = resolve_base(base_name, load_settings(ROOT).path("cache"))
    data = rows(steps_rows)
    with tempfile.TemporaryDirectory() as out:
        m = train_lora(base, data[:-4], data[-4:], params, Path(out), progress=False)["metrics"]
    assert m["final_loss"] == m["final_loss"], "the loss is NaN"
    return {k: m[k] for k in ("backend", "precision", "device", "steps", "final_loss", "tokens_per_s", "val_loss_before", "val_loss_after") if k in m}


def check_bf16_peft():
    m = lora(tiny_params(backend="peft", precision="bf16", load_in_4bit="no"), "tiny-random:gemma3")
    assert (m["backend"], m["precision"]) == ("peft", "bf16"), m
    return m


def check_bitsandbytes_4bit():
    import bitsandbytes  # the gpu extra
    m = lora(tiny_params(backend="peft", precision="bf16", load_in_4bit="yes"), "tiny-random:gemma3")
    assert m["backend"] == "peft", m
    return m | {"bitsandbytes": bitsandbytes.__version__}


def check_unsloth():
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_train.py::test_unsloth_qlora_on_cuda"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0 and " passed" in res.stdout and "skipped" not in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    return {"pytest": res.stdout.strip().splitlines()[-1]}


def check_ddp_one_gpu():
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["model"]["base"] = "tiny-random:gemma3"
        params["train"] |= {"max_steps": 4, "batch_size": 2, "checkpoint_every": 0, "precision": "bf16"}
        (d / "params.yaml").write_text(yaml.safe_dump(params))
        from datasets import Dataset
        data = [{"messages": json.dumps(r["messages"]), "tools": json.dumps(r["tools"])} for r in rows(20)]
        write_splits({"train": Dataset.from_list(data[:16]), "val": Dataset.from_list(data[16:])}, d / "processed")
        cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
               "-m", "agent_loop.train_stage", "--params-file", str(d / "params.yaml"), "--data", str(d / "processed"), "--out", str(d / "out"), "--reports", str(d / "reports")]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ | {"AGENT_LOOP_WANDB_MODE": "disabled", "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        m = json.loads((d / "out" / "training.json").read_text())["metrics"]
        assert m.get("processes") == 1, m
        return {k: m[k] for k in ("processes", "precision", "steps", "final_loss") if k in m}


def check_real_270m(steps: int):
    params = load_params(ROOT / "params.yaml")
    params.train.max_steps, params.train.checkpoint_every = steps, 0
    m = lora(params, params.model.base, steps_rows=steps * params.train.batch_size + 8)
    assert m["val_loss_after"] < m["val_loss_before"], m
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="steps of the 270M run")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; run it on a GPU machine (nothing was checked)"); sys.exit(2)
    print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")
    checks = [("bf16 LoRA (peft)", check_bf16_peft), ("bitsandbytes 4-bit QLoRA", check_bitsandbytes_4bit), ("Unsloth QLoRA", check_unsloth),
              ("DDP on 1 GPU", check_ddp_one_gpu), (f"Gemma 3 270M, {args.steps} steps", lambda: check_real_270m(args.steps))]
    results = []
    for name, check in checks:
        t0 = time.time()
        try: out, ok = check(), True
        except Exception as e: out, ok = {"error": f"{type(e).__name__}: {str(e)[-1500:]}"}, False; traceback.print_exc()
        results.append((name, ok, round(time.time() - t0, 1), out))
        print(f"{'PASS' if ok else 'FAIL'}  {name}  ({results[-1][2]} s)  {json.dumps(out)}", flush=True)
    print(f"\n{sum(ok for _, ok, _, _ in results)} of {len(results)} CUDA checks passed")
    sys.exit(0 if all(ok for _, ok, _, _ in results) else 1)


if __name__ == "__main__":
    main()
