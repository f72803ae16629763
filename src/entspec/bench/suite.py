"""The benchmark suite: entspec vs plain decoding vs Hugging Face assisted generation, one run per dtype.

Each dtype is one `ExperimentConfig` run by the `ExperimentRunner` (methods interleaved per prompt after a
warm-up, every generation a JSONL row), so a benchmark is resumable and analyzable like any experiment.
"""

from __future__ import annotations

from typing import Any

from ..experiment import ExperimentConfig



def bench_methods(preset: str) -> list[dict[str, Any]]:
    """Methods besides the baselines (HF generate, entspec autoregressive, HF assisted defaults).

    ``full``: the exploration grid (fixed k = 1..8, HF constant k, entropy rules at a few thresholds);
    ``reduced``: a few of each; ``confirm``: the settings chosen on the exploration run, to be measured again
    on prompts that run did not see.
    """
    if preset == "confirm":
        return [
            {"strategy": "fixed", "max_draft_len": 7},
            {"kind": "hf_assisted", "num_assistant_tokens": 6, "confidence_threshold": 0.0},
            {"strategy": "absolute", "theta_abs": [0.5, 1.0], "max_draft_len": 20},
            {"strategy": "adaptive", "theta_abs": 1.0, "max_draft_len": 20},
            {"strategy": "svip", "max_draft_len": 20},
        ]
    if preset == "full":
        return [
            {"kind": "hf_assisted", "num_assistant_tokens": [2, 4, 6], "confidence_threshold": 0.0},
            {"strategy": "fixed", "max_draft_len": [1, 2, 3, 4, 5, 6, 7, 8]},
            {"strategy": "absolute", "theta_abs": [1.0, 2.0, 3.0], "max_draft_len": 12},
            {"strategy": "adaptive", "theta_abs": 2.0, "max_draft_len": 12},
            {"strategy": "window", "theta_abs": 1.5, "window_size": 3, "max_draft_len": 12},
            {"strategy": "svip", "max_draft_len": 12},
            {"strategy": "adaedl", "max_draft_len": 12},
        ]
    return [
        {"kind": "hf_assisted", "num_assistant_tokens": 4, "confidence_threshold": 0.0},
        {"strategy": "fixed", "max_draft_len": [2, 4, 6]},
        {"strategy": "absolute", "theta_abs": 2.0, "max_draft_len": 12},
        {"strategy": "adaptive", "theta_abs": 2.0, "max_draft_len": 12},
    ]


def tuned_methods(path: str) -> list[dict[str, Any]]:
    """The ``methods`` of an experiment config (`entspec tune` writes one: best fixed k and the best rules)."""
    methods = ExperimentConfig.from_yaml(path).methods
    if not methods:
        raise ValueError(f"{path}: methods: the config declares no methods")
    return methods


TUNED_SETTING = ("drafter_model_path", "verifier_model_path", "dtype", "drafter_quantization", "temperature", "top_p",
                 "top_k", "batch_size")


def setting_mismatches(methods_from: str, run: ExperimentConfig) -> list[str]:
    """Where the setting ``methods_from`` declares (the one its methods were tuned for) differs from the run's:
    ``"temperature: 0.0 in FILE, 0.7 here"`` per field. Settings tuned for one drafter, dtype, temperature or batch
    size are no evidence for another, so the bench says so in its report rather than timing them without a word.
    top-p and top-k count only when sampling; a file's ``dtype: auto`` matches any dtype."""
    tuned = ExperimentConfig.from_yaml(methods_from)
    out = []
    for name in TUNED_SETTING:
        theirs, mine = getattr(tuned, name), getattr(run, name)
        if name in ("top_p", "top_k"):
            theirs, mine = (theirs if tuned.temperature else None), (mine if run.temperature else None)
        if theirs != mine and not (name == "dtype" and theirs == "auto"):
            out.append(f"{name}: {theirs} in {methods_from}, {mine} here")
    return out


def bench_config(dtype: str, *, prompts_per_category: int, max_new_tokens: int, preset: str, output_dir: str,
                 drafter: str, verifier: str, threads: int | None = None, prompt_seed: int = 0,
                 methods_from: str | None = None, dataset: str = "mix", categories: int = 3,
                 temperature: float = 0.0, top_p: float | None = None, seeds: int = 1,
                 ignore_eos: bool = False, drafter_quantization: str = "none", kv_cache: str = "dynamic",
                 compile: bool | str = False, only_categories: list[str] | None = None,
                 batch_size: int = 1, cpu_linear: str = "auto") -> ExperimentConfig:
    """One benchmark run. Sampling (``temperature > 0``) runs ``seeds`` seeds per prompt, paired across methods;
    the first seed also draws the prompts (``prompt_seed``). Above ``batch_size`` 1 the hf_assisted methods are
    left out (transformers decodes assisted generation one sequence at a time)."""
    tuned = ExperimentConfig.from_yaml(methods_from) if methods_from else None  # every dtype of the run
    methods = tuned_methods(methods_from) if tuned else bench_methods(preset)
    if batch_size > 1:
        methods = [m for m in methods if m.get("kind") != "hf_assisted"]
    return ExperimentConfig(
        experiment_name=f"bench-{dtype}",
        drafter_model_path=drafter,
        verifier_model_path=verifier,
        dataset_name=dataset,  # mix: code (HumanEval), math (GSM8K), chat (MT-Bench); spec6: six task types
        num_samples=categories * prompts_per_category,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p if temperature > 0 else None,
        ignore_eos=ignore_eos,
        drafter_quantization=drafter_quantization,  # every method, HF assisted included, gets the same drafter
        cpu_linear=cpu_linear,  # and the same models: the HF baselines run the same Linear layout
        kv_cache=kv_cache,
        compile=compile,
        dtype=dtype,
        output_dir=output_dir,
        methods=methods,
        seeds=[prompt_seed + i for i in range(seeds if temperature > 0 else 1)],  # greedy: one seed suffices
        baselines=True,
        analyze=False,
        threads=threads,
        exclude_prompts=tuned.exclude_prompts if tuned else None,  # never report on the tuning prompts
        categories=only_categories,
        batch_size=batch_size,
    )
