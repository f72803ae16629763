"""One method against another in the same `entspec bench` run, paired by prompt (and seed).

The bench's tables give every method over HF `generate`; this gives method A over method B directly (e.g. settings
tuned at the temperature of the run against greedy-tuned ones): ratio of mean tokens/s with the paired bootstrap
95% CI and the Wilcoxon signed-rank test, overall and per category (`ComparativeEvaluator.summary`).

    .venv/bin/python scripts/bench_pair.py runs/bench-sampling-int8-t07/float32 \\
        "svip[max_draft_len=8,svip_threshold=0.15]" "svip[max_draft_len=8,svip_threshold=0.5]"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from entspec.metrics import load_rows
from entspec.metrics.evaluators import ComparativeEvaluator

COLUMNS = ["category", "n_pairs", "mean_tokens_per_s", "mean_baseline_tokens_per_s", "speedup", "speedup_ci_low",
           "speedup_ci_high", "wilcoxon_p"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="an experiment folder (a bench run's OUT/DTYPE) with results/results.jsonl")
    parser.add_argument("method", help="method id of the numerator (as in the bench's tables)")
    parser.add_argument("baseline", help="method id of the denominator")
    args = parser.parse_args()
    path = Path(args.experiment) / "results" / "results.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no results (give the experiment folder, e.g. OUT/float32)")
    rows = load_rows(path)
    sides = {name: [r for r in rows if r.method == name] for name in (args.method, args.baseline)}
    for name, side in sides.items():
        if not side:
            raise SystemExit(f"{path}: no rows of method {name!r} (methods: {', '.join(sorted({r.method for r in rows}))})")
    table = ComparativeEvaluator(sides[args.method], sides[args.baseline]).summary(n_resamples=2000)
    print(f"{args.method} over {args.baseline}, paired by prompt and seed ({path})")
    print(table[COLUMNS].to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
