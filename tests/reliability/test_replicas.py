"""Two app processes sharing one data folder and one `models/current.json`, as two replicas behind a load balancer (the guide gives the
recipe): a promotion reaches both; turns go to both at once and one replica is killed with SIGKILL while it serves. No acknowledged
turn is lost, no line is torn, each process wrote its own log file, and the next `prepare` reads the turns of both."""
import json, signal, sys, threading, time, urllib.request
from pathlib import Path
from conftest import AppProcess

QUESTIONS = ["What is 37 times 12?", "What is 58 plus 23?", "Calculate 144 divided by 12.", "How much is 25 times 4?"]


def ready(app) -> dict: return json.loads(urllib.request.urlopen(app.url + "ready", timeout=10).read())


def wait_for(condition, what: str, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition(): return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_replicas_share_the_log_and_the_model_and_survive_a_kill(trained_project):
    from gradio_client import Client
    from agent_loop.data import load_interactions
    from agent_loop.interactions import read_log
    from agent_loop.registry import promote, sha256_file
    folder, current = trained_project / "data/interactions", trained_project / "models/current.json"
    first = json.loads(current.read_text())
    before = {r["id"] for r in read_log(folder)[0] if r.get("type") == "turn"}
    a, b = AppProcess(trained_project), AppProcess(trained_project)
    try:
        a.wait(); b.wait()
        # a promotion reaches every replica: the same weights under another version (bytes appended: another sha256)
        version = trained_project / "models/registry/v-replicas-test"; version.mkdir()
        gguf = version / "model.gguf"; gguf.write_bytes((trained_project / first["gguf"]).read_bytes() + b"\0" * 32)
        manifest = json.loads((trained_project / first["gguf"]).with_name("manifest.json").read_text())
        manifest |= {"version": version.name, "gguf": str(gguf.relative_to(trained_project)), "sha256": sha256_file(gguf)}
        (version / "manifest.json").write_text(json.dumps(manifest))
        promote(current, manifest, trained_project)
        wait_for(lambda: ready(a)["version"] == ready(b)["version"] == version.name, "both replicas to serve the promoted model")
        # two clients per replica, four turns each; replica a is killed once it has acknowledged two turns
        acked, failed = {a: [], b: []}, {a: 0, b: 0}
        def client(app, k):
            c = Client(app.url, verbose=False)
            for i in range(4):
                try: acked[app].append(c.predict(QUESTIONS[(k + i) % len(QUESTIONS)], "", api_name="/chat")["turn_id"])
                except Exception: failed[app] += 1
        threads = [threading.Thread(target=client, args=(app, k)) for app in (a, b) for k in range(2)]
        for t in threads: t.start()
        wait_for(lambda: len(acked[a]) >= 2, "replica a to answer twice", 600)
        a.proc.send_signal(signal.SIGKILL); a.proc.wait(30)
        for t in threads: t.join(900)
        assert len(acked[b]) == 8 and failed[b] == 0, (acked[b], failed[b])  # the survivor served every turn sent to it
        assert failed[a] > 0, "replica a was killed before it could answer everything"
        records, problems = read_log(folder)
        assert problems == [], problems  # no torn line, in either file
        logged = {r["id"] for r in records if r.get("type") == "turn"} - before
        assert set(acked[a]) | set(acked[b]) <= logged, "an acknowledged turn is missing from the log"
        files = {p.name for p in folder.glob("*.jsonl")}
        assert [f for f in files if f.endswith(f"-{a.proc.pid}.jsonl")] and [f for f in files if f.endswith(f"-{b.proc.pid}.jsonl")], files
        # prepare reads both processes' files: every new turn is there to be judged (unrated ones count when use_unrated says so)
        kept, _, report = load_interactions(folder, use_unrated=True)
        assert report["turns"] == len(before) + len(logged)
        trained = {k["id"].removeprefix("log-") for k in kept}
        assert trained & set(acked[a]) and trained & set(acked[b]), "prepare would train on the turns of one replica only"
        print(f"\nreplicas: a acknowledged {len(acked[a])} turns before SIGKILL ({failed[a]} requests failed with it), b {len(acked[b])}; "
              f"{len(logged)} new turns in {len(files)} log files, none torn; both served {version.name} after one promotion")
        promote(current, first, trained_project)
        wait_for(lambda: ready(b)["version"] == first["version"], "the rollback to reach the survivor")
    finally:
        for app in (a, b):
            if app.proc.poll() is None: app.stop()
        if json.loads(current.read_text())["version"] != first["version"]: promote(current, first, trained_project)
