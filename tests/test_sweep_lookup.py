"""scripts/sweep_lookup.py: settings tuned elsewhere, read off an `entspec tune` sweep.csv."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sweep_lookup.py"


def _script():
    spec = importlib.util.spec_from_file_location("sweep_lookup", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sweep() -> pd.DataFrame:
    """Two configurations of svip over three prompts, priced with the sweep's own costs."""
    rows = []
    for threshold, times in ((0.5, (10.0, 8.0, 20.0)), (0.15, (9.0, 6.0, 10.0))):
        params = json.dumps({"strategy": "svip", "svip_threshold": threshold, "max_draft_len": 8, "cost_ratio": 0.2,
                             "verify_curve": [[1, 1.0], [2, 1.3]]}, sort_keys=True)
        for prompt, (seconds, category, split) in enumerate(zip(times, ("qa", "qa", "math"),
                                                                ("tune", "held_out", "held_out"))):
            rows.append({"config": threshold, "prompt": prompt, "time_s": seconds, "strategy": "svip",
                         "params": params, "category": category, "split": split, "plain_time_s": 12.0})
    return pd.DataFrame(rows)


def test_methods_are_matched_on_their_rule_parameters_not_costs():
    lookup = _script().lookup
    methods = [{"kind": "hf_assisted"},  # not an entspec method: skipped
               {"strategy": "svip", "svip_threshold": 0.15, "max_draft_len": 8, "cost_ratio": 0.9},
               {"strategy": "svip", "svip_threshold": 0.3, "max_draft_len": 8}]
    table = lookup(_sweep(), methods)
    assert len(table) == 2
    found, missing = table.iloc[0], table.iloc[1]
    assert found["tune speedup"] == pytest.approx(12 / 9)
    assert found["held_out speedup"] == pytest.approx(24 / 16)
    assert found["held-out qa"] == pytest.approx(2.0) and found["held-out math"] == pytest.approx(1.2)
    assert missing["note"] == "not on the sweep's grid"


def test_a_file_that_is_not_a_sweep_is_named(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    methods = tmp_path / "m.yaml"
    methods.write_text("experiment_name: m\ndrafter_model_path: d\nverifier_model_path: v\n"
                       "methods:\n  - {strategy: fixed, max_draft_len: 2}\n")
    monkeypatch.setattr("sys.argv", ["sweep_lookup.py", str(bad), str(methods)])
    with pytest.raises(SystemExit, match="other.csv: not an `entspec tune` sweep.csv"):
        _script().main()
