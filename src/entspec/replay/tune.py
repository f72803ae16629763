"""`entspec tune`: sweep every registered rule by replay, pick on tuning prompts, report on held-out ones.

1. Split the traced prompts per category into a tuning half and a held-out half (seeded, stratified).
2. Fit the acceptance calibration of the ``goodput`` rule on the tuning traces (logistic regression of
   "the drafter's greedy token equals the verifier's" on its entropy) and take its costs from the cost model.
3. Replay every configuration of every rule's registered sweep on every trace (`RuleInfo.sweep`: the rules
   say what to sweep; nothing here lists rules).
4. Choose each rule's best configuration overall and per category on the tuning prompts (speedup over plain
   decoding = total plain time / total rule time, i.e. the ratio of aggregate throughputs) and report it
   on the held-out prompts, with the share of the true oracle at the same cap and without a cap.
5. Write ``sweep.csv`` (every configuration), ``report.md`` and ``tuned.yaml`` (an experiment that
   confirms the chosen rules with real generations; its first lines say which traces its settings came from).

Sampling traces (`tune_sampled`) go through the same steps: every trajectory contributes ``draws`` realisations
of its verdicts (`entspec.replay.sampled`), so every figure is an expectation (`entspec.replay.expected`); the
split keeps all trajectories of a prompt on one side, and *of oracle* is the share of the sampling oracle.

At a batch size (``batch``, `entspec tune --batch-size B --batch-costs PATH`) the same steps score every
configuration by batch replay (`entspec.replay.batch`): each split's prompts are grouped into batches of B in
prompt order, as the runner groups them (a batch never mixes tuning and held-out prompts), every prompt is charged
its share of its batch's rounds, and plain decoding is batched too. The gate's and ``goodput``'s costs come from
the batch costs at B, each configuration is swept with both batch stops (``batch_stop`` rows and cost), and *of
oracle* is the share of the clairvoyant lock-step schedule (`entspec.replay.batch.batch_oracle`: every row drafts
what will be accepted, each round at the depth with the most tokens per second; a reference, not a bound).

With drafter windows (``windows``, `entspec tune --drafter-contexts N ...`) every configuration is also swept with
each window N (``drafter_context: N``), replayed on the traces recorded with that window (``traces-wN``: the
windowed drafter's acceptance and entropies) and priced by the traces' cost model with the windowed folder's drafter
step and drafter prefill (`windowed_cost`; the verifier's costs stay the base folder's, so plain decoding is one
baseline). The choice per category then picks a window per task type.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from ..engine.batch_cost import BatchCostModel
from ..engine.config import EntropyConfig
from ..rules import RULES
from ..rules.goodput import fit_calibration, fit_isotonic_calibration, fit_next_calibration
from ..metrics.compare import fmt, markdown_table
from .batch import batch_oracle, batch_relative, plain_batch, replay_batch
from .cost import CostModel
from .engine import plain_decoding, replay, true_oracle
from .expected import DRAWS, realisations, sampling_oracle
from .sampled import SampledTrace
from .trace import Trace

ALL = "all"
BATCH_STOPS = ("rows", "cost")  # swept at a batch size: each row's own stop alone, or with the batch's


@dataclass(frozen=True)
class BatchSetting:
    """Tuning for batches of ``size`` prompts: the measured batch costs rounds are priced with, and their file."""

    size: int
    costs: BatchCostModel
    path: str


@dataclass
class TuneResult:
    sweep: pd.DataFrame  # one row per (configuration, prompt): time_s, tokens, split, category
    best: pd.DataFrame  # per rule and category: chosen configuration, tuning and held-out figures
    calibration: dict[str, float]  # the entropy-only calibration (the two-feature one is in the goodput configs)
    seconds: float  # wall time of the replay sweep
    configurations: int
    traces: list[Trace]
    sampling: dict[str, Any] | None = None  # temperature, top_k, top_p, trajectories, draws (sampling traces)
    batch: BatchSetting | None = None  # the batch size and costs the sweep was replayed at (None: one sequence)
    windows: list[int] | None = None  # the drafter windows swept besides the whole sequence
    given: pd.DataFrame | None = None  # configurations judged as given (`--given`), not chosen: same figures as best


def split_prompts(traces: list[Trace], held_out: float = 0.5, seed: int = 0) -> list[str]:
    """``"tune"`` / ``"held_out"`` per trace, stratified by category (at least one tuning prompt each); every trace
    of one prompt (its sampled trajectories and draws) on the same side."""
    rng = np.random.default_rng(seed)
    labels = ["tune"] * len(traces)
    by_category: dict[str, list[str]] = {}
    for t in traces:
        members = by_category.setdefault(t.meta.category, [])
        if t.meta.prompt_id not in members:
            members.append(t.meta.prompt_id)
    held: set[str] = set()
    for members in by_category.values():
        order = rng.permutation(len(members))
        n_held = min(len(members) - 1, int(round(held_out * len(members))))
        held.update(members[i] for i in order[:n_held])
    return ["held_out" if t.meta.prompt_id in held else label for t, label in zip(traces, labels)]


def configurations(cap: int, base: dict[str, Any], rules: list[str] | None = None,
                   calibrations: list[dict[str, float]] | None = None,
                   batch_stops: tuple[str, ...] = ("rows",)) -> list[dict[str, Any]]:
    """Every configuration of the registered sweeps (caps above the traces' ``cap`` dropped); the goodput rule
    once per candidate calibration; each once per ``batch_stops`` value (the default, rows, left unwritten)."""
    out = []
    for name, info in RULES.items():
        if rules and name not in rules:
            continue
        axes = {k: v for k, v in info.sweep.items()}
        if "max_draft_len" in axes:
            axes["max_draft_len"] = tuple(v for v in axes["max_draft_len"] if v <= cap) or (cap,)
        keys = list(axes)
        for values in itertools.product(*(axes[k] for k in keys)):
            params = {"strategy": name, **dict(zip(keys, values))}
            if name == "goodput":
                out += [{**base, **calibration, **params} for calibration in (calibrations or [{}])]
            else:
                out.append({**_gate_fields(base), **params})
    return [{**params, **({} if stop == "rows" else {"batch_stop": stop})} for params in out for stop in batch_stops]


def _gate_fields(base: dict[str, Any]) -> dict[str, Any]:
    """What every rule takes from the base: the costs the speculation gate reads, and the batch layout they were
    measured in."""
    return {k: v for k, v in base.items() if k in ("cost_ratio", "verify_slope", "verify_curve", "batch_layout")}


def tune(traces: list[Trace], cost: CostModel, *, held_out: float = 0.5, seed: int = 0,
         rules: list[str] | None = None, progress: bool = True,
         oracle: Callable[[int, int | None, int], float] | None = None,
         sampling: dict[str, Any] | None = None, batch: BatchSetting | None = None,
         windows: dict[int, tuple[list[Trace], CostModel]] | None = None,
         given: list[dict[str, Any]] | None = None) -> TuneResult:
    """Steps 1-4 of the module docstring. ``oracle(j, cap, window)``: the oracle time of trace j of the drafter
    window's traces (default: the true oracle of a greedy trace); ``sampling``: what sampling traces the realisations
    came from (for the report);
    ``batch``: replay in batches of ``batch.size`` priced by ``batch.costs`` (greedy traces only); ``windows``: per
    drafter window N, the traces of the same prompts recorded with it and their cost model; ``given``: `EntropyConfig`
    fields of configurations tuned elsewhere, judged on the same prompts and split as the chosen ones (not chosen
    from; their own cost fields drive their decisions, the traces' costs price their time)."""
    from tqdm.auto import tqdm

    if batch is not None and sampling is not None:
        raise ValueError("--batch-size: batch replay reads greedy traces only (these are sampling traces)")
    variants = {0: (traces, cost), **{n: (t, windowed_cost(cost, c)) for n, (t, c) in (windows or {}).items()}}
    for params in given or []:
        if params.get("drafter_context") and params["drafter_context"] not in variants:
            raise ValueError(f"--given: drafter_context {params['drafter_context']} has no traces here (tune with "
                             f"--drafter-contexts {params['drafter_context']})")
    labels = split_prompts(traces, held_out, seed)
    tuning = [t for t, s in zip(traces, labels) if s == "tune"]
    calibrations = [{**fit_calibration(tuning, with_prob=w), **(fit_next_calibration(tuning, with_prob=w) if n else {})}
                    for w in (False, True) for n in (False, True)]
    calibrations.append(fit_isotonic_calibration(tuning))
    calibration = calibrations[0]
    base = cost.relative() if batch is None else batch_relative(batch.costs, batch.size)
    cap = min(t.meta.cap for t in traces)
    cap = min([cap, *(t.meta.cap for n, (ts, _) in variants.items() if n for t in ts)])
    for params in given or []:
        if (longest := params.get("max_draft_len", EntropyConfig.max_draft_len)) > cap:
            raise ValueError(f"--given: {params['strategy']} max_draft_len {longest} is longer than the traces' cap "
                             f"{cap} (record them with `entspec trace --cap N`)")
    configs = [params if not n else {**params, "drafter_context": n,
                                     **_window_costs(params, variants[n][1] if batch is None else None)}
               for params in configurations(cap, base, rules, calibrations, ("rows",) if batch is None else BATCH_STOPS)
               for n in sorted(variants)]
    timed = _timer(variants, labels, batch)
    plain = timed(None)
    started = time.perf_counter()
    rows = []
    for i, params in enumerate(tqdm(configs, desc="replay", disable=not progress)):
        rows += [(i, j, seconds) for j, seconds in enumerate(timed(EntropyConfig(**params)))]
    seconds = time.perf_counter() - started
    sweep = pd.DataFrame(rows, columns=["config", "prompt", "time_s"])
    sweep["strategy"] = [configs[i]["strategy"] for i in sweep.config]
    sweep["params"] = [json.dumps(configs[i], sort_keys=True) for i in sweep.config]
    sweep["max_draft_len"] = [configs[i].get("max_draft_len", EntropyConfig.max_draft_len) for i in sweep.config]
    sweep["category"] = [traces[j].meta.category for j in sweep.prompt]
    sweep["split"] = [labels[j] for j in sweep.prompt]
    sweep["plain_time_s"] = [plain[j] for j in sweep.prompt]
    oracle_cache: dict[tuple[int, int | None, int], float] = {}

    def oracle_time(j: int, cap_: int | None, window: int = 0) -> float:
        if (j, cap_, window) not in oracle_cache:
            ts, c = variants[window]
            if batch is not None:
                oracle_cache.update(_batch_oracle_times(ts, labels, batch, cap_, window))
            else:
                oracle_cache[(j, cap_, window)] = (oracle(j, cap_, window) if oracle is not None
                                                   else true_oracle(ts[j], c, cap=cap_).time_s)
        return oracle_cache[(j, cap_, window)]

    best = _choose(sweep, configs, oracle_time)
    best["held_out_speedup_gate_toggled"] = [_gate_toggled(configs[c], labels, plain, timed)
                                             if cat == ALL else np.nan for c, cat in zip(best.config, best.category)]
    judged = None if given is None else pd.DataFrame([_judge(params, labels, plain, timed, oracle_time)
                                                      for params in given])
    return TuneResult(sweep, best, calibration, seconds, len(configs), traces, sampling, batch,
                      sorted(windows) if windows else None, judged)


def _judge(params: dict[str, Any], labels: list[str], plain: list[float], timed: Callable[..., list[float]],
           oracle_time: Callable[..., float]) -> dict[str, Any]:
    """One given configuration's figures, as `_choose` reports a chosen one: speedup over plain decoding on the
    tuning and the held-out prompts, and its held-out shares of the oracle at its cap and uncapped."""
    config = EntropyConfig(**params)
    times = timed(config)
    sides = {side: [j for j, s in enumerate(labels) if s == side] for side in ("tune", "held_out")}
    entry = {"strategy": config.strategy, "params": json.dumps(params, sort_keys=True),
             "tune_speedup": _speedup(sides["tune"], plain, times)}
    if sides["held_out"]:
        entry.update(_held_out_figures(sides["held_out"], sum(plain[j] for j in sides["held_out"]),
                                       sum(times[j] for j in sides["held_out"]), oracle_time,
                                       config.max_draft_len, config.drafter_context or 0))
    return entry


def _speedup(prompts: list[int], plain: list[float], times: list[float]) -> float:
    return sum(plain[j] for j in prompts) / sum(times[j] for j in prompts) if prompts else float("nan")


def _held_out_figures(prompts: list[int], plain_time: float, rule_time: float, oracle_time: Callable[..., float],
                      cap: int, window: int) -> dict[str, Any]:
    """A configuration's held-out figures: speedup over plain decoding, share of the oracle at its cap and
    uncapped, and the uncapped oracle's own speedup (the oracle of its drafter window)."""
    oracle_s = sum(oracle_time(j, None, window) for j in prompts)
    return {"held_out_speedup": plain_time / rule_time,
            "of_oracle_at_cap": sum(oracle_time(j, cap, window) for j in prompts) / rule_time,
            "of_oracle": oracle_s / rule_time, "oracle_speedup": plain_time / oracle_s,
            "held_out_prompts": len(prompts)}


def windowed_cost(cost: CostModel, window: CostModel) -> CostModel:
    """``cost`` with the drafter's step and prefill of ``window`` (a cost model calibrated with a drafter window): a
    windowed drafter reads fewer tokens, the verifier and the round's overhead are the same."""
    data = cost.to_dict()
    for name in ("prefill_s_per_token", "prefill_s_fixed"):
        data[name] = {**data[name], "drafter": getattr(window, name)["drafter"]}
    return CostModel(**{**data, "draft_step_s": window.draft_step_s})


def _window_costs(params: dict[str, Any], cost: CostModel | None) -> dict[str, Any]:
    """The cost fields a configuration carries for the gate and ``goodput`` (`_gate_fields`), from its window's
    cost model: a windowed drafter step is cheaper. Batch costs (``cost`` None) are the same for every window."""
    return {} if cost is None else {k: v for k, v in cost.relative().items() if k in params}


def _timer(variants: dict[int, tuple[list[Trace], CostModel]], labels: list[str],
           batch: BatchSetting | None) -> Callable[..., list[float]]:
    """``timed(config, split=None)``: the modelled seconds of every trace (of one split: 0 for the others) under a
    configuration (None: plain decoding), on the traces and costs of the configuration's drafter window
    (``variants``). One sequence: each trace replayed alone. At a batch size: each split's traces replayed in
    batches of B in their order, each charged its share of its batch's rounds."""
    def timed(config: EntropyConfig | None, split: str | None = None) -> list[float]:
        traces, cost = variants[0 if config is None else config.drafter_context or 0]
        out = [0.0] * len(traces)
        for side in ("tune", "held_out") if split is None else (split,):
            js = [j for j, s in enumerate(labels) if s == side]
            chosen = [traces[j] for j in js]
            if batch is None:
                seconds = [(plain_decoding(t, cost) if config is None else replay(t, config, cost)).time_s
                           for t in chosen]
            else:
                run = (plain_batch(chosen, batch.costs, batch.size) if config is None
                       else replay_batch(chosen, config, batch.costs, batch.size))
                seconds = [row.time_s for row in run.rows]
            for j, s in zip(js, seconds):
                out[j] = s
        return out

    return timed


def _batch_oracle_times(traces: list[Trace], labels: list[str], batch: BatchSetting, cap: int | None,
                        window: int) -> dict[tuple[int, int | None, int], float]:
    """Every trace's share of the clairvoyant lock-step schedule (`entspec.replay.batch.batch_oracle`), each split's
    traces in batches of B as `_timer` groups them, keyed as `tune`'s oracle times are."""
    out = {}
    for side in ("tune", "held_out"):
        js = [j for j, s in enumerate(labels) if s == side]
        run = batch_oracle([traces[j] for j in js], batch.costs, batch.size, cap=cap)
        out.update({(j, cap, window): row.time_s for j, row in zip(js, run.rows)})
    return out


def tune_sampled(traces: list[SampledTrace], cost: CostModel, *, draws: int = DRAWS,
                 windows: dict[int, tuple[list[SampledTrace], CostModel]] | None = None, **kwargs) -> TuneResult:
    """`tune` on sampling traces: every trajectory's ``draws`` realisations are replayed (every configuration on
    the same draws); a realisation's oracle time is its trajectory's sampling-oracle time (an expectation).
    ``windows``: per drafter window N, the sampling traces of the same trajectories recorded with it and their cost
    model (realised on the same draws' uniforms: common random numbers across windows too)."""
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise ValueError(f"--draws: must be an integer >= 1 (got {draws!r})")
    source = [i for i in range(len(traces)) for _ in range(draws)]
    priced = {0: (traces, cost), **{n: (ts, windowed_cost(cost, c)) for n, (ts, c) in (windows or {}).items()}}
    realised = {n: [r for t in ts for r in realisations(t, draws)] for n, (ts, _) in priced.items()}
    cache: dict[tuple[int, int | None, int], float] = {}

    def oracle(j: int, cap: int | None, window: int = 0) -> float:
        key = (source[j], cap, window)
        if key not in cache:
            ts, c = priced[window]
            cache[key] = sampling_oracle(ts[source[j]], c, cap=cap).time_s
        return cache[key]

    first = traces[0].meta
    info = {"temperature": first.temperature, "top_k": first.top_k, "top_p": first.top_p,
            "trajectories": len(traces), "prompts": len({t.meta.prompt_id for t in traces}), "draws": draws}
    return tune(realised[0], cost, oracle=oracle, sampling=info, **kwargs,
                windows={n: (realised[n], c) for n, (_, c) in (windows or {}).items()})


def _gate_toggled(params: dict, labels: list[str], plain: list[float], timed: Callable[..., list[float]]) -> float:
    """Held-out speedup of a configuration with the speculation gate toggled (what the gate is worth)."""
    cfg = EntropyConfig(**params)
    cfg = cfg.replace(gate=not cfg.gate)
    return _speedup([j for j, s in enumerate(labels) if s == "held_out"], plain, timed(cfg, "held_out"))


def _choose(sweep: pd.DataFrame, configs: list[dict], oracle_time) -> pd.DataFrame:
    out = []
    categories = [ALL, *sorted(sweep.category.unique())]
    for strategy, rule_rows in sweep.groupby("strategy", sort=False):
        for category in categories:
            rows = rule_rows if category == ALL else rule_rows[rule_rows.category == category]
            tune_rows, held_rows = rows[rows.split == "tune"], rows[rows.split == "held_out"]
            if tune_rows.empty:
                continue
            per_config = tune_rows.groupby("config").agg(time_s=("time_s", "sum"), plain=("plain_time_s", "sum"))
            chosen = int((per_config.plain / per_config.time_s).idxmax())
            held = held_rows[held_rows.config == chosen]
            cap = configs[chosen].get("max_draft_len", EntropyConfig.max_draft_len)
            window = configs[chosen].get("drafter_context", 0)
            entry = {"strategy": strategy, "category": category, "config": chosen,
                     "params": tune_rows[tune_rows.config == chosen].params.iloc[0],
                     "tune_speedup": float(per_config.plain[chosen] / per_config.time_s[chosen])}
            if not held.empty:
                entry.update(_held_out_figures(held.prompt.tolist(), float(held.plain_time_s.sum()),
                                               float(held.time_s.sum()), oracle_time, cap, window))
            out.append(entry)
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ outputs


def write_outputs(result: TuneResult, out_dir: str | Path, experiment: dict[str, Any] | None,
                  cost: CostModel, command: str, top: int = 4) -> dict[str, Path]:
    """sweep.csv, best.csv, report.md and tuned.yaml, all or nothing: written into a temporary folder beside
    ``out_dir`` that then replaces it, so a kill at any moment leaves the previous set whole."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*.tmp"):  # left by a killed run (callers hold the traces lock)
        shutil.rmtree(stale, ignore_errors=True)
    names = {"sweep": "sweep.csv", "best": "best.csv", "report": "report.md",
             **({} if result.given is None else {"given": "given.csv"})}
    if experiment is not None:
        experiment = {**experiment, **({} if result.sampling is None else
                                       {k: result.sampling[k] for k in ("temperature", "top_k", "top_p")}),
                      **({} if result.batch is None else {"batch_size": result.batch.size})}
    if experiment is not None:
        names["config"] = "tuned.yaml"
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        result.sweep.to_csv(tmp / names["sweep"], index=False)
        result.best.to_csv(tmp / names["best"], index=False)
        if result.given is not None:
            result.given.to_csv(tmp / names["given"], index=False)
        (tmp / names["report"]).write_text(report_markdown(result, cost, command))
        if experiment is not None:
            traced = list(dict.fromkeys(t.meta.prompt_id for t in result.traces))
            (tmp / names["config"]).write_text(tuned_from(result, experiment, command) + yaml.safe_dump(
                tuned_experiment(result, experiment, top, traced), sort_keys=False))
        os.chmod(tmp, 0o755)
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {key: out / name for key, name in names.items()}


def _replace_folder(new: Path, out: Path) -> None:
    """Put the folder ``new`` at ``out``: the old one moves aside first and is deleted after, so ``out`` always
    names a whole set (a kill between the two renames leaves the old set under ``.OUT.old``, restored by the
    next run)."""
    old = out.with_name(f".{out.name}.old")
    if old.exists() and not out.exists():  # a previous run was killed between the renames
        old.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def check_tune_flags(held_out: float, top: int) -> None:
    """``--held-out`` in (0, 1), ``--top`` >= 1, NaN refused: one line naming the flag, before anything is read."""
    if not isinstance(held_out, (int, float)) or not math.isfinite(held_out) or not 0 < held_out < 1:
        raise ValueError(f"--held-out: must be a number in (0, 1) (got {held_out})")
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"--top: must be >= 1 (got {top})")


def tuned_from(result: TuneResult, experiment: dict[str, Any], command: str) -> str:
    """The comment that opens tuned.yaml: which traces (drafter, dtype, quantization, sampling) its settings came
    from, so a config tuned for one drafter or temperature is not mistaken for another's."""
    s = result.sampling
    setting = "greedy (temperature 0)" if s is None else (
        f"temperature {s['temperature']}, top-p {s['top_p']}, top-k {s['top_k']}; {s['trajectories']} trajectories "
        f"of {s['prompts']} prompts x {s['draws']} draws")
    dtype = result.traces[0].meta.dtype if result.traces else ""
    b = result.batch
    batched = "" if b is None else (f"; replayed in batches of {b.size}, rounds priced by the batch costs {b.path} "
                                    f"({_measured(b.costs)})")
    windows = "" if not result.windows else (f"; drafter windows swept: the whole sequence and "
                                             f"{', '.join(map(str, result.windows))} tokens (traces-wN)")
    return (f"# Settings tuned by `{command}` on traces of drafter {experiment.get('drafter_model_path')} "
            f"({dtype}, quantization {experiment.get('drafter_quantization', 'none')}) and verifier "
            f"{experiment.get('verifier_model_path')}, {setting}{batched}{windows}.\n")


def check_split(traces: list[Trace], held_out: float) -> None:
    """Every category needs >= 1 tuning and >= 1 held-out prompt at this share (refused before the sweep)."""
    counts: dict[str, int] = {}
    for t in {t.meta.prompt_id: t for t in traces}.values():  # prompts, not trajectories
        counts[t.meta.category] = counts.get(t.meta.category, 0) + 1
    for category, n in sorted(counts.items()):
        n_held = min(n - 1, int(round(held_out * n)))
        if n_held < 1:
            raise ValueError(f"--held-out: {held_out} leaves category {category!r} ({n} traced prompt"
                             f"{'s' if n > 1 else ''}) no held-out prompt; trace more prompts or raise --held-out")


def tuned_experiment(result: TuneResult, experiment: dict[str, Any], top: int = 4,
                     traced_prompts: list[str] = ()) -> dict[str, Any]:
    """An experiment config running the best fixed k, the ``top`` best other rules (overall choice on the tuning
    prompts), goodput, and the best of them with the gate toggled, on prompts other than ``traced_prompts``."""
    overall = result.best[result.best.category == ALL].sort_values("tune_speedup", ascending=False)
    fixed = overall[overall.strategy == "fixed"]
    others = overall[overall.strategy != "fixed"].head(top)
    goodput = overall[(overall.strategy == "goodput") & ~overall.strategy.isin(others.strategy)]  # ours, always
    methods = [json.loads(p) for p in pd.concat([fixed, others, goodput]).params]
    name = f"{experiment.get('experiment_name', 'exp')}-tuned"
    methods += [{**json.loads(p), "gate": not EntropyConfig().gate} for p in others.head(1).params]  # gate toggled
    excluded = sorted({*(experiment.get("exclude_prompts") or []), *traced_prompts})
    return {**experiment, "experiment_name": name, "output_dir": str(Path(experiment["output_dir"]).parent / name),
            "methods": methods, "grid": None, "ablation": None,
            "exclude_prompts": excluded}  # confirm on prompts tuning never saw


def report_markdown(result: TuneResult, cost: CostModel, command: str) -> str:
    best = result.best
    overall = best[best.category == ALL].sort_values("held_out_speedup", ascending=False)
    lines = [
        "# entspec tune", "",
        f"Command: `{command}`", "",
        f"Replayed {result.configurations} configurations × {result.sweep.prompt.nunique()} "
        f"{'prompts' if result.sampling is None else 'realisations (trajectories × draws)'} in "
        f"{result.seconds:.1f} s. {_costs_line(result, cost)} "
        f"Goodput calibration (tuning prompts): beta(H) = sigmoid({result.calibration['calib_intercept']:.3f} "
        f"{result.calibration['calib_slope']:+.3f} H).", "",
        *(_batch_lines(result.batch) if result.batch is not None else
          ["Speedup = predicted plain-decoding time / predicted rule time (sums over prompts). *of oracle*: true "
           "oracle time / rule time, at the rule's cap and uncapped. Chosen on the tuning prompts, reported on the "
           "held-out prompts.", ""] if result.sampling is None else [
            f"**Sampling** (temperature {result.sampling['temperature']}, top-p {result.sampling['top_p']}, top-k "
            f"{result.sampling['top_k']}): {result.sampling['trajectories']} sampled trajectories of "
            f"{result.sampling['prompts']} prompts, each replayed on {result.sampling['draws']} draws of its "
            "verdicts. Every figure is an **expectation** (docs/replay.md, sampling), not a measured run. Speedup = "
            "expected plain-decoding time / expected rule time (sums over trajectories and draws). *of oracle*: the "
            "sampling oracle's expected time (the best draft-length schedule under the same model) / rule time, at "
            "the rule's cap and uncapped; a rule sees its drafted tokens, the schedule does not, so it can exceed 1. "
            "Chosen on the tuning prompts, reported on the held-out prompts.", ""]),
        "## Best configuration per rule (chosen over all categories)", "",
        markdown_table(("rule", "configuration", "tuning speedup", "held-out speedup", "gate toggled",
                        "of oracle at cap", "of oracle"),
                       [(r.strategy, f"`{_short_params(r.params)}`", fmt(r.tune_speedup), fmt(r.held_out_speedup),
                         fmt(r.held_out_speedup_gate_toggled), fmt(r.of_oracle_at_cap), fmt(r.of_oracle))
                        for r in overall.itertuples()]),
    ]
    if len(overall):
        name = ("Clairvoyant lock-step schedule" if result.batch is not None
                else "True oracle" if result.sampling is None else "Sampling oracle")
        plain = "batched plain decoding" if result.batch is not None else "plain decoding"
        lines += ["", f"{name} (uncapped) on the held-out prompts: {fmt(overall.oracle_speedup.iloc[0])}× {plain}.",
                  ""]
    if result.given is not None:
        lines += ["## Given configurations (`--given`: judged on the same split, not chosen from)", "",
                  markdown_table(("rule", "configuration", "tuning speedup", "held-out speedup", "of oracle at cap",
                                  "of oracle"),
                                 [(r.strategy, f"`{_short_params(r.params)}`", fmt(r.tune_speedup),
                                   fmt(r.held_out_speedup), fmt(r.of_oracle_at_cap), fmt(r.of_oracle))
                                  for r in result.given.itertuples()]), ""]
    per_cat = best[best.category != ALL]
    if len(per_cat):
        table = per_cat.pivot(index="strategy", columns="category", values="held_out_speedup")
        lines += ["## Held-out speedup with a configuration chosen per category", "",
                  markdown_table(("rule", *table.columns),
                                 [(strategy, *(fmt(v) for v in row.values)) for strategy, row in table.iterrows()])]
        if result.windows:
            chosen = per_cat.assign(window=[json.loads(p).get("drafter_context", "all") for p in per_cat.params])
            table = chosen.pivot(index="strategy", columns="category", values="window")
            lines += ["", f"## Drafter window chosen per category (tokens; *all*: the whole sequence; swept: all, "
                          f"{', '.join(map(str, result.windows))})", "",
                      markdown_table(("rule", *table.columns),
                                     [(strategy, *row.values) for strategy, row in table.iterrows()])]
    return "\n".join(lines) + "\n"


def _costs_line(result: TuneResult, cost: CostModel) -> str:
    """What the rounds were priced with: the traces' cost model, or the batch costs at the batch size."""
    if result.batch is None:
        return (f"Cost model: {cost.device}, {cost.dtype}; drafter step {cost.draft_step_s * 1e3:.1f} ms, verifier "
                f"call {cost.verify(1) * 1e3:.1f} ms (1 token) / {cost.verify(17) * 1e3:.1f} ms (17 tokens), "
                f"c = {cost.cost_ratio:.3f}.")
    b, costs = result.batch, result.batch.costs
    return (f"Batch costs: `{b.path}` ({_measured(costs)}); at {b.size} rows a drafter step "
            f"{costs.draft(b.size) * 1e3:.1f} ms, a verifier call {costs.verify(b.size, 1) * 1e3:.1f} ms (1 position "
            f"per row) / {costs.verify(b.size, 9) * 1e3:.1f} ms (9 positions per row).")


def _batch_lines(batch: BatchSetting) -> list[str]:
    return [f"**Batch size {batch.size}**: every configuration is replayed in batches of {batch.size} prompts "
            "(each split's prompts in prompt order; docs/replay.md, batch replay), with both batch stops. Speedup = "
            "replayed batched plain-decoding time / replayed rule time (sums over prompts, each charged its share "
            "of its batch's rounds; prefill not modelled). *of oracle*: the clairvoyant lock-step schedule's time / "
            "rule time, at the rule's cap and uncapped (every row drafts what the verifier will accept, each round at "
            "the depth with the most tokens per second: a reference, not a bound). Chosen on the tuning prompts, "
            "reported on the held-out prompts.", ""]


def _short_params(params: str) -> str:
    data = json.loads(params)
    hidden = {"strategy", "calib_intercept", "calib_slope", "cost_ratio", "verify_slope", "verify_curve"}
    if data.get("calib_prob"):
        data["calibration"] = "entropy + probability"
    if data.get("calib_curve"):
        data["calibration"] = "isotonic"
    if data.get("next_intercept") is not None:
        data["next-token calibration"] = "yes"
    hidden |= {"calib_prob", "next_intercept", "next_slope", "next_prob", "calib_curve"}
    return ", ".join(f"{k}={v}" for k, v in data.items() if k not in hidden) or "defaults"


def _measured(costs: BatchCostModel) -> str:
    """Where and when batch costs were measured, as far as the file says."""
    return ", ".join(x for x in (costs.device, costs.dtype, costs.measured_at and f"measured {costs.measured_at}")
                     if x) or "device not recorded"
