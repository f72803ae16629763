"""How fast is replay? Times N rule configurations (every registered sweep, cycled) over the traces of a folder.

    .venv/bin/python scripts/replay_speed.py runs/tune/traces --configs 1000 --prompts 12

Prints configurations, prompts, output tokens, seconds and replays per second (issue 9's target: 1,000
configurations over 12 prompts x 64 tokens in under 60 s on the 2-core CPU).
"""

from __future__ import annotations

import argparse
import itertools
import time

from entspec.engine.config import EntropyConfig
from entspec.replay.engine import replay
from entspec.replay.record import load_cost_model
from entspec.replay.trace import load_traces
from entspec.replay.tune import configurations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces")
    parser.add_argument("--configs", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=12)
    args = parser.parse_args()
    traces = load_traces(args.traces)[: args.prompts]
    cost = load_cost_model(args.traces)
    cap = min(t.meta.cap for t in traces)
    configs = [EntropyConfig(**c) for c in itertools.islice(itertools.cycle(configurations(cap, {})), args.configs)]
    started = time.perf_counter()
    for cfg in configs:
        for trace in traces:
            replay(trace, cfg, cost)
    seconds = time.perf_counter() - started
    tokens = sum(len(t) for t in traces)
    print(f"{len(configs)} configurations x {len(traces)} prompts ({tokens} output tokens): {seconds:.1f} s, "
          f"{len(configs) * len(traces) / seconds:.0f} replays/s")


if __name__ == "__main__":
    main()
