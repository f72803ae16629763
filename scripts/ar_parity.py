"""Is entspec's autoregressive loop as fast as Hugging Face `generate`? Both engines, one model, interleaved.

Plain greedy decoding of the verifier by both engines on the same prompts (``ignore_eos``, so both emit the
same number of tokens), alternating which engine goes first on every (prompt, repetition), so that drift of
the machine falls on both alike. Prints ms per token of each and the ratio of mean tokens/s with a paired
bootstrap CI over (prompt, repetition) pairs (issue 10's target: entspec autoregressive >= 1.00x HF generate).

    .venv/bin/python scripts/ar_parity.py --prompts 6 --max-new-tokens 64 --reps 2
"""

from __future__ import annotations

import argparse

import numpy as np

from entspec import EntropyBasedSpeculativeDecoder
from entspec.data import load_prompts
from entspec.experiment.hf_baselines import hf_generate
from entspec.metrics.aggregate import paired_bootstrap_ci
from entspec.metrics.compare import ratio_of_means
from entspec.models import encode_prompt, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--dataset", default="spec6")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--prompt-seed", type=int, default=1, help="spec6 benches draw with seed 0; 1 gives others")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()

    model, tokenizer = load_model(args.model, dtype=args.dtype, device="cpu", progress=False)
    prompts = load_prompts(args.dataset, num_samples=args.prompts, seed=args.prompt_seed)
    decoder = EntropyBasedSpeculativeDecoder.autoregressive(model)
    n = args.max_new_tokens
    engines = {
        "hf_generate": lambda ids: hf_generate(model, ids, max_new_tokens=n, ignore_eos=True),
        "entspec_autoregressive": lambda ids: decoder.generate(ids, max_new_tokens=n, ignore_eos=True),
    }
    for run in engines.values():  # first calls pay one-time costs
        run(encode_prompt(tokenizer, prompts[0].messages or prompts[0].text))

    speed: dict[str, list[float]] = {name: [] for name in engines}
    print("| prompt | rep | first | HF generate ms/token | entspec AR ms/token |")
    print("|---|---|---|---|---|")
    for i, prompt in enumerate(prompts):
        ids = encode_prompt(tokenizer, prompt.messages or prompt.text)
        for rep in range(args.reps):
            order = list(engines) if (i + rep) % 2 == 0 else list(engines)[::-1]
            ms = {}
            for name in order:
                result = engines[name](ids)
                speed[name].append(len(result.new_tokens) / result.wall_time_s)
                ms[name] = 1e3 * result.wall_time_s / len(result.new_tokens)
            print(f"| {prompt.id} | {rep} | {order[0]} | {ms['hf_generate']:.1f} | {ms['entspec_autoregressive']:.1f} |",
                  flush=True)
    ours, theirs = np.array(speed["entspec_autoregressive"]), np.array(speed["hf_generate"])
    low, high = paired_bootstrap_ci([ours, theirs], ratio_of_means)
    print(f"\nentspec autoregressive / HF generate (ratio of mean tokens/s, prefill included): "
          f"{float(ratio_of_means(ours, theirs)):.3f}x [{low:.3f}, {high:.3f}] over {len(ours)} pairs; "
          f"{args.max_new_tokens} tokens, {args.dtype}")


if __name__ == "__main__":
    main()
