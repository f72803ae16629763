"""A small but real experiment folder for the analysis tests, built with tiny random models.

``build_experiment(root)`` writes ``root/configs/{experiment.yaml, manifest.json}`` and
``root/results/results.jsonl`` in the ExperimentRunner's layout: 6 prompts in 2 categories, greedy, one seed,
and the methods a real sweep has: both baselines (``hf_generate``, ``autoregressive``), HF assisted generation
with its defaults, fixed k = 2 and 4, absolute entropy at three thresholds, adaptive and relative.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
import yaml

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.experiment.hf_baselines import hf_generate
from entspec.records import ResultRow, append_jsonl
from tiny import perturbed, tiny_llama

GENERATION = dict(max_new_tokens=24, temperature=0.0, top_k=None, top_p=None, dtype="float32", device="cpu")
CATEGORIES = ("code", "chat")

# method id -> (method_kind, EntropyConfig overrides or hf kwargs)
ENTSPEC_METHODS = {
    "fixed[max_draft_len=2]": dict(strategy="fixed", max_draft_len=2),
    "fixed[max_draft_len=4]": dict(strategy="fixed", max_draft_len=4),
    "absolute[theta_abs=0.5]": dict(strategy="absolute", theta_abs=0.5, max_draft_len=6),
    "absolute[theta_abs=1.5]": dict(strategy="absolute", theta_abs=1.5, max_draft_len=6),
    "absolute[theta_abs=3]": dict(strategy="absolute", theta_abs=3.0, max_draft_len=6),
    "adaptive[theta_abs=1.5]": dict(strategy="adaptive", theta_abs=1.5, max_draft_len=6),
    "relative[theta_rel=1.5]": dict(strategy="relative", theta_rel=1.5, max_draft_len=6),
}


def _prompts(n: int, vocab: int) -> list[tuple[str, str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(123)
    out = []
    for i in range(n):
        ids = torch.randint(1, vocab, (1, 6 + i), generator=gen)
        out.append((f"p{i}", CATEGORIES[i % len(CATEGORIES)], ids))
    return out


def build_experiment(root: str | Path, n_prompts: int = 6, seeds: tuple[int, ...] = (0,),
                     entspec_methods: dict | None = None,
                     baselines: tuple[str, ...] = ("hf_generate", "autoregressive", "hf_assisted")) -> Path:
    """Write a finished experiment folder under ``root`` and return it.

    ``entspec_methods``: method id -> EntropyConfig overrides (default :data:`ENTSPEC_METHODS`);
    ``baselines``: which of hf_generate, autoregressive and hf_assisted (defaults) to run.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest
    try:
        return _build(Path(root), n_prompts, seeds, ENTSPEC_METHODS if entspec_methods is None else entspec_methods,
                      baselines)
    finally:
        torch.set_num_threads(threads)


def _build(root: Path, n_prompts: int, seeds: tuple[int, ...], entspec_methods: dict,
           baselines: tuple[str, ...]) -> Path:
    verifier = tiny_llama(seed=0, vocab=64, sharpness=40.0)
    drafter = perturbed(verifier, noise=0.1)
    results = root / "results" / "results.jsonl"
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "experiment.yaml").write_text(yaml.safe_dump({
        "name": "tiny-analysis-fixture", "drafter": "tiny_llama+noise0.1", "verifier": "tiny_llama(seed=0)",
        "dataset": "random-token prompts", "n_prompts": n_prompts, "seeds": list(seeds), **GENERATION,
        "methods": [b if b != "hf_assisted" else "hf_assisted[default]" for b in baselines] + list(entspec_methods),
    }))
    (root / "configs" / "manifest.json").write_text(json.dumps({
        "git_hash": "0000000", "versions": {"torch": torch.__version__}, "device": "cpu",
        "date": "2025-01-01T00:00:00", "python": sys.version.split()[0], "platform": platform.platform(),
    }))

    def write(res, method, kind, strategy, params, config, prompt_id, category, seed):
        append_jsonl(results, ResultRow(method=method, method_kind=kind, strategy=strategy, params=params,
                                        prompt_id=prompt_id, category=category, seed=seed,
                                        config={**config, **GENERATION}, result=res,
                                        unit_key=f"{method}|{prompt_id}|{seed}"))

    decoders = {m: EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(**kw))
                for m, kw in entspec_methods.items()}
    autoregressive = EntropyBasedSpeculativeDecoder.autoregressive(verifier)
    gen = dict(max_new_tokens=GENERATION["max_new_tokens"], temperature=0.0)
    for prompt_id, category, ids in _prompts(n_prompts, 64):
        for seed in seeds:
            keys = dict(prompt_id=prompt_id, category=category, seed=seed)
            if "hf_generate" in baselines:
                write(hf_generate(verifier, ids, seed=seed, **gen), "hf_generate", "hf_generate", "hf_generate",
                      {}, {}, **keys)
            if "autoregressive" in baselines:
                write(autoregressive.generate(ids, seed=seed, **gen), "autoregressive", "autoregressive",
                      "autoregressive", {}, {}, **keys)
            if "hf_assisted" in baselines:
                write(hf_generate(verifier, ids, drafter=drafter, seed=seed, **gen), "hf_assisted[default]",
                      "hf_assisted", "hf_assisted", {}, {"num_assistant_tokens": "default"}, **keys)
            for method, dec in decoders.items():
                write(dec.generate(ids, seed=seed, **gen), method, "entspec", dec.config.strategy,
                      entspec_methods[method], dec.config.to_dict(), **keys)
    return root
