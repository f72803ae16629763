"""Where a method's greedy output parts from HF `generate`'s in a bench folder, and whether the verifier's own logits
decide it: for every row whose tokens differ from the baseline's on the same prompt, the first differing position,
the two tokens, and the verifier's logits for both there (one forward over the prompt and the baseline's prefix, in
the folder's dtype), with their gap in units of the dtype's spacing at that magnitude (ulp).

In float32 every entspec method equals the verifier's greedy output token for token (the test suite checks it). In
bfloat16 a verifier call that scores several positions at once rounds differently from one that scores one, so at
a near-tie (a gap of about one bf16 ulp, 0.0625 at logits 8-16) either token can come out: a gap of a few ulp or
less is the dtype, a larger one would be a bug.

    .venv/bin/python scripts/output_divergence.py runs/bench-long-bf16/bfloat16
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from entspec.experiment import ExperimentConfig, ExperimentRunner
from entspec.metrics import load_rows

BASELINE = "hf_generate"


def ulp(value: float, dtype: torch.dtype) -> float:
    """The spacing of ``dtype`` at ``value``."""
    return torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(max(abs(value), torch.finfo(dtype).tiny)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a bench dtype folder (with configs/experiment.yaml and results/)")
    args = parser.parse_args()
    folder = Path(args.folder)
    rows = load_rows(folder / "results" / "results.jsonl")
    reference = {r.prompt_id: list(r.result.new_tokens) for r in rows if r.method == BASELINE}
    parted = []
    for r in rows:
        mine, theirs = list(r.result.new_tokens), reference.get(r.prompt_id)
        if theirs is None or mine == theirs:
            continue
        at = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), None)
        if at is not None:
            parted.append((r, at, theirs))
    print(f"{len(parted)} of {sum(r.method != BASELINE for r in rows)} rows part from {BASELINE}'s output")
    if not parted:
        return
    runner = ExperimentRunner(ExperimentConfig.from_yaml(folder / "configs" / "experiment.yaml"), progress=False)
    runner.prompts = runner.load_prompts()
    runner.load()
    verifier = runner.pair.verifier
    dtype = next(verifier.parameters()).dtype
    index = {p.id: i for i, p in enumerate(runner.prompts)}
    widest = 0.0
    print("| method | prompt | position | baseline token (logit) | method token (logit) | gap (ulp) |")
    print("|---|---|---|---|---|---|")
    for r, at, theirs in parted:
        prefix = torch.cat([runner.encoded[index[r.prompt_id]], torch.tensor([theirs[:at]])], dim=1)
        with torch.inference_mode():
            logits = verifier(prefix.to(verifier.device), logits_to_keep=1).logits[0, -1].to(dtype).float()
        a, b = float(logits[theirs[at]]), float(logits[r.result.new_tokens[at]])
        gap = abs(a - b) / ulp(max(abs(a), abs(b)), dtype)
        widest = max(widest, gap)
        print(f"| {r.method} | {r.prompt_id} | {at} | {theirs[at]} ({a:.4f}) | {r.result.new_tokens[at]} ({b:.4f}) | "
              f"{gap:.1f} |")
    print(f"widest gap: {widest:.1f} ulp of {str(dtype).replace('torch.', '')}")


if __name__ == "__main__":
    main()
