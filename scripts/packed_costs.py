"""What a batched round's forwards cost in the padded and the packed layout, for the uneven drafts a batch makes.

The batched engine can lay a batch out two ways (`EntropyConfig.batch_layout`, `entspec.engine.batch_kv`):
"padded", a [B, W] forward padded to the longest row, and "packed", every row's tokens back to back in one sequence
with a 4D mask. For the pair's verifier: one call over B rows whose drafts have the given lengths (each row verifies
its pending token and its draft), after ~C cached tokens per row of different text; for its drafter: one step in
which m of the B rows still draft. Each point alternates the two layouts (median of a few calls after a warm-up), so
the ratio is measured side by side. With ``--token-counts``, instead: one packed verifier forward of exactly N
tokens (no `bucket`) for each N, the curve `bucket` was chosen from.

    .venv/bin/python scripts/packed_costs.py --dtype float32 --drafter-quantization int8 --threads 2 --out runs/packed-costs.csv
    .venv/bin/python scripts/packed_costs.py --dtype float32 --drafter-quantization int8 --threads 2 --token-counts 33 --out runs/packed-tokens.csv
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch

from entspec.atomic import atomic_write_text
from entspec.engine.batch_kv import BatchCache, PackedBatchCache, bucket
from entspec.models import load_model_pair

# Draft lengths per row of one round: even ones (where packing can only add its overhead) and the uneven ones
# per-row stopping makes.
MIXES = {4: [(0, 0, 0, 0), (3, 3, 3, 3), (7, 7, 7, 7), (7, 1, 1, 1), (7, 3, 1, 0), (5, 3, 2, 1), (4, 4, 0, 0)],
         8: [(0,) * 8, (3,) * 8, (7, 1, 1, 1, 1, 1, 1, 1), (7, 5, 3, 3, 2, 1, 1, 0)]}


def caches(model, rows: int, cached: int) -> dict[str, BatchCache | PackedBatchCache]:
    """Both layouts with ``cached`` tokens of different text in each of ``rows`` rows."""
    out = {}
    for name, layout in (("padded", BatchCache), ("packed", PackedBatchCache)):
        cache = layout(model)
        cache.reset(rows)
        cache.feed([list(range(100 + 7 * i, 100 + 7 * i + cached)) for i in range(rows)], "left", logits_to_keep=1)
        out[name] = cache
    return out


def timed(cache, segments: list[list[int]], align: str, keep: int | None, cached: int, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        cache.feed(segments, align, logits_to_keep=keep)
        times.append(time.perf_counter() - start)
        cache.rollback([cached] * len(segments))
    return times


def measure(model, rows: int, cached: int, reps: int, rounds: list[tuple[str, list[list[int]], str, int | None]]):
    pair = caches(model, rows, cached)
    out = []
    for label, segments, align, keep in rounds:
        seconds = {name: [] for name in pair}
        for name, cache in pair.items():  # warm-up
            timed(cache, segments, align, keep, cached, 1)
        for _ in range(reps):  # alternate, so drift hits both layouts alike
            for name, cache in pair.items():
                seconds[name] += timed(cache, segments, align, keep, cached, 1)
        padded, packed = (statistics.median(seconds[n]) for n in ("padded", "packed"))
        out.append({"B": rows, "round": label, "tokens": sum(map(len, segments)),
                    "padded_tokens": rows * max(map(len, segments)), "padded_s": padded, "packed_s": packed,
                    "packed/padded": packed / padded})
    return out


def token_counts(model, rows: int, cached: int, reps: int, largest: int) -> list[dict]:
    """Seconds of one packed forward of exactly N tokens, spread over ``rows`` rows, for N = 1..``largest``."""
    cache = caches(model, rows, cached)["packed"]
    cache.BUCKETED = False
    out = []
    for n in range(1, largest + 1):
        segments = [[5] * (n // rows + (i < n % rows)) for i in range(rows)]
        times = timed(cache, segments, "right", None, cached, reps + 1)[1:]
        out.append({"tokens": n, "bucket": bucket(n), "seconds": statistics.median(times)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafter", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--verifier", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--drafter-quantization", default="none")
    parser.add_argument("--batch-sizes", default="4,8")
    parser.add_argument("--cached", type=int, default=128, help="cached tokens per row before the timed forward")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--token-counts", type=int, default=0, metavar="N",
                        help="instead: the verifier's packed forward over exactly 1..N tokens (4 rows cached)")
    parser.add_argument("--out", default="runs/packed-costs.csv")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pair = load_model_pair(args.drafter, args.verifier, dtype=args.dtype, drafter_quantization=args.drafter_quantization)
    if args.token_counts:
        frame = pd.DataFrame(token_counts(pair.verifier, 4, args.cached, args.reps, args.token_counts))
        frame["cost of its bucket"] = frame.bucket.map(frame.set_index("tokens").seconds)
        atomic_write_text(args.out, frame.to_csv(index=False))
        print(f"{args.dtype}, {torch.get_num_threads()} threads, 4 rows x {args.cached} cached tokens; one packed "
              f"verifier forward of exactly N tokens, median of {args.reps} calls")
        print(frame.to_string(index=False, float_format="%.3f"))
        return
    table = []
    for b in (int(x) for x in args.batch_sizes.split(",")):
        verify = [(f"verify drafts {mix}", [[5] + [6] * k for k in mix], "right", None) for mix in MIXES[b]]
        table += [{"model": "verifier", **r} for r in measure(pair.verifier, b, args.cached, args.reps, verify)]
        steps = [(f"draft step, {m} of {b} rows", [[6] if i < m else [] for i in range(b)], "left", 1)
                 for m in sorted({1, b // 2, b})]
        table += [{"model": "drafter", **r} for r in measure(pair.drafter, b, args.cached, args.reps, steps)]
    frame = pd.DataFrame(table)
    atomic_write_text(args.out, frame.to_csv(index=False))
    print(f"{args.dtype}, drafter quantization {args.drafter_quantization}, {torch.get_num_threads()} threads, "
          f"{args.cached} cached tokens per row; seconds are medians of {args.reps} alternating calls")
    print(frame.to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
