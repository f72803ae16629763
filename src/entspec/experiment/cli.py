"""`entspec run CONFIG.yaml [--set key=value ...]` and `entspec demo`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from ..engine.config import ConfigError
from .config import ExperimentConfig
from .runner import ExperimentRunner

DEMO_CONFIG = Path(__file__).with_name("quick.yaml")  # package data: `entspec demo` works from an installed wheel


def cmd_run(args: argparse.Namespace) -> int:
    config = ExperimentConfig.from_yaml(args.config, overrides=args.set)
    config = _with_executor(config, args)
    if args.no_analysis:
        config.analyze = False
    _report(ExperimentRunner(config).run_full_experiment(), config)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The built-in default: the Qwen2.5-Coder 0.5B -> 1.5B pair on a few code, math and chat prompts.

    1. record the prompts' greedy traces (one verifier decode each; `entspec trace`), 2. run the methods,
    3. analyze: the replayed threshold curves and every method's share of the true oracle come from the traces.
    """
    path = DEMO_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the demo config is missing from the installed package")
    started = time.perf_counter()
    config = ExperimentConfig.from_yaml(path, overrides=args.set)
    if config.dtype == "auto":  # a name, saved with the traces and the results: a rerun here resumes them
        config = dataclasses.replace(config, dtype=machine_dtype(config.device))
    print(f"entspec demo: {config.drafter_model_path} -> {config.verifier_model_path} ({config.dtype}), "
          f"{config.num_samples} prompts of {config.dataset_name}, output in {config.output_dir}", flush=True)
    if config.temperature == 0:  # traces are greedy
        from ..replay.record import record_experiment

        print(f"traces: {record_experiment(config)}", flush=True)
    _report(ExperimentRunner(config).run_full_experiment(), config)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


def machine_dtype(device: str = "auto") -> str:
    """``dtype: auto`` on this machine: bfloat16 on CUDA and on CPUs with native bf16 instructions (AVX512_BF16,
    AMX), float32 elsewhere (emulated bf16 on an AVX2-only CPU is about 4x slower than float32)."""
    from ..models import resolve_device

    kind = resolve_device(device).type
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if kind == "cpu" and cpuinfo.is_file() else set()
    return "bfloat16" if kind == "cuda" or flags & {"avx512_bf16", "amx_bf16"} else "float32"


def _with_executor(config: ExperimentConfig, args: argparse.Namespace) -> ExperimentConfig:
    """``--executor/--address/--workers`` over the config's fields (validated like them)."""
    flags = {name: value for name, value in (("executor", args.executor), ("ray_address", args.address),
                                             ("ray_workers", args.workers)) if value is not None}
    config = dataclasses.replace(config, **flags) if flags else config
    for name in ("ray_address", "ray_workers"):
        if name in flags and config.executor != "ray":
            raise ConfigError(f"{name}: only used with --executor ray (got {flags[name]!r})")
    return config


def _report(summary: dict, config: ExperimentConfig) -> None:
    print(f"\n{summary['rows']} results in {summary['results']} ({summary['run_time_s']:.0f} s)")
    analysis = summary.get("analysis")  # an AnalysisResult (readable as a dict too)
    if analysis is not None:
        print(f"\n{analysis['summary_markdown']}\n\nreport: {Path(config.output_dir) / 'plots' / 'final_report.md'}")


def register(subparsers) -> None:
    run = subparsers.add_parser("run", help="run (or resume) an experiment declared in a YAML file")
    run.add_argument("config", help="experiment YAML (see configs/)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field; the value is parsed as YAML (repeatable)")
    run.add_argument("--executor", choices=("local", "ray"), default=None,
                     help="where units run: this process (local, the default) or Ray workers (docs/cluster.md)")
    run.add_argument("--address", default=None, metavar="ADDR",
                     help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start a local Ray instance)")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="Ray workers, each holding the model pair once (default: one per GPU, else per CPU)")
    run.add_argument("--no-analysis", action="store_true", help="only run; analyze later with `entspec analyze`")
    run.set_defaults(func=cmd_run)
    demo = subparsers.add_parser("demo", help="fetch the default pair, record traces of the built-in demo config "
                                              "(entspec/experiment/quick.yaml), run it, analyze")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    demo.set_defaults(func=cmd_demo)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
