#!/usr/bin/env python
"""The int8 drafter options on CPU: per-call CPU work, c, and acceptance against the verifier.

Part 1 (work): `time.thread_time()` per cached forward on one thread (robust while other jobs share the
machine), context 300, median of 6 after one warm-up: the drafter as loaded, int8 weight-only and int8
dynamic, and the verifier over 1 / 5 / 9 tokens. Part 2 (acceptance, ``--acceptance``): greedy entspec with
each drafter against the same verifier on `mix` prompts; prints acceptance, tokens per verifier call and
whether the tokens are identical (they must be: the verifier decides).

    .venv/bin/python scripts/drafter_quant_costs.py [--acceptance] [--prompts 6] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.engine.kv import CachedModel
from entspec.models import encode_prompt, load_model_pair
from entspec.models.quantize import quantize_drafter


def work(pair, context: int = 300, reps: int = 7) -> None:
    torch.set_num_threads(1)
    d = pair.drafter
    models = {"drafter as loaded": d,
              "drafter int8-weight-only": quantize_drafter(copy.deepcopy(d), "int8-weight-only"),
              "drafter int8-dynamic": quantize_drafter(copy.deepcopy(d), "int8-dynamic"),
              "verifier": pair.verifier}
    prompt = torch.randint(100, 5000, (1, context))
    lms = {k: CachedModel(m) for k, m in models.items()}
    for lm in lms.values():
        lm.prefill(prompt)
    ns = {k: ([1, 5, 9] if k == "verifier" else [1]) for k in lms}
    times = {(k, n): [] for k in lms for n in ns[k]}
    tokens = torch.randint(100, 5000, (1, 9))
    for _ in range(reps):  # interleaved, so a noisy moment hits every model alike
        for k, lm in lms.items():
            for n in ns[k]:
                length = len(lm)
                start = time.thread_time()
                lm.forward(tokens[:, :n], n)
                times[(k, n)].append(time.thread_time() - start)
                lm.crop(length)
    med = {key: statistics.median(v[1:]) for key, v in times.items()}
    for (k, n), v in med.items():
        print(f"{k:28s} n={n}: {v * 1000:7.1f} ms CPU work")
    for k in lms:
        if k != "verifier":
            print(f"c({k}) = {med[(k, 1)] / med[('verifier', 1)]:.3f} (n=1), "
                  f"{med[(k, 1)] / med[('verifier', 9)]:.3f} (n=9)")


def acceptance(pair, prompts: int, new_tokens: int = 48) -> None:
    from entspec.data import load_prompts

    drafters = {"as loaded": pair.drafter,
                "int8-weight-only": quantize_drafter(copy.deepcopy(pair.drafter), "int8-weight-only"),
                "int8-dynamic": quantize_drafter(copy.deepcopy(pair.drafter), "int8-dynamic")}
    cfg = EntropyConfig(strategy="absolute", theta_abs=1.0, max_draft_len=20)
    totals = {k: dict(accepted=0, drafted=0, rounds=0, tokens=[]) for k in drafters}
    for p in load_prompts("mix", split="test", num_samples=prompts, seed=4):
        ids = encode_prompt(pair.tokenizer, p.messages or p.text)
        for name, drafter in drafters.items():
            res = EntropyBasedSpeculativeDecoder(drafter, pair.verifier, cfg).generate(ids, max_new_tokens=new_tokens)
            t = totals[name]
            t["accepted"] += sum(r.accepted for r in res.rounds)
            t["drafted"] += sum(r.drafted for r in res.rounds)
            t["rounds"] += len(res.rounds)
            t["tokens"].append(res.new_tokens)
    for name, t in totals.items():
        print(f"{name:18s} acceptance {t['accepted'] / t['drafted']:.3f} ({t['accepted']}/{t['drafted']}), "
              f"tokens / verifier call {sum(map(len, t['tokens'])) / t['rounds']:.2f}, "
              f"same tokens as the drafter as loaded: {t['tokens'] == totals['as loaded']['tokens']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--acceptance", action="store_true", help="also run part 2 (minutes per prompt on 2 cores)")
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--dtype", default="bfloat16")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    pair = load_model_pair("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", dtype=args.dtype,
                           device="cpu", progress=False)
    work(pair)
    if args.acceptance:
        torch.set_num_threads(2)
        acceptance(pair, args.prompts)


if __name__ == "__main__":
    main()
