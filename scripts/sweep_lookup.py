"""How settings chosen elsewhere do on another `entspec tune` run's traces: look them up in its sweep.csv.

`entspec tune` replays every configuration of every rule's sweep on every traced prompt (``sweep.csv``). Settings
tuned for one setting (greedy, another drafter, another temperature) that lie on the same grid can be read off
another run's sweep without replaying anything: e.g. the greedy-tuned settings on the T = 0.7 traces. For each
entspec method of METHODS.yaml: speedup over plain decoding (sum of plain times / sum of the rule's times, as the
tune report's) on the tuning and held-out prompts, and per category on the held-out ones. A method is matched on
its rule parameters; the cost fields (``cost_ratio``, ``verify_curve``, ``verify_slope``) and the goodput
calibration are the sweep's own, so a rule that reads costs is priced with the costs of the traces it is looked
up on. A method that is not on the grid is listed as such.

    .venv/bin/python scripts/sweep_lookup.py runs/sampling_int8/tune/sweep.csv configs/sampling_int8_t07.yaml
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from entspec.experiment import ExperimentConfig

SWEEP_OWN = ("cost_ratio", "verify_curve", "verify_slope", "calib_intercept", "calib_slope", "calib_prob",
             "calib_curve", "next_intercept", "next_slope", "next_prob")


def rule_key(params: dict) -> str:
    return json.dumps({k: v for k, v in params.items() if k not in SWEEP_OWN}, sort_keys=True)


def lookup(sweep: pd.DataFrame, methods: list[dict]) -> pd.DataFrame:
    sweep = sweep.assign(key=[rule_key(json.loads(p)) for p in sweep.params])
    rows = []
    for method in methods:
        if method.get("kind", "entspec") != "entspec":
            continue
        key = rule_key({k: v for k, v in method.items() if k != "kind"})
        found = sweep[sweep.key == key]
        row = {"method": key}
        if found.empty:
            rows.append({**row, "note": "not on the sweep's grid"})
            continue
        for split, part in found.groupby("split"):
            row[f"{split} speedup"] = part.plain_time_s.sum() / part.time_s.sum()
        held = found[found.split == "held_out"]
        for category, part in held.groupby("category"):
            row[f"held-out {category}"] = part.plain_time_s.sum() / part.time_s.sum()
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="an `entspec tune` output's sweep.csv")
    parser.add_argument("methods", help="an experiment config whose methods to look up")
    args = parser.parse_args()
    sweep = pd.read_csv(args.sweep)
    missing = {"params", "split", "category", "time_s", "plain_time_s"} - set(sweep.columns)
    if missing:
        raise SystemExit(f"{args.sweep}: not an `entspec tune` sweep.csv (no {', '.join(sorted(missing))} column)")
    table = lookup(sweep, ExperimentConfig.from_yaml(args.methods).methods)
    print(table.to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
