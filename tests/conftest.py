"""Shared fixtures: a scratch copy of the project, and a small agent model that really learned the tool-call format."""
import json, os, shutil, socket, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_FILES = ["agent_loop", "nbs", "dvc.yaml", "params.yaml", "settings.ini", "pyproject.toml", "app.py", "data/interactions/README.md", ".dvc/config", ".dvcignore"]


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

    def wait(self, timeout=120):
        import urllib.request
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None: raise AssertionError(f"app exited ({self.proc.returncode}):\n{self.proc.stdout.read()}")
            try:
                urllib.request.urlopen(self.url, timeout=2); return self
            except Exception: time.sleep(0.5)
        raise AssertionError("app did not come up")

    def stop(self):
        self.proc.terminate()
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill()


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory):
    """A project whose models/current.json points at a Gemma 3 270M really fine-tuned (briefly) on the tool-call format.

    Training takes a few minutes, so the GGUF is cached under the agent-loop cache folder, keyed by everything that
    shapes it (the code of the format, tools, data and training modules and the recipe below)."""
    import hashlib
    from agent_loop.config import load_params, load_settings
    from agent_loop.data import generate_seed_tasks
    from agent_loop.models import convert_to_gguf, merge_adapter, quantize_gguf, resolve_base
    from agent_loop.registry import new_version, promote, sha256_file, write_json_atomic
    from agent_loop.train import train_lora
    recipe = {"n": 200, "seed": 11, "steps": 60, "lr": 1e-3, "warmup": 4, "batch": 4}
    import llama_cpp
    shaping = [(ROOT / "agent_loop" / f).read_bytes() for f in ("format.py", "tools.py", "data.py", "train.py", "models.py")] + [(ROOT / "params.yaml").read_bytes()]
    key = hashlib.sha256(json.dumps(recipe).encode() + llama_cpp.__version__.encode() + b"".join(shaping)).hexdigest()[:16]
    project = make_project(tmp_path_factory.mktemp("trained") / "project")
    settings = load_settings(project)
    cached = settings.path("cache") / "test-models" / f"agent-{key}.gguf"
    if not cached.exists():
        params = load_params(project / "params.yaml")
        params.train.max_steps, params.train.lr, params.train.warmup_steps, params.train.batch_size = recipe["steps"], recipe["lr"], recipe["warmup"], recipe["batch"]
        base = resolve_base("embedded:gemma3-270m", settings.path("cache"))
        rows = generate_seed_tasks(recipe["n"], recipe["seed"])
        work = tmp_path_factory.mktemp("train")
        train_lora(base, rows, [], params, work / "adapter", progress=False)
        f16 = convert_to_gguf(merge_adapter(base, work / "adapter", work / "merged"), work / "f16.gguf")
        cached.parent.mkdir(parents=True, exist_ok=True)
        quantize_gguf(f16, cached.with_suffix(".partial"), "Q4_K_M"); cached.with_suffix(".partial").rename(cached)
    sha = sha256_file(cached)
    version = new_version(settings.path("registry"), sha)
    shutil.copyfile(cached, version / "model.gguf")
    manifest = {"version": version.name, "gguf": str((version / "model.gguf").relative_to(project)), "sha256": sha}
    write_json_atomic(version / "manifest.json", manifest)
    promote(settings.path("current"), manifest, project)
    return project
