"""Training as a user runs it from the command line: killed with SIGKILL and resumed, and on two processes under `accelerate launch`."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch, yaml
from safetensors.torch import load_file
from conftest import BIN, ROOT, run


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    "Train and val splits of built-in-tool conversations, written as the prepare stage writes them."
    from datasets import Dataset
    from agent_loop.data import generate_seed_tasks, write_splits
    from agent_loop.tools import tool_schemas
    rows = [{"messages": json.dumps(r["messages"]), "tools": json.dumps(tool_schemas())} for r in generate_seed_tasks(40, seed=3)]
    folder = tmp_path_factory.mktemp("processed")
    write_splits({"train": Dataset.from_list(rows[:32]), "val": Dataset.from_list(rows[32:])}, folder)
    return folder


def params_file(folder: Path, **train) -> Path:
    "params.yaml with the tiny model as base and `train` overriding the train section."
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["base"] = "tiny-random:gemma3"
    params["train"] |= train
    path = folder / "params.yaml"; path.write_text(yaml.safe_dump(params))
    return path


def train_cmd(params: Path, data: Path, out: Path, checkpoints: Path) -> list[str]:
    "The train stage from the command line, its reports next to the adapter (`<out>-reports`)."
    return ["-m", "agent_loop.train_stage", "--params-file", str(params), "--data", str(data), "--out", str(out), "--checkpoints", str(checkpoints),
            "--reports", str(reports(out))]


def reports(out: Path) -> Path: return out.with_name(out.name + "-reports")


NO_WANDB = {"AGENT_LOOP_WANDB_MODE": "disabled"}  # the stage's W&B run, not kept from tests


def metrics(out: Path) -> dict: return json.loads((out / "training.json").read_text())["metrics"]


def adapter(out: Path) -> dict: return load_file(out / "adapter_model.safetensors")


def test_a_killed_run_resumes_to_the_same_adapter(data, tmp_path):
    params = params_file(tmp_path, max_steps=40, batch_size=2, checkpoint_every=2)
    run([sys.executable, *train_cmd(params, data, tmp_path / "whole", tmp_path / "ck-whole")], ROOT, env=NO_WANDB)
    checkpoints = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, *train_cmd(params, data, tmp_path / "killed", checkpoints)], cwd=ROOT, env=os.environ | NO_WANDB, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not list(checkpoints.glob("*/step-*/done")) and proc.poll() is None and time.time() < deadline: time.sleep(0.01)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved = sorted(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("*/step-*/done"))
    assert saved and saved[-1] < 40 and not (tmp_path / "killed").exists()
    run([sys.executable, *train_cmd(params, data, tmp_path / "killed", checkpoints)], ROOT, env=NO_WANDB)
    resumed, whole = metrics(tmp_path / "killed"), metrics(tmp_path / "whole")
    assert resumed["resumed_from_step"] == saved[-1] and whole["resumed_from_step"] == 0
    assert resumed["steps"] == whole["steps"] == 40 and resumed["tokens"] == whole["tokens"]
    a, b = adapter(tmp_path / "whole"), adapter(tmp_path / "killed")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), "the resumed run ended with a different adapter"
    assert not any(checkpoints.iterdir()), "a completed run leaves its checkpoints behind"
    print(f"\nkilled after the checkpoint of step {saved[-1]} of 40; resumed there; adapters identical ({len(a)} tensors)")


def max_relative_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)


def test_two_processes_train_what_one_does_with_the_same_global_batch(data, tmp_path):
    # dropout draws its masks per process, so the two runs are compared without it
    one = params_file(tmp_path, max_steps=6, batch_size=4, lora_dropout=0.0, checkpoint_every=0)
    run([sys.executable, *train_cmd(one, data, tmp_path / "one", tmp_path / "ck")], ROOT, env=NO_WANDB)
    # --multi_gpu is accelerate's torchrun launcher (its --cpu flag sends several processes to mpirun); without CUDA each process's Accelerator joins over gloo
    launch = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_cpu_threads_per_process", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    res = run([*launch, *train_cmd(one, data, tmp_path / "two", tmp_path / "ck")], ROOT, env=NO_WANDB)
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert (m1["processes"], m2["processes"]) == (1, 2)
    assert m1["tokens"] == m2["tokens"] and m1["supervised_tokens"] == m2["supervised_tokens"]  # the same rows, split between the processes
    assert abs(m1["final_loss"] - m2["final_loss"]) < 1e-3, (m1["final_loss"], m2["final_loss"])
    trained = adapter(tmp_path / "one")
    two = max_relative_difference(adapter(tmp_path / "two"), trained)
    # control: one process with half the batch trains a different adapter, and the measure sees it
    half = tmp_path / "half"; half.mkdir()
    run([sys.executable, *train_cmd(params_file(half, max_steps=6, batch_size=2, lora_dropout=0.0, checkpoint_every=0), data, half / "out", tmp_path / "ck")], ROOT, env=NO_WANDB)
    other = max_relative_difference(adapter(half / "out"), trained)
    print(f"\nmax relative difference to one process: two processes {two:.2e}, half the batch {other:.2e}; losses {m1['final_loss']} vs {m2['final_loss']}")
    assert two < 1e-3 and other > 100 * two, (two, other)
    assert res.stdout.count('"processes": 2') == 1  # the metrics are printed once, by the main process
    # the main process wrote the stage's reports, with the metrics training.json has
    assert json.loads((reports(tmp_path / "two") / "train.json").read_text())["final_loss"] == m2["final_loss"]
    assert len((reports(tmp_path / "two") / "train_curve.csv").read_text().splitlines()) == 1 + 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_unsloth_qlora_on_cuda(data, tmp_path):
    pytest.importorskip("unsloth", reason="needs the gpu extra: pip install -e '.[gpu]'")
    params = params_file(tmp_path, max_steps=4, batch_size=2, backend="unsloth", load_in_4bit="yes", precision="bf16")
    run([sys.executable, *train_cmd(params, data, tmp_path / "out", tmp_path / "ck")], ROOT, env=NO_WANDB)
    m = metrics(tmp_path / "out")
    assert m["backend"] == "unsloth" and m["steps"] == 4 and m["final_loss"] == m["final_loss"]  # not NaN
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_tiny_gemma3n_trains_merges_and_evaluates(tmp_path):
    "Gemma 3n (AltUp, LAuReL, per-layer inputs) through the HF path: LoRA training with the shared preamble, merging, scoring with transformers, and the GGUF llama.cpp serves."
    from peft import PeftModel
    from agent_loop.config import load_params, load_settings
    from agent_loop.data import generate_seed_tasks
    from agent_loop.evaluate import eval_cases, evaluate_model
    from agent_loop.models import BaseModel, build_gguf, load_base, merge_adapter, resolve_base
    from agent_loop.registry import sha256_file
    from agent_loop.serving import LlamaCppBackend, TransformersBackend
    from agent_loop.tools import tool_schemas
    from agent_loop.train import train_lora
    base = resolve_base("tiny-random:gemma3n", load_settings(ROOT).path("cache"))
    params = load_params(ROOT / "params.yaml")
    params.train.max_steps, params.train.batch_size, params.train.lr = 4, 2, 1e-2
    rows = [r | {"tools": tool_schemas()} for r in generate_seed_tasks(14, seed=5)]
    res = train_lora(base, rows[:8], rows[8:10], params, tmp_path / "adapter", progress=False)
    m = res["metrics"]
    assert m["steps"] == 4 and m["backend"] == "peft" and m["val_loss_after"] < m["val_loss_before"], m
    merged = merge_adapter(base, tmp_path / "adapter", tmp_path / "merged")
    model, tok = load_base(base)
    with_adapter = PeftModel.from_pretrained(model, tmp_path / "adapter").eval()
    plain, _ = load_base(base)
    ids = torch.tensor([tok("<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n")["input_ids"]])
    merged_model, _ = load_base(BaseModel("merged", merged, ""))
    with torch.no_grad(): lora_logits, merged_logits, base_logits = (m_.eval()(input_ids=ids).logits for m_ in (with_adapter, merged_model, plain))
    assert torch.allclose(lora_logits, merged_logits, atol=1e-3), float((lora_logits - merged_logits).abs().max())  # merging keeps what was trained
    assert not torch.allclose(lora_logits, base_logits, atol=1e-3)  # and training changed something
    cases = eval_cases(rows[10:])
    hf_metrics, hf_rows = evaluate_model(TransformersBackend(merged), cases, max_new_tokens=12, progress=False)
    assert hf_metrics["cases"] == len(cases) and not any(r["output"].startswith("<backend error") for r in hf_rows), hf_rows[:2]
    gguf = build_gguf(base, tmp_path / "adapter", tmp_path / "model.gguf", "Q8_0")
    cpp_metrics, cpp_rows = evaluate_model(LlamaCppBackend(gguf, sha256_file(gguf)), cases, max_new_tokens=12, progress=False)
    assert cpp_metrics["cases"] == len(cases) and not any(r["output"].startswith("<backend error") for r in cpp_rows), cpp_rows[:2]
    print(f"\ntiny Gemma 3n: val loss {m['val_loss_before']} -> {m['val_loss_after']}; {len(cases)} cases scored through transformers and through llama.cpp ({gguf.stat().st_size >> 20} MiB Q8_0)")
