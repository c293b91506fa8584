"""How a GGUF serves a toolset it has never seen, declared the documented way without EXAMPLES (a reading; nothing is fitted here).

    .venv/bin/python tests/benchmarks/unseen_toolset.py [path/to/model.gguf] [call threshold]
    (default: models/candidate.gguf with the threshold evaluate fitted for it, from reports/evaluate.json;
    an adapter folder such as models/foundation is merged and quantised first, as call_decision.py does)

A library's toolset (renewing loans, booking rooms, opening hours) that neither the corpus nor the built-in tools contain, and
requests written for it the way a user would type them: each must get the right tool with the right arguments (BFCL's AST rules,
as evaluate scores), decoded as the app decodes (schema-held calls, the call threshold); a few requests no tool fits must get an
answer. Prints each request's outcome and the rates with Wilson 95 % intervals."""
import json, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from call_decision import scored_gguf
from agent_loop.config import load_params, load_settings
from agent_loop.evaluate import evaluate_model, expected_calls, gguf_cache, wilson
from agent_loop.registry import sha256_file
from agent_loop.tools import load_toolsets

LIBRARY = '''
from typing import Literal

def renew_loan(card_number: str, book_title: str, weeks: int = 2) -> dict:
    """Renew a book borrowed from the city library.

    Args:
        card_number: The library card number.
        book_title: Title of the borrowed book.
        weeks: How many more weeks to keep it.
    """
    return {"renewed": book_title, "weeks": weeks}

def book_room(room: Literal["Quiet Room", "Study Pod", "Seminar Hall"], date: str, hours: int) -> dict:
    """Book a room at the city library.

    Args:
        room: Which room.
        date: The day, as YYYY-MM-DD.
        hours: How many hours.
    """
    return {"booked": room, "date": date, "hours": hours}

def opening_hours(branch: str, day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]) -> str:
    """When a branch of the city library is open on a day of the week.

    Args:
        branch: The branch, e.g. Riverside.
        day: The day of the week.
    """
    return f"{branch} is open 9:00-17:00 on {day}"
'''

def call(name, **arguments): return {"name": name, "arguments": arguments}

REQUESTS = [
    ("Please renew 'The Silent Harbour' on card 55120 for 3 weeks.", [call("renew_loan", card_number="55120", book_title="The Silent Harbour", weeks=3)]),
    ("Can I renew Dune? My card is 88231.", [call("renew_loan", card_number="88231", book_title="Dune")]),
    ("Renew my loan of Atlas of Rivers, card 40017, for 1 week.", [call("renew_loan", card_number="40017", book_title="Atlas of Rivers", weeks=1)]),
    ("I'd like to keep Small Gods 4 more weeks, card number 77310.", [call("renew_loan", card_number="77310", book_title="Small Gods", weeks=4)]),
    ("Book the Quiet Room on 2026-12-14 for 2 hours.", [call("book_room", room="Quiet Room", date="2026-12-14", hours=2)]),
    ("I need the Seminar Hall for 4 hours on 2027-01-09.", [call("book_room", room="Seminar Hall", date="2027-01-09", hours=4)]),
    ("Reserve a Study Pod on 2026-12-20 for 1 hour, please.", [call("book_room", room="Study Pod", date="2026-12-20", hours=1)]),
    ("Could you book the Study Pod for 3 hours on 2026-12-18?", [call("book_room", room="Study Pod", date="2026-12-18", hours=3)]),
    ("When is the Riverside branch open on Saturday?", [call("opening_hours", branch="Riverside", day="saturday")]),
    ("What are the opening hours of the Central branch on monday?", [call("opening_hours", branch="Central", day="monday")]),
    ("Is the Northgate branch open on sunday?", [call("opening_hours", branch="Northgate", day="sunday")]),
    ("Opening hours for the Harbourside branch on friday, please.", [call("opening_hours", branch="Harbourside", day="friday")]),
]
NO_TOOL = ["Hello there!", "Thanks, that's all for today.", "Who wrote Pride and Prejudice?", "Can you recommend a good mystery novel?"]

def cases(tools: list[dict]) -> list[dict]:
    out = [{"id": f"unseen-{i}", "suite": "unseen", "category": "multiple", "kind": calls[0]["name"], "tools": tools, "step": "first",
            "prompt": [{"role": "user", "content": text}], "expected": expected_calls(calls, tools)} for i, (text, calls) in enumerate(REQUESTS)]
    return out + [{"id": f"unseen-none-{i}", "suite": "unseen", "category": "irrelevance", "kind": "no_tool", "tools": tools, "step": "first",
                   "prompt": [{"role": "user", "content": text}], "expected": []} for i, text in enumerate(NO_TOOL)]

def main(gguf: Path, threshold: float | None):
    params, settings = load_params(ROOT / "params.yaml"), load_settings(ROOT)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "toolsets").mkdir(); (Path(d) / "toolsets/library.py").write_text(LIBRARY)
        toolset = load_toolsets(["toolsets/library.py"], Path(d))
    assert not toolset.examples, "declared without EXAMPLES"
    gguf = scored_gguf(gguf, params, settings)
    store = gguf_cache(gguf, sha256_file(gguf), settings.path("cache"), settings.serving.threads, settings.serving.context_length)
    try: metrics, rows = evaluate_model(store, cases(toolset.schemas), params.evaluate.max_new_tokens, False, "unseen", threshold)
    finally: store.close()
    for r, (text, _) in zip(rows, REQUESTS + [(t, None) for t in NO_TOOL]):
        print(f"{'ok ' if r['correct'] else 'NO '} {text[:60]:<60} {r['output'][:110]!r}" + ("" if r["correct"] else f"  ({r['why'][:80]})"))
    for cat, label in (("multiple", "right tool and arguments"), ("irrelevance", "answers when no tool fits")):
        got = [r["correct"] for r in rows if r["category"] == cat]
        print(f"{label}: {sum(got)}/{len(got)} = {sum(got) / len(got):.2f}, Wilson 95 % {wilson(sum(got), len(got))} (threshold {threshold})")

if __name__ == "__main__":
    gguf = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models/candidate.gguf"
    if len(sys.argv) > 2: threshold = None if sys.argv[2] == "greedy" else float(sys.argv[2])
    else: threshold = json.loads((ROOT / "reports/evaluate.json").read_text())["call_threshold"]
    main(gguf, threshold)
