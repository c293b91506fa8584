"""Ten conversations at once against `python app.py` on loopback (and the same ten turns from one session, one after another),
with one llama.cpp context and with a pool of two: no errors, every turn logged exactly once, and the latencies side by side
(`pytest -s` prints them; they are figures, not assertions)."""
import statistics, sys, threading, time
from pathlib import Path
from conftest import AppProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_app import log_records  # noqa: E402

TURNS = 10
QUESTIONS = ["What is 37 times 12?", "What is 58 plus 23?", "Calculate 144 divided by 12.", "How much is 25 times 4?", "What is 17 minus 9?"]


def p(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_sessions(app, sessions: int) -> list[dict]:
    "`sessions` clients, each with its own session, start at the same moment and ask TURNS questions between them through /chat_stream; what each turn saw, and when."
    from gradio_client import Client
    results, start = [None] * TURNS, threading.Barrier(sessions)
    def session(s):
        client = Client(app.url, verbose=False)
        start.wait()
        for i in range(s, TURNS, sessions):
            t0 = time.perf_counter(); first = None; events = []
            try:
                for event in client.submit(QUESTIONS[i % len(QUESTIONS)], "", api_name="/chat_stream"):
                    first = first or time.perf_counter() - t0; events.append(event)
                results[i] = {"first_event": first, "latency": time.perf_counter() - t0, "turn": events[-1]}
            except Exception as e: results[i] = {"error": f"{type(e).__name__}: {e}"}
    threads = [threading.Thread(target=session, args=(s,)) for s in range(sessions)]
    for t in threads: t.start()
    for t in threads: t.join(600)
    return results


def test_ten_concurrent_sessions_single_context_and_pool(trained_project):
    figures = {}
    for contexts in (1, 2):
        app = AppProcess(trained_project, env={"AGENT_LOOP_SERVING_CONTEXTS": str(contexts)}).wait()
        try:
            for sessions in (1, TURNS):
                results = run_sessions(app, sessions)
                errors = [r for r in results if r is None or "error" in r or r["turn"].get("type") != "turn" or "error" in r["turn"]["new_messages"][-1]]
                assert not errors, errors
                logged = [r.get("id") for r in log_records(trained_project) if r.get("type") == "turn"]
                assert all(logged.count(r["turn"]["turn_id"]) == 1 for r in results), "every turn logged exactly once"
                first, latency = [r["first_event"] for r in results], [r["latency"] for r in results]
                ttft = [r["turn"]["stats"]["first_token_seconds"] for r in results]
                figures[contexts, sessions] = (p(first, .5), p(first, .95), p(ttft, .5), p(ttft, .95), p(latency, .5), p(latency, .95))
        finally: app.stop()
    print(f"\n  [figure] {TURNS} turns from 1 session (one after another) and from {TURNS} concurrent sessions, 0 errors, each turn logged once; seconds, p50 / p95:")
    print(f"  {'contexts':>8}  {'sessions':>8}  {'first event seen':>17}  {'first token (server)':>20}  {'turn latency':>13}")
    for (contexts, sessions), f in figures.items():
        print(f"  {contexts:>8}  {sessions:>8}  {f[0]:>7.2f} / {f[1]:>6.2f}  {f[2]:>9.2f} / {f[3]:>8.2f}  {f[4]:>5.2f} / {f[5]:>5.2f}")
