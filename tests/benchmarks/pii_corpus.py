"""What the personal-data scrubber changes in text that is mostly not personal data: every request and every text argument of
the generated function-calling corpus and the built-in tools' examples, scrubbed by the spaCy model alone and by the model with
the name rules and the place filter (`nbs/16_pii`), side by side; and the recall of each on the names tests/test_pii.py plants.

    .venv/bin/python tests/benchmarks/pii_corpus.py [--corpus 400] [--seed 0]

Prints how many texts each side changed, and each change the rules add or take away. Some changes are right (the corpus makes up
people and their e-mail addresses); the rest are false positives. Then the share of planted names each side found, per list."""
import argparse, json, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the planted names of test_pii


def texts(n_corpus: int, seed: int) -> list[str]:
    from agent_loop.corpus import generate_corpus
    from agent_loop.data import generate_seed_tasks
    found = set()
    def walk(v):
        if isinstance(v, str): found.add(v)
        elif isinstance(v, dict): [walk(x) for x in v.values()]
        elif isinstance(v, list): [walk(x) for x in v]
    for row in generate_corpus(n_corpus, seed) + generate_seed_tasks(n_corpus // 2, seed):
        for m in row["messages"]:
            if m["role"] == "user": found.add(m["content"])
            for call in m.get("tool_calls") or []:
                args = call.get("function", call).get("arguments")
                walk(json.loads(args) if isinstance(args, str) else args)
    return sorted(found)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import agent_loop.pii as pii
    corpus = texts(a.corpus, a.seed)
    with_rules = pii.Scrubber()
    rules = pii.is_place, pii.name_spans
    pii.is_place, pii.name_spans = (lambda span: False), (lambda doc, words: [])  # the model alone: no rule, no place filter
    from test_pii import found_and_right, planted_names
    planted = [p for p in planted_names() if p[0] != "STREET_ADDRESS"]
    try: model_only = pii.Scrubber(); alone = {t: model_only(t) for t in corpus}; found_alone = found_and_right(model_only, planted)[0]
    finally: pii.is_place, pii.name_spans = rules
    both = {t: with_rules(t) for t in corpus}
    changed = lambda out: {t for t, kept in out.items() if kept != t}
    print(f"{len(corpus)} texts; changed by the model alone: {len(changed(alone))}; with the rules and the place filter: {len(changed(both))}")
    for t in sorted(changed(alone) ^ changed(both)) + sorted(t for t in changed(alone) & changed(both) if alone[t] != both[t]):
        print(f"  {t[:90]!r}\n    alone: {alone[t][:90]!r}\n    rules: {both[t][:90]!r}")
    found_both, n = found_and_right(with_rules, planted)[0], sum(1 for kind, _, _ in planted if kind == "PERSON")
    for kind, about in (("PERSON", "the issue's list"), ("PERSON_2", "the second list"), ("PERSON_3", "the third list, never tuned on")):
        print(f"planted names of {about}: the model alone found {found_alone[kind] / n:.1%}, with the rules {found_both[kind] / n:.1%}")


if __name__ == "__main__":
    main()
