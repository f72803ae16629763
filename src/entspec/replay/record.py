"""Record the traces (and the cost model) of an experiment's prompts into ``OUTPUT_DIR/traces``.

Greedy (``temperature`` 0): one trace per prompt (`entspec.replay.trace`). Sampling (``temperature`` > 0, with the
config's top-k / top-p): ``trajectories`` sampling traces per prompt, trajectory seeds 0..K-1
(`entspec.replay.sampled`). Resumable like the runner: a trace file that exists and reads is skipped; each file is
written atomically. The cost model is calibrated once, on the first prompt, at the config's sampling settings, and
saved as ``traces/cost_model.json``.

With a drafter window (``drafter_context`` N) the traces and the cost model are those of the windowed drafter
(`entspec.replay.trace`, `entspec.replay.sampled`; the cost model's drafter step and prefill read N tokens) and go to
their own folder, ``OUTPUT_DIR/traces-wN``: `entspec tune --drafter-contexts` reads one folder per window. They are
recorded along the whole-sequence traces' outputs when those exist (greedy: the same output; sampling: the same
trajectory of each seed), so windows are compared on the same tokens and the verifier decodes them once. When the
whole-sequence traces have their cost model, the window's is that model with the drafter's costs measured relative
to the whole sequence's in one process (`entspec.replay.cost.calibrate_window`: minutes instead of a full
calibration, and no drift between two calibrations in the ratio); otherwise it is a full calibration.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from ..experiment import ExperimentConfig
from .cost import BATCH_COST_FILE, COST_FILE, CostModel, calibrate, calibrate_window
from ..atomic import atomic_write_text
from ..engine.config import ConfigError
from ..engine.sampling import SamplingParams
from .sampled import read_trace, record_sampled_trace, sampled_trace_path, trace_kind
from .trace import record_trace, trace_files, trace_path

log = logging.getLogger(__name__)

def traces_dir(config: ExperimentConfig, drafter_context: int | None = None) -> Path:
    """``OUTPUT_DIR/traces``, or ``OUTPUT_DIR/traces-wN`` for a drafter window of N tokens."""
    return Path(config.output_dir) / ("traces" if not drafter_context else f"traces-w{drafter_context}")


# What a traces folder is one experiment of: a rerun with any of these changed is refused, naming it.
IDENTITY = ("drafter_model_path", "verifier_model_path", "dataset_name", "dataset_split", "num_samples", "seeds",
            "categories", "exclude_prompts", "max_sequence_length", "max_new_tokens", "temperature", "top_k", "top_p",
            "dtype", "drafter_quantization", "cpu_linear")
TRAJECTORIES = 4  # sampling trajectories per prompt (`entspec trace --trajectories`)


def record_experiment(config: ExperimentConfig, *, cap: int = 20, progress: bool = True,
                      recalibrate: bool = False, trajectories: int | None = None,
                      drafter_context: int | None = None) -> Path:
    """Trace every prompt of ``config`` (its ``max_new_tokens``; greedy, or ``trajectories`` sampled trajectories
    per prompt when its ``temperature`` > 0; with a ``drafter_context`` window into ``traces-wN``); return the
    traces folder.

    One process per traces folder (the runner's lock); the folder is one experiment (`IDENTITY`, the cap and the
    number of trajectories, in ``traces/experiment.yaml`` and ``traces/trace.json``): a rerun with another setting
    is refused naming it; a trace file that cannot be read is recorded again."""
    from ..lock import FolderLock
    from ..experiment.runner import ExperimentRunner

    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise ValueError(f"cap: must be an integer >= 1 (got {cap!r})")
    sampling = SamplingParams(config.temperature, config.top_k, config.top_p)
    if trajectories is not None and (not isinstance(trajectories, int) or isinstance(trajectories, bool)
                                     or trajectories < 1):
        raise ValueError(f"trajectories: must be an integer >= 1 (got {trajectories!r})")
    if sampling.greedy and trajectories not in (None, 1):
        raise ValueError(f"trajectories: greedy traces have one trajectory per prompt (got {trajectories}; "
                         "temperature is 0)")
    if drafter_context is not None and (isinstance(drafter_context, bool) or not isinstance(drafter_context, int)
                                        or drafter_context < 1):
        raise ValueError(f"drafter_context: must be an integer >= 1 (got {drafter_context!r})")
    folder = traces_dir(config, drafter_context)
    folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder):
        count = 1 if sampling.greedy else (trajectories or _recorded_trajectories(folder)  # a window: the base's
                                           or drafter_context and _recorded_trajectories(traces_dir(config))
                                           or TRAJECTORIES)
        _check_same_experiment(folder, config, cap, None if sampling.greedy else count, drafter_context or 0)
        runner = ExperimentRunner(config, progress=progress)
        runner.prompts = runner.load_prompts()
        if sampling.greedy:
            paths = {(i, 0): trace_path(folder, i, p.id) for i, p in enumerate(runner.prompts)}
        else:
            paths = {(i, k): sampled_trace_path(folder, i, p.id, k) for i, p in enumerate(runner.prompts)
                     for k in range(count)}
        todo = [key for key, path in paths.items() if not _readable(path)]
        cost_path = folder / COST_FILE
        # batches: the batch costs of the same pair, which `entspec tune --batch-size` prices batch rounds with
        batch_path = folder / BATCH_COST_FILE if sampling.greedy and config.batch_size > 1 else None
        calibrated = cost_path.exists() and (batch_path is None or _covers(batch_path, config.batch_size))
        if not todo and calibrated and not recalibrate:
            return folder
        runner.load()
        pair = runner.pair
        atomic_write_text(folder / "experiment.yaml", config.to_yaml())  # what `entspec tune` writes tuned.yaml from
        info = {"cap": cap, **({} if sampling.greedy else {"trajectories": count}),
                **({"drafter_context": drafter_context} if drafter_context else {})}
        atomic_write_text(folder / "trace.json", json.dumps(info))
        atomic_write_text(folder / "prompts.json", json.dumps(
            [{"index": i, "id": p.id, "category": p.category} for i, p in enumerate(runner.prompts)], indent=1))
        for i, k in tqdm(todo, desc="trace", disable=not progress):
            prompt = runner.prompts[i]
            common = dict(max_new_tokens=config.max_new_tokens, cap=cap, prompt_id=prompt.id, category=prompt.category,
                          drafter_context=drafter_context,
                          output=_whole_sequence_output(config, drafter_context, i, prompt.id,
                                                        None if sampling.greedy else k))
            if sampling.greedy:
                trace = record_trace(pair.drafter, pair.verifier, runner.encoded[i], **common)
            else:
                trace = record_sampled_trace(pair.drafter, pair.verifier, runner.encoded[i], sampling=sampling,
                                             seed=k, **common)
            trace.save(paths[(i, k)])
        if recalibrate or not cost_path.exists():
            base_path = traces_dir(config, None) / COST_FILE
            if drafter_context and base_path.exists():  # the window's drafter costs relative to the whole sequence's
                log.info("measuring the window's drafter costs against %s on %s", base_path, runner.prompts[0].id)
                calibrate_window(pair.drafter, pair.verifier, runner.encoded[0], CostModel.load(base_path),
                                 drafter_context, sampling=sampling).save(cost_path)
            else:
                log.info("calibrating the cost model on %s", runner.prompts[0].id)
                calibrate(pair.drafter, pair.verifier, runner.encoded[0], sampling=sampling,
                          drafter_context=drafter_context).save(cost_path)
        if batch_path is not None and (recalibrate or not _covers(batch_path, config.batch_size)):
            runner.calibrate_batch_costs().save(batch_path)
    return folder


def _covers(path: Path, batch_size: int) -> bool:
    """Whether the batch costs at ``path`` were measured up to ``batch_size`` rows (unreadable: no)."""
    from ..engine.batch_cost import BatchCostModel

    try:
        return BatchCostModel.load(path).verify_rows[-1] >= batch_size
    except (OSError, ValueError):
        return False


def _whole_sequence_output(config: ExperimentConfig, drafter_context: int | None, index: int, prompt_id: str,
                           seed: int | None = None) -> list[int] | None:
    """For a windowed trace, the verifier's output from the same experiment's whole-sequence trace of the prompt
    (``seed``: that trajectory's, for a sampling trace): the drafter's window never changes it, so the verifier
    decodes it once and windows are compared on the same tokens. None to decode it."""
    if not drafter_context:
        return None
    folder = traces_dir(config)
    path = trace_path(folder, index, prompt_id) if seed is None else sampled_trace_path(folder, index, prompt_id, seed)
    try:
        trace = read_trace(path)
        _check_same_experiment(folder, config, trace.meta.cap,
                               None if seed is None else _recorded_trajectories(folder) or 0)
    except (OSError, ValueError, ConfigError):  # missing, unreadable or of another setting: decode it
        return None
    return trace.output.tolist()


def _recorded_trajectories(folder: Path) -> int | None:
    """The trajectories per prompt a folder was recorded with (a rerun without ``--trajectories`` keeps them)."""
    try:
        return json.loads((folder / "trace.json").read_text()).get("trajectories")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None  # missing or unreadable: `_check_same_experiment` names an unreadable file


def _check_same_experiment(folder: Path, config: ExperimentConfig, cap: int, trajectories: int | None,
                           drafter_context: int = 0) -> None:
    """Refuse to add traces of another setting to ``folder`` (one line naming the first difference)."""
    saved = folder / "experiment.yaml"
    traces = trace_files(folder)
    if saved.is_file():
        try:
            previous = ExperimentConfig.from_yaml(saved).to_dict()
            if "cpu_linear" not in (yaml.safe_load(saved.read_text()) or {}):
                previous["cpu_linear"] = "torch"  # recorded before the field: every Linear ran as PyTorch's
        except ConfigError as err:
            raise ConfigError(f"{saved}: unreadable ({err}); it says what the traces were recorded with: restore "
                              "it, or use another output_dir") from None
        for name in IDENTITY:
            if previous.get(name) != getattr(config, name):
                raise ConfigError(f"{name}: {folder} holds traces recorded with {name}={previous.get(name)!r} "
                                  f"(got {getattr(config, name)!r}); use another output_dir")
    elif traces:
        raise ConfigError(f"{saved}: missing; it says what the traces in {folder} were recorded with: restore it, "
                          "or use another output_dir")
    info = folder / "trace.json"
    try:
        saved_info = json.loads(info.read_text()) if info.is_file() else {}
    except json.JSONDecodeError as err:
        raise ConfigError(f"{info}: unreadable ({err}); it says what the traces were recorded with: restore it, or "
                          "use another output_dir") from None
    recorded = saved_info.get("cap")
    if recorded is None and traces and _readable(traces[0]):
        recorded = read_trace(traces[0]).meta.cap
    if recorded is not None and recorded != cap:
        raise ConfigError(f"cap: {folder} holds traces recorded with cap {recorded} (got {cap}); use that cap or "
                          "another output_dir")
    window = saved_info.get("drafter_context", 0)
    if traces and window != drafter_context:
        raise ConfigError(f"drafter_context: {folder} holds traces recorded with drafter window {window or 'none'} "
                          f"(got {drafter_context or 'none'}); use another output_dir")
    kinds = {trace_kind(p) for p in traces[:1] if _readable(p)}
    if kinds and kinds != {"greedy" if trajectories is None else "sampled"}:
        raise ConfigError(f"temperature: {folder} holds {kinds.pop()} traces; use another output_dir")
    previous_count = saved_info.get("trajectories")
    if trajectories is not None and previous_count is not None and previous_count != trajectories:
        raise ConfigError(f"trajectories: {folder} holds {previous_count} sampled trajectories per prompt (got "
                          f"{trajectories}); use that number or another output_dir")


def _readable(path: Path) -> bool:
    """The trace file exists and loads (a truncated or empty one is recorded again)."""
    if not path.exists():
        return False
    try:
        read_trace(path)
    except ValueError as err:
        log.warning("%s; recording it again", err)
        return False
    return True
