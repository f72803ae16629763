"""`entspec trace CONFIG` and `entspec tune TRACES`: record once, then judge any rule in seconds."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml


def cmd_trace(args: argparse.Namespace) -> int:
    from ..experiment import ExperimentConfig
    from .record import record_experiment

    config = ExperimentConfig.from_yaml(args.config, overrides=args.set)
    folder = record_experiment(config, cap=args.cap, recalibrate=args.recalibrate)
    print(f"traces: {folder}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .cost import load_cost_model
    from .trace import load_traces
    from ..lock import FolderLock
    from .tune import check_split, check_tune_flags, tune, write_outputs

    check_tune_flags(args.held_out, args.top)
    folder = Path(args.traces)
    if (folder / "traces").is_dir():  # an experiment folder was given
        folder = folder / "traces"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such traces folder; record traces with `entspec trace`")
    with FolderLock(folder):  # one process per traces folder: trace and tune alike
        traces = load_traces(folder)
        check_split(traces, args.held_out)
        cost = load_cost_model(folder)
        saved = folder / "experiment.yaml"
        experiment = yaml.safe_load(saved.read_text()) if saved.is_file() else None
        result = tune(traces, cost, held_out=args.held_out, seed=args.seed, rules=args.rules)
        command = "entspec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        paths = write_outputs(result, args.out or folder.parent / "tune", experiment, cost, command, top=args.top)
    print(paths["report"].read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def register(subparsers) -> None:
    from ..rules import RULES

    p = subparsers.add_parser("trace", help="record greedy traces and the cost model of an experiment's prompts")
    p.add_argument("config", help="experiment YAML (its models, prompts and max_new_tokens)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--cap", type=int, default=20, help="longest draft replay can be asked about (default 20)")
    p.add_argument("--recalibrate", action="store_true", help="measure the cost model again")
    p.set_defaults(func=cmd_trace)
    t = subparsers.add_parser("tune", help="sweep every registered rule by trace replay; write tuned.yaml")
    t.add_argument("traces", help="an experiment folder with traces/, or a traces folder")
    t.add_argument("--out", default=None, help="output folder (default: EXPERIMENT/tune)")
    t.add_argument("--held-out", type=float, default=0.5, help="share of each category's prompts held out")
    t.add_argument("--seed", type=int, default=0, help="seed of the tuning / held-out split")
    t.add_argument("--rules", nargs="+", choices=sorted(RULES), default=None, help="only these rules")
    t.add_argument("--top", type=int, default=4, help="rules besides fixed k written to tuned.yaml")
    t.set_defaults(func=cmd_tune)
