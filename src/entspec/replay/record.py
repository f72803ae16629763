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
from .cost import CostModel, calibrate
from .trace import Trace, record_trace, trace_path

log = logging.getLogger(__name__)

COST_FILE = "cost_model.json"


def traces_dir(config: ExperimentConfig) -> Path:
    return Path(config.output_dir) / "traces"


def record_experiment(config: ExperimentConfig, *, cap: int = 20, progress: bool = True,
                      recalibrate: bool = False) -> Path:
    """Trace every prompt of ``config`` (greedy, its ``max_new_tokens``); return the traces folder."""
    from ..experiment.runner import ExperimentRunner

    if config.temperature != 0:
        raise ValueError(f"temperature: traces are greedy (got {config.temperature}); "
                         "sampled-mode replay is not built yet")
    if not isinstance(cap, int) or cap < 1:
        raise ValueError(f"cap: must be an integer >= 1 (got {cap!r})")
    folder = traces_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.npz"))
    if existing and Trace.load(existing[0]).meta.cap != cap:
        raise ValueError(f"cap: {folder} holds traces recorded with cap {Trace.load(existing[0]).meta.cap} "
                         f"(got {cap}); use that cap or another output_dir")
    (Path(config.output_dir) / "configs").mkdir(parents=True, exist_ok=True)
    runner = ExperimentRunner(config, progress=progress)
    runner.prompts = runner._load_prompts()
    todo = [i for i, p in enumerate(runner.prompts) if not trace_path(folder, i, p.id).exists()]
    cost_path = folder / COST_FILE
    if not todo and cost_path.exists() and not recalibrate:
        return folder
    runner._load()
    pair = runner.pair
    (folder / "experiment.yaml").write_text(config.to_yaml())  # what `entspec tune` writes tuned.yaml from
    (folder / "prompts.json").write_text(json.dumps(
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


def load_cost_model(folder: str | Path) -> CostModel:
    path = Path(folder) / COST_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no cost model; `entspec trace` calibrates one")
    return CostModel.load(path)
