"""Shared fixtures: a scratch copy of the project, and a small agent model that really learned the tool-call format."""
import json, os, shutil, socket, subprocess, sys, threading, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_FILES = ["agent_loop", "nbs", "toolsets", "presets", "dvc.yaml", "params.yaml", "settings.ini", "pyproject.toml", "app.py", "Makefile", "models/foundation",
                 # the frozen foundation stage's other outputs: DVC checks they are there
                 "reports/00_foundation.ipynb", "reports/runs/foundation.json", "reports/foundation.json", "reports/foundation_curve.csv", "data/interactions/README.md", "data/interactions/.gitignore", "data/.gitignore", ".gitignore", ".dvc/config", ".dvcignore"]


def make_project(dest: Path) -> Path:
    "A fresh git + DVC project holding this checkout's code, in `dest`."
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if not src.exists(): continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir(): shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        else: shutil.copy2(src, dest / name)
    shutil.copy2(ROOT / ".gitignore", dest / ".gitignore")
    run(["git", "init", "-q"], dest); run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], dest)
    return dest


def run(cmd, cwd, check=True, env=None, timeout=1800):
    "Run a command with the venv first on PATH; return the completed process (output captured)."
    e = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "WANDB_MODE": "offline"} | (env or {})
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=e, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


class AppProcess:
    "`python app.py` for the project in `root`, on a free port."
    def __init__(self, root: Path, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        e = os.environ | {"AGENT_LOOP_ROOT": str(root), "AGENT_LOOP_APP_PORT": str(self.port), "GRADIO_ANALYTICS_ENABLED": "False"} | (env or {})
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=root, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # read as it comes: the app logs a JSON line per turn, and a full pipe would block it
        self.lines = []
        self.reader = threading.Thread(target=lambda: [self.lines.append(line) for line in self.proc.stdout], daemon=True); self.reader.start()

    def output(self) -> str:
        "What the app printed so far (all of it once it has exited)."
        if self.proc.poll() is not None: self.reader.join(10)
        return "".join(self.lines)

    def wait(self, timeout=120):
        import urllib.request
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None: raise AssertionError(f"app exited ({self.proc.returncode}):\n{self.output()}")
            try:
                urllib.request.urlopen(self.url, timeout=2); return self
            except Exception: time.sleep(0.5)
        raise AssertionError("app did not come up")

    def stop(self):
        self.proc.terminate()
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill()


# Questions the app tests' model must get right before any test uses it: none is in its training data (checked below).
SELF_TEST = [("What is 37 times 12?", "calculator", "444"), ("What is 58 plus 23?", "calculator", "81"),
             ("Calculate 144 divided by 12.", "calculator", "12"), ("How much is 25 times 4?", "calculator", "100")]
# fp32 whatever the CPU offers (bf16 autocast would train a different model on a machine with bf16 units).
# Measured here: 60 to 100 unweighted steps left the model answering "37 times 12" directly or chaining tools; weighting
# the first token of each reply 5x learned the format in 70.
# The kinds of the test model's data are fixed here, not read from params.yaml: the app tests ask plain sums ("What is 37 times 12?")
# many times, and a share of word problems in the product's mix left the 70-step model answering one of them directly.
RECIPE = {"n": 200, "seed": 11, "steps": 70, "lr": 1.5e-3, "warmup": 4, "batch": 4, "precision": "fp32", "first_token_weight": 5.0,
          "kinds": {"calculator": 0.3, "word_problem": 0.0, "convert_units": 0.18, "weekday": 0.14, "count_letter": 0.12, "multi": 0.08, "no_tool": 0.18}}


def self_test(gguf: Path) -> list[str]:
    "What the model at `gguf` got wrong on SELF_TEST, through the app's own agent loop (empty when it passed)."
    from agent_loop.registry import sha256_file
    from agent_loop.serving import LlamaCppBackend, run_agent
    backend, failures = LlamaCppBackend(gguf, sha256_file(gguf), context_length=1024), []
    try:
        for question, tool, result in SELF_TEST:
            new, _ = run_agent([{"role": "user", "content": question}], backend)
            calls = [c["name"] for m in new if m["role"] == "assistant" for c in m.get("tool_calls") or []]
            results = [m.get("content") for m in new if m["role"] == "tool"]
            if calls[:1] != [tool] or results[:1] != [result] or "error" in new[-1]:
                failures.append(f"{question!r} -> {new}")
    finally: backend.close()
    return failures


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory):
    """A project whose models/current.json points at a Gemma 3 270M really fine-tuned (briefly) on the tool-call format.

    It is trained in fp32, so that the same model comes out on every machine, and must pass SELF_TEST before any test
    uses it. Training takes minutes, so the GGUF is cached under the agent-loop cache folder, keyed by everything that
    shapes it (the code of the format, tools, data and training modules and the recipe)."""
    import hashlib
    from agent_loop.config import load_params, load_settings
    from agent_loop.data import generate_seed_tasks, normalize_prompt
    from agent_loop.models import convert_to_gguf, merge_adapter, quantize_gguf, resolve_base
    from agent_loop.registry import new_version, promote, sha256_file, write_json_atomic
    from agent_loop.tools import load_toolsets
    from agent_loop.train import train_lora
    import llama_cpp
    shaping = [(ROOT / "agent_loop" / f).read_bytes() for f in ("format.py", "tools.py", "data.py", "train.py", "models.py")] + [(ROOT / "params.yaml").read_bytes()]
    key = hashlib.sha256(json.dumps(RECIPE).encode() + llama_cpp.__version__.encode() + b"".join(shaping)).hexdigest()[:16]
    project = make_project(tmp_path_factory.mktemp("trained") / "project")
    settings = load_settings(project)
    toolset = load_toolsets(["builtin"], project)
    cached = settings.path("cache") / "test-models" / f"agent-{key}.gguf"
    if not cached.exists():
        params = load_params(project / "params.yaml")
        tp = params.train
        tp.max_steps, tp.lr, tp.warmup_steps, tp.batch_size = RECIPE["steps"], RECIPE["lr"], RECIPE["warmup"], RECIPE["batch"]
        tp.precision, tp.first_token_weight = RECIPE["precision"], RECIPE["first_token_weight"]
        base = resolve_base("embedded:gemma3-270m", settings.path("cache"))
        rows = [r | {"tools": toolset.schemas} for r in generate_seed_tasks(RECIPE["n"], RECIPE["seed"], RECIPE["kinds"])]
        assert not {normalize_prompt(q) for q, _, _ in SELF_TEST} & {normalize_prompt(r["messages"][0]["content"]) for r in rows}
        work = tmp_path_factory.mktemp("train")
        metrics = train_lora(base, rows, [], params, work / "adapter", progress=False)["metrics"]
        assert metrics["precision"] == "fp32", metrics
        f16 = convert_to_gguf(merge_adapter(base, work / "adapter", work / "merged"), work / "f16.gguf")
        partial = cached.with_suffix(".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        quantize_gguf(f16, partial, "Q4_K_M")
        if failures := self_test(partial):
            raise AssertionError(f"the app tests' model did not learn the format ({RECIPE}, {metrics}); it failed its self-test on:\n" + "\n".join(failures))
        partial.rename(cached)
    sha = sha256_file(cached)
    version = new_version(settings.path("registry"), sha)
    shutil.copyfile(cached, version / "model.gguf")
    manifest = {"version": version.name, "gguf": str((version / "model.gguf").relative_to(project)), "sha256": sha, "toolset": toolset.record}
    write_json_atomic(version / "manifest.json", manifest)
    promote(settings.path("current"), manifest, project)
    return project
