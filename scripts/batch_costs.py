"""What one forward costs against batch size and tokens per row, on this machine (the batched engine's costs).

For the verifier and the drafter of a pair: the time of one forward of B rows x k new tokens after ~C cached
tokens per row, relative to B = 1 x 1 token, through the same `BatchCache` the batched engine uses (mask,
per-row position ids). Median of a few repetitions after one warm-up call.

    .venv/bin/python scripts/batch_costs.py --dtype float32 --batch-sizes 1,4,8 --tokens 1,4,8 --out runs/batch-costs.csv
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch

from entspec.atomic import atomic_write_text
from entspec.engine.batch_kv import BatchCache
from entspec.models import load_model_pair


def forward_seconds(model, rows: int, token_counts: list[int], cached: int, reps: int) -> dict[int, float]:
    """Median seconds of one forward of ``rows`` x k new tokens after ``cached`` cached tokens per row, for each k
    (one prefill; each timed forward is rolled back before the next)."""
    cache = BatchCache(model)
    cache.reset(rows)
    cache.feed([list(range(100, 100 + cached))] * rows, "left", logits_to_keep=1)
    out = {}
    for k in token_counts:
        times = []
        for _ in range(reps + 1):  # the first call warms up
            start = time.perf_counter()
            cache.feed([list(range(200, 200 + k))] * rows, "right")
            times.append(time.perf_counter() - start)
            cache.rollback([cached] * rows)
        out[k] = statistics.median(times[1:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafter", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--verifier", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--drafter-quantization", default="none")
    parser.add_argument("--cpu-linear", default="auto", choices=["auto", "weight-major", "torch"],
                        help="the Linear product's layout on CPU (entspec.models.cpu_linear)")
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--tokens", default="1,4,8")
    parser.add_argument("--cached", type=int, default=128, help="cached tokens per row before the timed forward")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/batch-costs.csv")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pair = load_model_pair(args.drafter, args.verifier, dtype=args.dtype, drafter_quantization=args.drafter_quantization,
                           cpu_linear=args.cpu_linear)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    tokens = [int(k) for k in args.tokens.split(",")]
    rows = []
    for role, model, ks in (("verifier", pair.verifier, tokens), ("drafter", pair.drafter, [1])):
        for b in sizes:
            for k, seconds in forward_seconds(model, b, ks, args.cached, args.reps).items():
                rows.append({"model": role, "B": b, "tokens_per_row": k, "seconds": seconds})
    table = pd.DataFrame(rows)
    unit = table[(table.B == 1) & (table.tokens_per_row == 1)].set_index("model").seconds
    table["relative_to_1x1"] = table.seconds / table.model.map(unit)
    atomic_write_text(args.out, table.to_csv(index=False))
    print(f"{args.dtype}, drafter quantization {args.drafter_quantization}, cpu_linear {args.cpu_linear}, "
          f"{args.cached} cached tokens per row")
    print(table.to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
