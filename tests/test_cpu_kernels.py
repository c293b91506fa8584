"""The same adapter bytes whatever kernels the CPU would give torch: training runs with `ATEN_CPU_CAPABILITY` forced to each level
this machine offers (as a CPU with AVX-512 makes torch pick AVX-512 by itself) and must make one adapter, because `agent_loop.models`
holds torch and MKL to their AVX2 kernels before any torch operation. The same training after torch has run an operation (too late
for the pin) shows that the levels do give other bytes, so the test can tell."""
import json, os, subprocess, sys
import pytest
import torch
from conftest import ROOT

TRAIN = """
import hashlib, json, sys, tempfile
from pathlib import Path
if sys.argv[1] == "late":
    import torch; torch.ones(8).sum()  # torch picks its kernels now, before agent_loop can hold them
from agent_loop.config import load_params, load_settings
from agent_loop.data import generate_seed_tasks
from agent_loop.models import CPU_KERNELS, resolve_base
from agent_loop.tools import load_toolsets
from agent_loop.train import train_lora
params, root = load_params(Path("params.yaml")), Path(".")
tp = params.train
tp.max_steps, tp.warmup_steps, tp.batch_size, tp.precision = 3, 1, 2, "fp32"
schemas = load_toolsets(["builtin"], root).schemas
rows = [r | {"tools": schemas} for r in generate_seed_tasks(12, 5)]
out = Path(tempfile.mkdtemp()) / "adapter"
metrics = train_lora(resolve_base("tiny-random:gemma3", load_settings(root).path("cache")), rows, [], params, out, progress=False)["metrics"]
print(json.dumps({"kernels": CPU_KERNELS, "recorded": metrics["cpu_kernels"],
                  "sha256": hashlib.sha256((out / "adapter_model.safetensors").read_bytes()).hexdigest()}))
"""

LEVELS = ["default", "avx2"] + (["avx512"] if torch.cpu._is_avx512_supported() else [])


def train(level: str, when: str = "pinned") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"} | {"ATEN_CPU_CAPABILITY": level}  # as a user's shell might have it
    res = subprocess.run([sys.executable, "-c", TRAIN, when], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not torch.cpu._is_avx2_supported(), reason="the kernels are held to AVX2, which this CPU lacks")
def test_every_kernel_level_trains_the_same_adapter():
    runs = {level: train(level) for level in LEVELS}
    assert {r["kernels"] for r in runs.values()} == {"AVX2"} and {r["recorded"] for r in runs.values()} == {"AVX2"}, runs
    assert len({r["sha256"] for r in runs.values()}) == 1, runs
    late = {level: train(level, "late") for level in ("default", "avx2")}
    assert late["default"]["kernels"] == "DEFAULT" and late["default"]["sha256"] != late["avx2"]["sha256"], late
