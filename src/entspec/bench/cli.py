"""`entspec bench`: the side-by-side benchmark on the default pair (a script, not a timed test)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write_text
from ..experiment import ExperimentRunner
from .plot import plot_speedup_by_task
from .report import bench_markdown, bench_tables
from .suite import bench_config, setting_mismatches


def check_flags(args: argparse.Namespace) -> None:
    """Bad flags get one line naming the flag (not the config field it becomes)."""
    checks = [("--prompt-seed", args.prompt_seed, args.prompt_seed >= 0, "must be >= 0"),
              ("--prompts-per-category", args.prompts_per_category, args.prompts_per_category >= 1, "must be >= 1"),
              ("--max-new-tokens", args.max_new_tokens, args.max_new_tokens >= 1, "must be >= 1"),
              ("--max-new-tokens-reduced", args.max_new_tokens_reduced, args.max_new_tokens_reduced >= 1,
               "must be >= 1"),
              ("--seeds", args.seeds, args.seeds >= 1, "must be >= 1"),
              ("--temperature", args.temperature, args.temperature >= 0, "must be >= 0"),
              ("--top-p", args.top_p, args.top_p is None or 0 < args.top_p <= 1, "must be in (0, 1]"),
              ("--cap", args.cap, args.cap >= 1, "must be >= 1"),
              ("--trajectories", args.trajectories, args.trajectories is None or args.trajectories >= 1,
               "must be >= 1")]
    for flag, value, ok, why in checks:
        if not ok:
            raise ValueError(f"{flag}: {why} (got {value})")
    if args.methods_from is not None:  # read and validated before anything runs, whatever the other flags
        from ..engine.config import ConfigError
        from .suite import tuned_methods

        try:
            tuned_methods(args.methods_from)
        except ConfigError as err:
            message = str(err)
            raise ValueError(message if message.startswith(args.methods_from) else
                             f"--methods-from {args.methods_from}: {message}") from None


def _config(args: argparse.Namespace, dtype: str, batch_size: int = 1, output_dir: str | None = None):
    preset = args.preset if dtype in args.full else "reduced"
    return bench_config(dtype, prompts_per_category=args.prompts_per_category,
                        max_new_tokens=args.max_new_tokens if dtype in args.full else args.max_new_tokens_reduced,
                        preset=preset, output_dir=output_dir or str(Path(args.out) / dtype), drafter=args.drafter,
                        verifier=args.verifier, threads=args.threads, prompt_seed=args.prompt_seed,
                        methods_from=args.methods_from, dataset=args.dataset,
                        categories=len(args.categories) if args.categories else 6 if args.dataset == "spec6" else 3,
                        only_categories=args.categories, temperature=args.temperature,
                        top_p=args.top_p, seeds=args.seeds, ignore_eos=args.ignore_eos,
                        drafter_quantization=args.drafter_quantization, kv_cache=args.kv_cache,
                        compile=args.compile, batch_size=batch_size, cpu_linear=args.cpu_linear)


def _other_setting(args: argparse.Namespace, cfg) -> list[str]:
    """The fields where --methods-from's file was tuned for another setting than ``cfg``'s, warned about on stderr
    before the run; the report lists them under its command."""
    notes = setting_mismatches(args.methods_from, cfg) if args.methods_from else []
    for note in notes:
        print(f"warning: --methods-from tuned for another setting: {note}", file=sys.stderr, flush=True)
    return notes


def cmd_bench(args: argparse.Namespace) -> int:
    check_flags(args)
    command = "entspec " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "entspec bench"
    if args.batch_sizes:
        return _bench_batch_sizes(args, command)
    sections = []
    for dtype in args.dtype:
        cfg = _config(args, dtype)
        other_setting = _other_setting(args, cfg)
        ExperimentRunner(cfg).run()
        if args.replay:  # traces of the same prompts: predicted vs measured speed, share of the (sampling) oracle
            from ..replay.record import record_experiment

            record_experiment(cfg, cap=args.cap, trajectories=args.trajectories if cfg.temperature else None)
        sections.append(bench_markdown(cfg.output_dir, command, other_setting))
        figure = plot_speedup_by_task(bench_tables(cfg.output_dir)["speed"], Path(cfg.output_dir) / "speedup_by_task.png",
                                      f"{cfg.dataset_name}, {dtype}, T={cfg.temperature}, {cfg.max_new_tokens} tokens")
        sections[-1] += f"\n![speedup by task type]({figure.relative_to(Path(args.out))})\n"
        print(sections[-1], flush=True)
    report = Path(args.out) / "benchmarks.md"
    atomic_write_text(report, "\n\n".join(sections) + "\n")
    print(f"\nwritten: {report}")
    return 0


def _bench_batch_sizes(args: argparse.Namespace, command: str) -> int:
    """One experiment per dtype and batch size (``OUT/DTYPE/bB``), then the speedup-vs-B table and figure."""
    from ..replay.batch_check import batch_replay_table
    from .batched import batch_markdown, batch_replay_markdown, batch_table, plot_speedup_vs_batch

    sections = []
    for dtype in args.dtype:
        tables, replays, other_setting = [], [], []
        for size in args.batch_sizes:
            cfg = _config(args, dtype, size, str(Path(args.out) / dtype / f"b{size}"))
            other_setting += [f"B = {size}: {note}" for note in _other_setting(args, cfg)]
            runner = ExperimentRunner(cfg)
            runner.run()
            tables.append(batch_table(cfg.output_dir, size))
            if args.replay and not cfg.temperature:  # greedy traces of the same prompts: batch replay's check
                from ..replay.record import record_experiment

                runner.measure_batch_costs()
                record_experiment(cfg, cap=args.cap)
                replayed = batch_replay_table(cfg.output_dir)
                if replayed is not None:
                    replays.append(replayed.assign(B=size))
        table = pd.concat(tables, ignore_index=True)
        atomic_write_text(Path(args.out) / dtype / "batch_sizes.csv", table.to_csv(index=False))
        figure = plot_speedup_vs_batch(table, Path(args.out) / dtype / "speedup_vs_batch.png",
                                       f"{cfg.dataset_name}, {dtype}, T={cfg.temperature}, {cfg.max_new_tokens} tokens")
        sections.append(batch_markdown(table, command, other_setting) +
                        f"\n![speedup against batch size]({figure.relative_to(Path(args.out))})\n")
        if replays:
            replayed = pd.concat(replays, ignore_index=True)
            atomic_write_text(Path(args.out) / dtype / "batch_replay.csv", replayed.to_csv(index=False))
            sections[-1] += "\n" + batch_replay_markdown(replayed)
        print(sections[-1], flush=True)
    report = Path(args.out) / "benchmarks.md"
    atomic_write_text(report, "\n\n".join(sections) + "\n")
    print(f"\nwritten: {report}")
    return 0


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers like 1,2,4,8 (got {text!r})") from None
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"must be distinct integers >= 1 (got {text!r})")
    return sizes


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="entspec vs HF generate vs HF assisted generation, per category")
    p.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--full", nargs="*", default=["bfloat16"],
                   help="dtypes that get the --preset method list; the others get a reduced one")
    p.add_argument("--preset", choices=["full", "confirm"], default="full",
                   help="method list for the --full dtypes: the exploration grid or the chosen settings")
    p.add_argument("--methods-from", default=None, metavar="TUNED.yaml",
                   help="take every dtype's methods from an experiment config (e.g. `entspec tune`'s tuned.yaml)")
    p.add_argument("--replay", action=argparse.BooleanOptionalAction, default=True,
                   help="record traces of the bench prompts and compare replay with the real runs (default on)")
    p.add_argument("--cap", type=int, default=20, help="trace cap for --replay (longest replayable draft)")
    p.add_argument("--trajectories", type=int, default=None,
                   help="sampled trajectories per prompt for --replay when --temperature > 0 (default 4): fewer make "
                        "the expected-value check cheaper and noisier")
    p.add_argument("--dataset", default="mix", help="prompt set: mix (code, math, chat) or spec6 (six task types)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; > 0 samples (all methods alike)")
    p.add_argument("--top-p", type=float, default=None, help="top-p when sampling (e.g. 0.95)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per prompt when sampling, paired across methods")
    p.add_argument("--drafter-quantization", default="none", choices=["none", "int8", "int8-weight-only",
                                                                      "int8-dynamic"],
                   help="quantize the drafter for every method of the run (HF assisted included)")
    p.add_argument("--cpu-linear", default="auto", choices=["auto", "weight-major", "torch"],
                   help="the Linear product's layout on CPU for every method (entspec.models.cpu_linear; auto: "
                        "weight-major for float32)")
    p.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-new-tokens tokens")
    p.add_argument("--categories", nargs="+", default=None, metavar="NAME",
                   help="only these categories / task types (e.g. translation math_reasoning); "
                        "--prompts-per-category prompts of each")
    p.add_argument("--kv-cache", default="dynamic", choices=["dynamic", "static"],
                   help="entspec's KV cache (the Hugging Face baselines keep theirs)")
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="torch.compile entspec's static-cache forwards (needs --kv-cache static; MODE: a torch.compile mode)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=None, metavar="1,2,4,8",
                   help="decode B prompts together for each B (entspec batched, HF generate with padding; HF "
                        "assisted at 1 only): speedup over batched HF generate against B")
    p.add_argument("--prompt-seed", type=int, default=0, help="which prompts of the mix are drawn")
    p.add_argument("--prompts-per-category", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-new-tokens-reduced", type=int, default=32, help="new tokens for the reduced dtypes")
    p.add_argument("--drafter", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--verifier", default="qwen2.5-coder-1.5b-instruct")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/bench")
    p.set_defaults(func=cmd_bench)
