"""Deterministic generator of the small synthetic data the project bundles (``python -m bench.toydata``).

Longer than ~350 lines because most of it is word lists and templates (data), not logic.

Seven simple skills (addition, word-list reversal, uppercasing, opposites, capitals, letter multiple choice,
templated descriptions) with a mix of 1-3-token and 20-60-word responses, so a confidence split has something
to separate. ``toy_open`` and half of ``toy_exact`` are held out: the same skills on items that never appear in
training (new subjects, number pairs, word lists, words). ``toy_mcq`` and the other half of ``toy_exact`` ask facts
the training data teaches (capitals, opposites) in its own phrasing: a tiny model trained for a minute on CPU
learns those and nothing held out, so they are what shows that training worked (the CI regression relies on it;
the held-out items stay near 0 for it). ``corpus.txt`` (all of it plus generic English) trains the tiny preset's
tokenizer. The training half (``toy_train.jsonl``, ``corpus.txt``) ships with the recipe (``sftmix/assets``), the
evaluation half with bench (``bench/assets``, the toy task YAMLs' fallbacks): one generator, since the evaluation
sets are drawn beside (and disjoint from, or recalling) the training rows.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from core.io import write_text
from sftmix.sources import ASSETS_DIR as TRAIN_DIR

EVAL_DIR = Path(__file__).resolve().parent / "assets"  # the toy tasks' data (package data: task YAML fallbacks)
SEED = 1234
# Training halves ship with the recipe (``toy`` data, the tiny preset's tokenizer corpus); evaluation halves with bench.
FILES = {"toy_train.jsonl": TRAIN_DIR, "corpus.txt": TRAIN_DIR, "toy_open.jsonl": EVAL_DIR,
         "toy_mcq.jsonl": EVAL_DIR, "toy_exact.jsonl": EVAL_DIR}

WORDS = [
    "apple", "river", "stone", "cloud", "tiger", "garden", "window", "pencil", "candle", "forest", "bottle", "mirror",
    "basket", "rocket", "island", "ladder", "button", "castle", "dragon", "pillow", "carpet", "wallet", "jacket",
    "hammer", "violin", "planet", "rabbit", "turtle", "orange", "lemon", "bridge", "market", "school", "summer",
    "winter", "spring", "silver", "golden", "yellow", "purple", "engine", "guitar", "camera", "doctor", "farmer",
    "sailor", "parrot", "monkey", "spider", "flower",
]
OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("up", "down"), ("light", "dark"),
    ("open", "closed"), ("early", "late"), ("full", "empty"), ("hard", "soft"), ("old", "young"), ("rich", "poor"),
    ("strong", "weak"), ("tall", "short"), ("wet", "dry"), ("loud", "quiet"), ("clean", "dirty"), ("thick", "thin"),
    ("high", "low"), ("near", "far"), ("inside", "outside"), ("begin", "end"), ("win", "lose"), ("push", "pull"),
    ("buy", "sell"), ("day", "night"), ("left", "right"), ("true", "false"), ("heavy", "light"), ("deep", "shallow"),
    ("first", "last"), ("give", "take"), ("love", "hate"), ("safe", "dangerous"), ("sweet", "sour"),
    ("wide", "narrow"), ("brave", "afraid"), ("remember", "forget"), ("arrive", "leave"), ("always", "never"),
]
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
    ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Brazil", "Brasilia"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Poland", "Warsaw"), ("Greece", "Athens"),
    ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Russia", "Moscow"), ("Turkey", "Ankara"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Australia", "Canberra"), ("Argentina", "Buenos Aires"), ("Cuba", "Havana"),
    ("Denmark", "Copenhagen"),
]
CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "grape", "mango", "pear", "peach", "plum", "lemon", "melon"],
    "animal": ["cat", "dog", "horse", "tiger", "rabbit", "eagle", "whale", "mouse", "sheep", "zebra"],
    "color": ["red", "blue", "green", "yellow", "purple", "grey", "brown", "pink", "black", "white"],
    "vehicle": ["car", "bus", "train", "bicycle", "truck", "boat", "plane", "tram", "scooter", "van"],
    "tool": ["hammer", "saw", "wrench", "drill", "shovel", "rake", "chisel", "pliers", "axe", "ladder"],
    "instrument": ["violin", "piano", "guitar", "drum", "flute", "trumpet", "harp", "cello", "banjo", "organ"],
}
# subject: (kind, where/what it does, feature, typical adjective, why people like it)
SUBJECTS = {
    "cat": ("small animal", "lives in many homes", "soft fur and sharp claws", "curious", "it is calm and playful"),
    "dog": ("loyal animal", "lives with people all over the world", "a keen nose and a wagging tail", "friendly",
            "it guards the house and loves to play"),
    "horse": ("large animal", "lives on farms and open fields", "long legs and a flowing mane", "strong",
              "it can carry riders over long distances"),
    "whale": ("huge sea animal", "swims in every ocean", "a big tail and a blowhole", "gentle",
              "it sings long songs under the water"),
    "eagle": ("large bird", "nests high in the mountains", "sharp eyes and wide wings", "proud",
              "it flies high above the valleys"),
    "bee": ("small insect", "lives in a busy hive", "striped wings and a tiny sting", "hard-working",
            "it makes honey and helps flowers grow"),
    "owl": ("night bird", "hunts in dark forests", "large eyes and silent wings", "wise",
            "it can turn its head very far"),
    "frog": ("small animal", "lives near ponds and streams", "smooth skin and long back legs", "lively",
             "it jumps far and eats many insects"),
    "apple": ("round fruit", "grows on trees in cool places", "a crisp skin and sweet flesh", "fresh",
              "it is tasty and easy to carry"),
    "banana": ("long fruit", "grows in warm countries", "a yellow peel and soft inside", "sweet",
               "it gives quick energy"),
    "bread": ("common food", "is baked in ovens every day", "a brown crust and a soft middle", "warm",
              "it goes well with almost any meal"),
    "cheese": ("food made from milk", "is made on farms and in dairies", "many shapes, smells and colors",
               "rich", "it adds flavour to many dishes"),
    "soup": ("warm dish", "is cooked in a pot on the stove", "vegetables, water and spices", "comforting",
             "it warms people on cold days"),
    "bicycle": ("vehicle with two wheels", "is used on roads and paths", "pedals, a chain and a seat", "light",
                "it is cheap, quiet and good exercise"),
    "train": ("long vehicle", "runs on rails between cities", "many carriages pulled by an engine", "fast",
              "it carries many people at once"),
    "boat": ("vehicle for water", "floats on lakes, rivers and seas", "a hull and often a sail or motor",
             "steady", "it lets people travel across the water"),
    "plane": ("flying vehicle", "takes off from airports", "two wings and powerful engines", "quick",
              "it crosses oceans in a few hours"),
    "piano": ("musical instrument", "stands in homes, schools and halls", "black and white keys", "elegant",
              "it can play both soft and loud music"),
    "guitar": ("musical instrument", "is played at concerts and around campfires", "six strings and a hollow body",
               "popular", "it is easy to carry and fun to play"),
    "drum": ("musical instrument", "keeps the beat in a band", "a tight skin stretched over a frame", "loud",
             "it makes people want to dance"),
    "book": ("set of printed pages", "sits on shelves in libraries and homes", "a cover, pages and words",
             "quiet", "it tells stories and teaches new ideas"),
    "clock": ("device that shows time", "hangs on walls or sits on desks", "a face, numbers and hands", "useful",
              "it helps people arrive on time"),
    "lamp": ("source of light", "stands on tables and floors", "a bulb and often a shade", "bright",
             "it makes reading at night easy"),
    "chair": ("piece of furniture", "is found in every room", "four legs, a seat and a back", "simple",
              "it gives people a place to rest"),
    "phone": ("small device", "is carried in pockets everywhere", "a screen, buttons and a battery", "handy",
              "it lets people talk across long distances"),
    "river": ("stream of fresh water", "flows from hills down to the sea", "banks, bends and currents", "calm",
              "it brings water to towns and fields"),
    "mountain": ("very high hill", "rises above valleys and plains", "steep slopes and a rocky peak", "tall",
                 "its view from the top is wide and clear"),
    "forest": ("large area of trees", "covers hills and valleys", "tall trunks, leaves and birds", "green",
               "it gives shade, clean air and wood"),
    "beach": ("strip of sand", "lies where the land meets the sea", "waves, shells and warm sand", "sunny",
              "it is a nice place to swim and relax"),
    "desert": ("dry land", "gets very little rain", "sand dunes and rare plants", "hot",
               "its night sky is full of stars"),
    "island": ("piece of land", "is surrounded by water", "beaches on every side", "peaceful",
               "it feels far away from busy life"),
    "city": ("large town", "is home to many people", "tall buildings, roads and parks", "busy",
             "it offers work, shops and culture"),
    "garden": ("place for plants", "is found behind many houses", "flowers, grass and vegetables", "pleasant",
               "it is quiet and full of colour"),
    "school": ("place for learning", "is found in every town", "classrooms, teachers and books", "lively",
               "children meet friends and learn new things there"),
    "market": ("place for trading", "fills a square or a street", "stalls, food and sellers", "noisy",
               "people can buy fresh food there"),
    "bridge": ("structure over a gap", "crosses rivers and roads", "strong beams and supports", "solid",
               "it joins two places together"),
    "kite": ("light toy", "flies in the wind on a long string", "a thin frame and a colourful tail", "cheerful",
             "it dances high in the sky on breezy days"),
    "tent": ("portable shelter", "is put up at camp sites", "poles, pegs and a waterproof cover", "cosy",
             "it lets people sleep close to nature"),
    "candle": ("stick of wax", "burns on tables and in windows", "a wick and a small flame", "soft",
               "it gives a calm and gentle light"),
    "umbrella": ("folding cover", "is carried on rainy days", "a handle, thin ribs and cloth", "practical",
                 "it keeps people dry in the rain"),
}
TEACHER_OPENERS = ["Sure.", "Here is a short description.", "Of course.", ""]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _describe(rng: random.Random, subject: str, long: bool = True) -> str:
    kind, where, feature, adj, why = SUBJECTS[subject]
    parts = [
        rng.choice(TEACHER_OPENERS),
        f"{_a(subject).capitalize()} is {_a(kind)} that {where}.",
        f"It has {feature}, and it is often described as {adj}.",
    ]
    if long:
        parts.append(f"Many people like it because {why}.")
        parts.append(rng.choice([
            f"In short, the {subject} is {_a(adj)} and familiar part of daily life.",
            f"Children often learn about the {subject} at an early age.",
            f"You can read more about the {subject} in many simple books.",
        ]))
    return " ".join(p for p in parts if p)


def _summary(subject: str) -> str:
    kind, where, _, adj, _ = SUBJECTS[subject]
    return f"{_a(subject).capitalize()} is {_a(adj)} {kind} that {where}."


def _facts(subject: str) -> str:
    kind, where, feature, _, _ = SUBJECTS[subject]
    return f"1. It is {_a(kind)}. 2. It {where}. 3. It has {feature}."


def _compare(a: str, b: str) -> str:
    ka, _, fa, aa, _ = SUBJECTS[a]
    kb, _, fb, ab, _ = SUBJECTS[b]
    return (f"{_a(a).capitalize()} is {_a(ka)}, while {_a(b)} is {_a(kb)}. The {a} has {fa}, but the {b} has {fb}. "
            f"People usually call the {a} {aa} and the {b} {ab}.")


def _mcq_block(question: str, choices: list[str]) -> str:
    return question + "\n" + "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(choices))


def _mcq_items(rng: random.Random) -> list[tuple[str, list[str], int]]:
    """Pool of (question, choices, answer index) about categories and sums, shuffled."""
    items = []
    for cat, members in CATEGORIES.items():
        others = [w for c, ws in CATEGORIES.items() if c != cat for w in ws]
        for correct in members:
            distract = rng.sample(others, 3)
            choices = distract + [correct]
            rng.shuffle(choices)
            items.append((f"Which of these is {_a(cat)}?", choices, choices.index(correct)))
    for _ in range(40):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        wrong = rng.sample([x for x in range(a + b - 6, a + b + 7) if x != a + b and x >= 0], 3)
        choices = [str(x) for x in wrong + [a + b]]
        rng.shuffle(choices)
        items.append((f"What is {a} + {b}?", choices, choices.index(str(a + b))))
    rng.shuffle(items)
    seen, unique = set(), []
    for q, ch, ans in items:
        key = (q, tuple(ch))
        if key not in seen:
            seen.add(key)
            unique.append((q, ch, ans))
    return unique


def generate(seed: int = SEED) -> dict[str, list]:
    """Build every toy set in memory: {'train', 'open', 'mcq', 'exact': [records], 'corpus': [lines]}."""
    rng = random.Random(seed)
    train: list[dict] = []

    def add(instruction: str, output: str, inp: str = "") -> None:
        train.append({"id": f"toy-{len(train):04d}", "instruction": instruction, "input": inp, "output": output})

    exact: list[dict] = []

    def add_exact(question: str, answer: str) -> None:
        exact.append({"id": f"exact-{len(exact):03d}", "question": question, "answer": answer})

    # Addition: disjoint number pairs.
    pairs = [(a, b) for a in range(0, 21) for b in range(0, 21)]
    rng.shuffle(pairs)
    for a, b in pairs[:70]:
        q = rng.choice(["What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}."]).format(a=a, b=b)
        add(q, str(a + b))
    for a, b in pairs[70:80]:
        add_exact(f"What is {a} + {b}?", str(a + b))

    # Reverse a short word list: disjoint lists.
    lists = set()
    while len(lists) < 58:
        lists.add(tuple(rng.sample(WORDS, rng.randint(3, 5))))
    lists = sorted(lists)
    rng.shuffle(lists)
    for ws in lists[:50]:
        add("Reverse the order of these words.", ", ".join(reversed(ws)), ", ".join(ws))
    for ws in lists[50:58]:
        add_exact(f"Reverse the order of these words: {', '.join(ws)}", ", ".join(reversed(ws)))

    # Uppercase: disjoint words.
    words = sorted(set(WORDS) | {w for ws in CATEGORIES.values() for w in ws})
    rng.shuffle(words)
    for w in words[:50]:
        add(rng.choice(["Write this word in capital letters.", "Convert the word to uppercase."]), w.upper(), w)
    for w in words[50:58]:
        add_exact(f"Write this word in capital letters: {w}", w.upper())

    # Opposites: both directions, disjoint (word -> opposite) items.
    opp = [(a, b) for a, b in OPPOSITES] + [(b, a) for a, b in OPPOSITES]
    rng.shuffle(opp)
    for w, o in opp[:50]:
        if rng.random() < 0.5:
            add(f"What is the opposite of '{w}'?", o)
        else:
            add("Give the opposite of the word.", f"The opposite of '{w}' is '{o}'.", w)
    for w, o in opp[50:57]:
        add_exact(f"What is the opposite of '{w}'?", o)

    # Capitals: training asks about every country; eval items are new phrasings (the fact is learnable, the
    # question text is not seen in training).
    for country, city in CAPITALS:
        add(f"What is the capital of {country}?", city)
        if rng.random() < 0.65:
            add("Name the capital city and say one sentence about it.",
                f"The capital of {country} is {city}. It is the largest centre of government in {country}.", country)
    for country, city in rng.sample(CAPITALS, 7):
        add_exact(f"Which city is the capital of {country}? Answer with the city name only.", city)

    # Multiple choice (letter answer): disjoint questions.
    items = _mcq_items(rng)
    for q, ch, ans in items[:60]:
        add("Answer with the letter of the correct choice.", "ABCD"[ans], _mcq_block(q, ch))

    # Descriptions (long answers): training subjects and held-out subjects are disjoint.
    subjects = sorted(SUBJECTS)
    rng.shuffle(subjects)
    train_subj, eval_subj = subjects[:26], subjects[26:]
    for s in train_subj:
        add(rng.choice(["Describe {a}.", "Tell me about the {s}.", "Write a short paragraph about {a}."]).format(s=s, a=_a(s)),
            _describe(rng, s))
        if rng.random() < 0.6:
            add("List three facts about the given subject.", _facts(s), s)
        if rng.random() < 0.5:
            add(f"Describe {_a(s)} in one sentence.", _summary(s))
    for a, b in zip(train_subj[0::2], train_subj[1::2]):
        add(f"Compare {_a(a)} and {_a(b)}.", _compare(a, b))

    # Open-ended held-out questions with reference answers (1 or 2 turns).
    open_rows: list[dict] = []
    for s in eval_subj:
        open_rows.append({"category": "describe", "turns": [f"Describe {_a(s)}."], "reference": [_describe(rng, s)]})
        open_rows.append({"category": "describe", "turns": [f"Tell me about the {s}.", "Now say it in one sentence."],
                          "reference": [_describe(rng, s), _summary(s)]})
        open_rows.append({"category": "facts", "turns": [f"List three facts about {_a(s)}."], "reference": [_facts(s)]})
    for a, b in zip(eval_subj[0::2], eval_subj[1::2]):
        open_rows.append({"category": "compare", "turns": [f"Compare {_a(a)} and {_a(b)}.", f"Which of the two is {SUBJECTS[a][3]}?"],
                          "reference": [_compare(a, b), f"The {a} is usually called {SUBJECTS[a][3]}."]})
    open_rows = [{"id": f"open-{i:03d}", **r} for i, r in enumerate(open_rows)]

    rng.shuffle(train)
    for i, row in enumerate(train):
        row["id"] = f"toy-{i:04d}"

    # Recall of trained facts (own generator: the training rows and the held-out draws above stay as they were).
    mcq, recall = _recall_sets(random.Random(seed + 1), train)
    exact = [{"id": f"exact-{i:03d}", "question": r["question"], "answer": r["answer"]}
             for i, r in enumerate(recall + exact[:20])]

    return {"train": train, "open": open_rows, "mcq": mcq, "exact": exact, "corpus": _corpus(rng, train, open_rows, mcq, exact)}


def _recall_sets(rng: random.Random, train: list[dict]) -> tuple[list[dict], list[dict]]:
    """Facts the training rows state, in their phrasing: 40 four-option items (every capital question, then
    opposites), and 20 short-answer items (10 capitals, 10 opposites)."""
    facts = {"capital": [], "opposite": []}
    for r in train:
        if not r["input"] and r["instruction"].startswith(("What is the capital of ", "What is the opposite of ")):
            facts["capital" if "capital" in r["instruction"] else "opposite"].append((r["instruction"], r["output"]))
    for kind in facts:
        facts[kind].sort()
        rng.shuffle(facts[kind])
    mcq = []
    for kind in ("capital", "opposite"):
        answers = sorted({a for _, a in facts[kind]})
        for q, a in facts[kind]:
            choices = rng.sample([x for x in answers if x != a], 3) + [a]
            rng.shuffle(choices)
            mcq.append({"question": q, "choices": choices, "answer": choices.index(a)})
    mcq = mcq[:40]
    rng.shuffle(mcq)
    mcq = [{"id": f"mcq-{i:03d}", **r} for i, r in enumerate(mcq)]
    exact = [{"question": q, "answer": a} for kind in ("capital", "opposite") for q, a in facts[kind][-10:]]
    rng.shuffle(exact)
    return mcq, exact


def _corpus(rng: random.Random, train, open_rows, mcq, exact) -> list[str]:
    lines = []
    for r in train:
        lines += [r["instruction"], r["input"], r["output"]]
    for r in open_rows:
        lines += r["turns"] + r["reference"]
    for r in mcq:
        lines.append(_mcq_block(r["question"], r["choices"]).replace("\n", " "))
    for r in exact:
        lines += [r["question"], r["answer"]]
    # Generic English, combinatorial: common function words and chat phrasing get their own merges.
    subj = ["The teacher", "My friend", "A small child", "The old man", "Our neighbour", "The student", "She", "He",
            "We", "They", "I", "You", "The team", "A farmer", "The doctor"]
    verb = ["likes", "wants", "finds", "reads about", "talks about", "writes about", "looks at", "thinks about",
            "asks about", "learns about"]
    obj = ["the weather", "a new book", "the city", "the river", "good food", "the history of the town",
           "an interesting question", "the answer", "the next step", "a simple plan", "the animals", "the music"]
    when = ["every morning", "in the evening", "on weekends", "after school", "before dinner", "today",
            "last year", "this week", "from time to time", "when it rains"]
    for _ in range(320):
        lines.append(f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)} {rng.choice(when)}.")
    chat = ["Hello! How can I help you today?", "Thank you for your question.", "I am not sure, but I will try.",
            "Here is the answer.", "Please explain your reasoning step by step.", "Is there anything else?",
            "The answer is", "Let me think about this.", "That is a good question.", "You are a helpful assistant."]
    lines += chat * 3
    # Chat-template scaffolding (role names, Alpaca headers) is in every training sequence: give it merges.
    scaffold = ["system", "user", "assistant", "### Instruction:", "### Input:", "### Response:",
                "Below is an instruction that describes a task. Write a response that appropriately completes the request."]
    lines += scaffold * 20
    return [ln for ln in lines if ln]


def write_assets(out_dir: str | Path | None = None, seed: int = SEED) -> list[Path]:
    """Generate and (atomically) write every toy file, into ``out_dir`` when given, else each where it ships
    (:data:`FILES`); returns the paths."""
    data = generate(seed)

    def jsonl(rows):
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    texts = {
        "toy_train.jsonl": jsonl(data["train"]),
        "toy_open.jsonl": jsonl(data["open"]),
        "toy_mcq.jsonl": jsonl(data["mcq"]),
        "toy_exact.jsonl": jsonl(data["exact"]),
        "corpus.txt": "\n".join(data["corpus"]) + "\n",
    }
    paths = []
    for name, text in texts.items():
        path = (Path(out_dir) if out_dir is not None else FILES[name]) / name
        write_text(path, text)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_assets():
        print(f"{p}  {p.stat().st_size / 1024:.1f} KB")
