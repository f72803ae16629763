"""Record the traces (and the cost model) of an experiment's prompts into ``OUTPUT_DIR/traces``.

Resumable like the runner: a prompt whose trace file exists is skipped; each file is written atomically.
The cost model is calibrated once, on the first prompt, and saved as ``traces/cost_model.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm.auto import tqdm

from ..experiment import ExperimentConfig
from .cost import COST_FILE, calibrate
from ..atomic import atomic_write_text
from ..engine.config import ConfigError
from .trace import Trace, record_trace, trace_files, trace_path

log = logging.getLogger(__name__)

def traces_dir(config: ExperimentConfig) -> Path:
    return Path(config.output_dir) / "traces"


# What a traces folder is one experiment of: a rerun with any of these changed is refused, naming it.
IDENTITY = ("drafter_model_path", "verifier_model_path", "dataset_name", "dataset_split", "num_samples", "seeds",
            "categories", "exclude_prompts", "max_sequence_length", "max_new_tokens", "temperature", "dtype",
            "drafter_quantization")


def record_experiment(config: ExperimentConfig, *, cap: int = 20, progress: bool = True,
                      recalibrate: bool = False) -> Path:
    """Trace every prompt of ``config`` (greedy, its ``max_new_tokens``); return the traces folder.

    One process per traces folder (the runner's lock); the folder is one experiment (`IDENTITY` and the cap, in
    ``traces/experiment.yaml``): a rerun with another setting is refused; a trace file that cannot be read is
    recorded again."""
    from ..lock import FolderLock
    from ..experiment.runner import ExperimentRunner

    if config.temperature != 0:
        raise ValueError(f"temperature: traces are greedy (got {config.temperature}); "
                         "sampled-mode replay is not built yet")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise ValueError(f"cap: must be an integer >= 1 (got {cap!r})")
    folder = traces_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder):
        _check_same_experiment(folder, config, cap)
        runner = ExperimentRunner(config, progress=progress)
        runner.prompts = runner.load_prompts()
        todo = [i for i, p in enumerate(runner.prompts) if not _readable(trace_path(folder, i, p.id))]
        cost_path = folder / COST_FILE
        if not todo and cost_path.exists() and not recalibrate:
            return folder
        runner.load()
        pair = runner.pair
        atomic_write_text(folder / "experiment.yaml", config.to_yaml())  # what `entspec tune` writes tuned.yaml from
        atomic_write_text(folder / "trace.json", json.dumps({"cap": cap}))
        atomic_write_text(folder / "prompts.json", json.dumps(
            [{"index": i, "id": p.id, "category": p.category} for i, p in enumerate(runner.prompts)], indent=1))
        for i in tqdm(todo, desc="trace", disable=not progress):
            prompt = runner.prompts[i]
            trace = record_trace(pair.drafter, pair.verifier, runner.encoded[i], max_new_tokens=config.max_new_tokens,
                                 cap=cap, prompt_id=prompt.id, category=prompt.category)
            trace.save(trace_path(folder, i, prompt.id))
        if recalibrate or not cost_path.exists():
            log.info("calibrating the cost model on %s", runner.prompts[0].id)
            calibrate(pair.drafter, pair.verifier, runner.encoded[0]).save(cost_path)
    return folder


def _check_same_experiment(folder: Path, config: ExperimentConfig, cap: int) -> None:
    """Refuse to add traces of another setting to ``folder`` (one line naming the first difference)."""
    saved = folder / "experiment.yaml"
    traces = trace_files(folder)
    if saved.is_file():
        try:
            previous = ExperimentConfig.from_yaml(saved).to_dict()
        except ConfigError as err:
            raise ConfigError(f"{saved}: unreadable ({err}); it says what the traces were recorded with: restore "
                              "it, or use another output_dir") from None
        for name in IDENTITY:
            if previous[name] != getattr(config, name):
                raise ConfigError(f"{name}: {folder} holds traces recorded with {name}={previous[name]!r} "
                                  f"(got {getattr(config, name)!r}); use another output_dir")
    elif traces:
        raise ConfigError(f"{saved}: missing; it says what the traces in {folder} were recorded with: restore it, "
                          "or use another output_dir")
    info = folder / "trace.json"
    recorded = json.loads(info.read_text()).get("cap") if info.is_file() else None
    if recorded is None and traces and _readable(traces[0]):
        recorded = Trace.load(traces[0]).meta.cap
    if recorded is not None and recorded != cap:
        raise ConfigError(f"cap: {folder} holds traces recorded with cap {recorded} (got {cap}); use that cap or "
                          "another output_dir")


def _readable(path: Path) -> bool:
    """The trace file exists and loads (a truncated or empty one is recorded again)."""
    if not path.exists():
        return False
    try:
        Trace.load(path)
    except ValueError as err:
        log.warning("%s; recording it again", err)
        return False
    return True
