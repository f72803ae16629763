"""`entspec trace CONFIG` and `entspec tune TRACES`: record once, then judge any rule in seconds."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from .tune import BatchSetting


def cmd_trace(args: argparse.Namespace) -> int:
    from ..experiment import ExperimentConfig
    from .record import record_experiment

    config = ExperimentConfig.from_yaml(args.config, overrides=args.set)
    folder = record_experiment(config, cap=args.cap, recalibrate=args.recalibrate, trajectories=args.trajectories,
                               drafter_context=args.drafter_context)
    print(f"traces: {folder}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .cost import load_cost_model
    from .sampled import load_sampled_traces
    from .trace import load_traces
    from ..lock import FolderLock
    from .tune import check_split, check_tune_flags, tune, tune_sampled, write_outputs

    check_tune_flags(args.held_out, args.top)
    check_sampling_flags(args)
    folder = Path(args.traces)
    if (folder / "traces").is_dir():  # an experiment folder was given
        folder = folder / "traces"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such traces folder; record traces with `entspec trace`")
    batch = batch_setting(args, folder)
    with contextlib.ExitStack() as locks:
        locks.enter_context(FolderLock(folder))  # one process per traces folder: trace and tune alike
        sampled = folder_kind(folder) == "sampled"
        if sampled and batch is not None:
            raise ValueError(f"--batch-size: batch replay reads greedy traces only; {folder} holds sampling traces")
        traces = load_sampled_traces(folder) if sampled else load_traces(folder)
        check_traces_setting(folder, traces, args)
        check_split(traces, args.held_out)
        cost = load_cost_model(folder)
        windows = {}
        for n in args.drafter_contexts or []:
            windowed = folder.parent / f"traces-w{n}"
            if n < 1:
                raise ValueError(f"--drafter-contexts: windows must be >= 1 (got {n})")
            if not windowed.is_dir():
                raise FileNotFoundError(f"{windowed}: no such traces folder; record it with `entspec trace CONFIG "
                                        f"--drafter-context {n}`")
            locks.enter_context(FolderLock(windowed))
            windows[n] = (window_traces(windowed, n, traces, sampled), load_cost_model(windowed))
        saved = folder / "experiment.yaml"
        experiment = yaml.safe_load(saved.read_text()) if saved.is_file() else None
        common = dict(held_out=args.held_out, seed=args.seed, rules=args.rules, given=given_configs(args.given))
        result = (tune_sampled(traces, cost, draws=args.draws, windows=windows, **common) if sampled
                  else tune(traces, cost, batch=batch, windows=windows, **common))
        command = "entspec " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        out = args.out or folder.parent / ("tune" if batch is None else f"tune-b{batch.size}")
        paths = write_outputs(result, out, experiment, cost, command, top=args.top)
    print(paths["report"].read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def given_configs(path: str | None) -> list[dict] | None:
    """The `EntropyConfig` fields of every entspec method of the experiment config at ``path`` (list values
    expanded as `entspec run` does); None without ``--given``."""
    if path is None:
        return None
    from ..experiment import ExperimentConfig, expand_methods
    from ..validate import ConfigError

    try:
        configs = [dict(spec.params) for spec in expand_methods(ExperimentConfig.from_yaml(path)) if spec.is_rule]
    except ConfigError as err:
        raise ValueError(str(err) if str(err).startswith(path) else f"--given {path}: {err}") from None
    if not configs:
        raise ValueError(f"--given {path}: methods: no entspec method to judge")
    return configs


def window_traces(folder: Path, window: int, base: list, sampled: bool = False) -> list:
    """The traces of ``folder`` (recorded with drafter window ``window``): the prompts (and sampled trajectories) of
    ``base`` in its order, with the same settings but the window (one line naming the folder and what differs)."""
    from .sampled import SAMPLED_SHARED, load_sampled_traces
    from .trace import SHARED_META, load_traces

    if folder_kind(folder) != ("sampled" if sampled else "greedy"):
        raise ValueError(f"{folder}: holds {folder_kind(folder)} traces, the base traces are "
                         f"{'sampled' if sampled else 'greedy'}; record the window at the base traces' temperature")
    traces = load_sampled_traces(folder) if sampled else load_traces(folder)

    def key(t) -> tuple:
        return (t.meta.prompt_id, t.meta.seed) if sampled else (t.meta.prompt_id,)

    if [key(t) for t in traces] != [key(t) for t in base]:
        raise ValueError(f"{folder}: holds traces of other prompts{' or trajectories' if sampled else ''} than "
                         f"{base[0].meta.prompt_id}'s folder; record the same experiment with `entspec trace CONFIG "
                         "--drafter-context N`")
    for name in SAMPLED_SHARED if sampled else SHARED_META:
        mine, theirs = getattr(traces[0].meta, name), getattr(base[0].meta, name)
        if name == "drafter_context" and mine != window or name != "drafter_context" and mine != theirs:
            raise ValueError(f"{folder}: recorded with {name}={mine!r} (the base traces: {theirs!r}, the window: "
                             f"{window})")
    return traces


def batch_setting(args: argparse.Namespace, folder: Path) -> BatchSetting | None:
    """``--batch-size`` and ``--batch-costs``: None to replay one sequence at a time, else the batch size and the
    measured batch costs its rounds are priced with: ``--batch-costs``, else the ones `entspec trace` measured with
    the traces of ``folder`` (one line naming the flag when missing or unreadable)."""
    from ..engine.batch_cost import BatchCostModel
    from .cost import BATCH_COST_FILE
    from .tune import BatchSetting

    size = args.batch_size
    if size < 1:
        raise ValueError(f"--batch-size: must be >= 1 (got {size})")
    path = args.batch_costs
    if path is None and size > 1 and (folder / BATCH_COST_FILE).is_file():
        path = folder / BATCH_COST_FILE
    if path is None:
        if size > 1:
            raise ValueError(f"--batch-costs: --batch-size {size} prices batch rounds with measured batch costs; "
                             f"{folder} has none (`entspec trace` measures them for a config with batch_size > 1); "
                             "give a batch_costs.json (an experiment with a batch_stop: cost method writes "
                             "configs/batch_costs.json)")
        return None
    try:
        costs = BatchCostModel.load(path)
    except ValueError as err:
        raise ValueError(f"--batch-costs: {err}") from None
    if costs.verify_rows[-1] < size:
        raise ValueError(f"--batch-costs: {path} was measured up to {costs.verify_rows[-1]} rows, not {size}")
    return BatchSetting(size, costs, str(path))


def folder_kind(folder: Path) -> str:
    """``"sampled"`` or ``"greedy"``: the kind of the folder's first trace file (the loaders refuse a mixture)."""
    from .sampled import trace_kind
    from .trace import trace_files

    files = trace_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no traces; record them with `entspec trace`")
    return trace_kind(files[0])


def check_sampling_flags(args: argparse.Namespace) -> None:
    """``--temperature`` >= 0, ``--top-p`` in (0, 1], ``--top-k`` >= 1, ``--draws`` >= 1: one line naming the flag."""
    checks = [("--temperature", args.temperature, args.temperature is None or args.temperature >= 0, "must be >= 0"),
              ("--top-p", args.top_p, args.top_p is None or 0 < args.top_p <= 1, "must be in (0, 1]"),
              ("--top-k", args.top_k, args.top_k is None or args.top_k >= 1, "must be >= 1"),
              ("--draws", args.draws, args.draws >= 1, "must be >= 1")]
    for flag, value, ok, why in checks:
        if not ok:
            raise ValueError(f"{flag}: {why} (got {value})")


def check_traces_setting(folder: Path, traces: list, args: argparse.Namespace) -> None:
    """The sampling flags, when given, must be what the traces were recorded with (one line naming the flag):
    settings are never tuned on traces of another temperature or top-p."""
    meta = traces[0].meta
    recorded = {"--temperature": getattr(meta, "temperature", 0.0), "--top-p": getattr(meta, "top_p", None),
                "--top-k": getattr(meta, "top_k", None)}
    given = {"--temperature": args.temperature, "--top-p": args.top_p, "--top-k": args.top_k}
    for flag, value in given.items():
        if value is not None and value != recorded[flag] and not (flag == "--top-p" and value == 1.0
                                                                   and recorded[flag] is None):
            hint = ("record sampling traces with `entspec trace CONFIG --set temperature=T --set top_p=P`"
                    if recorded["--temperature"] == 0 else "record traces at that setting in another output_dir")
            raise ValueError(f"{flag}: the traces in {folder} were recorded with {flag} {recorded[flag]} (got "
                             f"{value}); {hint}")


def register(subparsers) -> None:
    from ..rules import RULES

    p = subparsers.add_parser("trace", help="record traces (greedy, or sampled at the config's temperature) and the "
                                            "cost model of an experiment's prompts")
    p.add_argument("config", help="experiment YAML (its models, prompts and max_new_tokens)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--cap", type=int, default=20, help="longest draft replay can be asked about (default 20)")
    p.add_argument("--recalibrate", action="store_true", help="measure the cost model again")
    p.add_argument("--trajectories", type=int, default=None,
                   help="sampled trajectories per prompt when the config's temperature > 0 (default 4; a "
                        "window's folder: the base traces')")
    p.add_argument("--drafter-context", type=int, default=None, metavar="N",
                   help="record with a drafter window of N tokens, into OUTPUT_DIR/traces-wN")
    p.set_defaults(func=cmd_trace)
    t = subparsers.add_parser("tune", help="sweep every registered rule by trace replay; write tuned.yaml")
    t.add_argument("traces", help="an experiment folder with traces/, or a traces folder")
    t.add_argument("--out", default=None, help="output folder (default: EXPERIMENT/tune)")
    t.add_argument("--held-out", type=float, default=0.5, help="share of each category's prompts held out")
    t.add_argument("--seed", type=int, default=0, help="seed of the tuning / held-out split")
    t.add_argument("--rules", nargs="+", choices=sorted(RULES), default=None, help="only these rules")
    t.add_argument("--top", type=int, default=4, help="rules besides fixed k written to tuned.yaml")
    t.add_argument("--temperature", type=float, default=None,
                   help="the temperature to tune for; must be the traces' (default: the traces')")
    t.add_argument("--top-p", type=float, default=None, help="the top-p to tune for; must be the traces'")
    t.add_argument("--top-k", type=int, default=None, help="the top-k to tune for; must be the traces'")
    t.add_argument("--draws", type=int, default=8,
                   help="sampling traces: Monte-Carlo draws of the verdicts per trajectory (default 8)")
    t.add_argument("--drafter-contexts", type=int, nargs="+", default=None, metavar="N",
                   help="also sweep these drafter windows, each on the traces recorded with it (EXPERIMENT/traces-wN "
                        "from `entspec trace --drafter-context N`); the report chooses a window per category")
    t.add_argument("--batch-size", type=int, default=1,
                   help="tune for batches of B prompts: score every configuration by batch replay at B (greedy "
                        "traces; rounds priced by the traces folder's batch costs or --batch-costs; default "
                        "output folder EXPERIMENT/tune-bB)")
    t.add_argument("--batch-costs", default=None, metavar="PATH",
                   help="the measured batch costs batch replay prices rounds with (a batch_costs.json; default: "
                        "the one `entspec trace` measured beside the traces for a config with batch_size > 1)")
    t.add_argument("--given", default=None, metavar="CONFIG.yaml",
                   help="also judge the entspec methods of this experiment config (settings tuned elsewhere: another "
                        "temperature, drafter or paper) on the same split, with their oracle shares (given.csv)")
    t.set_defaults(func=cmd_tune)
