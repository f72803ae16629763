"""Wall time of one small tiny-model experiment: local executor vs 1 vs 2 Ray workers (docs/cluster.md).

    .venv/bin/python scripts/ray_workers.py [--prompts 12] [--tokens 64] [--workers 1 2]

Builds the tests' tiny random pair in a temporary folder (no download), writes one config, and times
``entspec run CONFIG --no-analysis`` end to end (Python start, Ray start, workers loading the pair, the
units) in a fresh output folder per executor. Each run's rows are checked: every unit exactly once, and
the same tokens as the local executor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    from tiny import save_tiny_pair

    root = Path(tempfile.mkdtemp(prefix="ray_workers_"))
    drafter, verifier = save_tiny_pair(root / "pair")
    config = {"drafter_model_path": drafter, "verifier_model_path": verifier, "dataset_name": "mix",
              "num_samples": args.prompts, "max_new_tokens": args.tokens, "max_sequence_length": 256,
              "temperature": 0.7, "seeds": [0, 1], "baselines": False, "warmup_tokens": 4, "threads": 1,
              "experiment_name": "ray_workers", "output_dir": str(root / "out"),
              "grid": {"base": {"max_draft_len": 6}, "axes": {"strategy": ["absolute", "adaptive"],
                                                              "theta_abs": [1.0, 2.0]}}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    load = os.getloadavg()
    runs = [("local", [])] + [(f"ray x{n}", ["--executor", "ray", "--workers", str(n)]) for n in args.workers]
    tokens = {}
    for name, flags in runs:
        out = root / name.replace(" ", "_")
        cmd = [sys.executable, "-m", "entspec", "run", str(path), "--no-analysis", "--set", f"output_dir={out}",
               *flags]
        results = out / "results" / "results.jsonl"
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not (results.exists() and results.stat().st_size):
            time.sleep(0.01)
        first_row = time.perf_counter() - started  # start-up: Python, Ray, workers loading the pair
        if proc.wait() != 0:
            raise SystemExit(f"{name}: {' '.join(cmd)} failed")
        wall = time.perf_counter() - started
        rows = [json.loads(line) for line in results.read_text().splitlines()]
        got = {r["unit_key"]: r["result"]["new_tokens"] for r in rows}
        assert len(got) == len(rows), f"{name}: a unit written twice"
        tokens.setdefault("local", got)
        same = got == tokens["local"]
        unit_s = sum(r["result"]["wall_time_s"] for r in rows)
        print(f"{name:8s} {len(rows)} rows | wall {wall:5.1f} s = start-up to first row {first_row:4.1f} s + rows "
              f"{wall - first_row:5.1f} s | generation time summed over rows {unit_s:5.1f} s | tokens as local: "
              f"{same}", flush=True)
    print(f"load average before: {load}; after: {os.getloadavg()}")
    print(f"command: {' '.join(cmd[1:3])} run CONFIG --no-analysis [--executor ray --workers N]; folder {root}")


if __name__ == "__main__":
    main()
