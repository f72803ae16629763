"""`ExperimentRunner`: run every (method, prompt, seed) unit once, append-only, resumable after any crash.

Layout of ``output_dir``::

    configs/experiment.yaml   the resolved config          configs/manifest.json   git hash, versions, device, date
    results/results.jsonl     one row per finished unit    checkpoints/progress.json  done / total / unit in flight
    plots/                    the analysis (figures, processed_data.csv, final_report.md)

Each finished unit appends one JSONL row and fsyncs it before the next unit starts; a rerun skips the
units whose key is already in the file. Killed at any moment (SIGKILL included), a rerun loses at most the
unit that was in flight and never writes a row twice. One run at a time holds the folder (``.lock``, with the
holder's PID); the saved config is written atomically and a resume is refused when it cannot be read. Methods
run interleaved per prompt (their order
rotated from prompt to prompt) so that machine noise spreads evenly over them. With ``executor: ray``
(`ray_executor`) Ray workers run the units, one prompt at a time each, and this process stays the only writer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import yaml

from ..atomic import atomic_write_text
from ..engine.batch_cost import BatchCostModel, calibrate_batch
from ..engine.config import ConfigError
from ..records import DamagedRowError, ResultRow, append_jsonl, read_jsonl
from .config import ExperimentConfig, canonical_dtype
from ..lock import FolderLock
from .manifest import manifest
from .methods import MethodSpec, expand_methods

log = logging.getLogger(__name__)

# Fields that define what a results row means: resuming into a folder made with other values is refused.
IDENTITY_FIELDS = ("drafter_model_path", "verifier_model_path", "dataset_name", "dataset_split",
                   "max_sequence_length", "max_new_tokens", "temperature", "top_k", "top_p", "dtype",
                   "drafter_quantization", "cpu_linear", "ignore_eos", "kv_cache", "compile", "batch_size")


@dataclass
class Unit:
    """The unit of work: one method on one prompt with one seed."""

    method: MethodSpec
    prompt_index: int
    seed: int
    key: str


class ExperimentRunner:
    """Runs an `ExperimentConfig`: ``ExperimentRunner(config).run_full_experiment()``."""

    def __init__(self, config: ExperimentConfig, *, progress: bool = True) -> None:
        self.config = config
        self.methods = expand_methods(config)
        self.output_dir = Path(config.output_dir)
        self.progress = progress
        self.pair = None
        self.prompts: list = []
        self.encoded: list[torch.Tensor] = []
        self.costs: dict[str, BatchCostModel] = {}  # the batch costs per batch layout (`batch_costs`), read at warm-up
        self.pad_token_id = 0

    # ------------------------------------------------------------------ paths
    @property
    def results_path(self) -> Path:
        return self.output_dir / "results" / "results.jsonl"

    @property
    def progress_path(self) -> Path:
        return self.output_dir / "checkpoints" / "progress.json"

    # ------------------------------------------------------------------ entry points
    def run_full_experiment(self) -> dict[str, Any]:
        """Run (or resume) the experiment, then analyze it into ``output_dir/plots``."""
        started = time.perf_counter()
        results = self.run()
        summary: dict[str, Any] = {"results": str(results), "rows": sum(1 for _ in read_jsonl(results)),
                                   "run_time_s": time.perf_counter() - started}
        if self.config.analyze:
            from ..analysis import AnalysisPipeline

            summary["analysis"] = AnalysisPipeline(self.output_dir, self.output_dir / "plots").run_full_analysis()
        return summary

    def run(self) -> Path:
        """Run every unit not yet in ``results.jsonl``; return the results path.

        Everything that can be checked without the models is checked first (device, the folder's lock and
        saved config, the results file, the prompts, unique unit keys); a rerun with nothing left to do
        never loads the models.
        """
        from ..models import resolve_device

        if self.config.executor == "local":  # Ray workers check the device on their own nodes
            resolve_device(self.config.device)
        with FolderLock(self.output_dir):
            self._prepare_output_dir()
            done = self._finished_keys()
            self.prompts = self.load_prompts()
            units = self.units()
            _check_unique_keys(units)
            todo = [u for u in units if u.key not in done]
            log.info("%s: %d units, %d already done, %d to run", self.config.experiment_name, len(units),
                     len(units) - len(todo), len(todo))
            if todo and self.config.executor == "ray":
                from .ray_executor import run_on_ray

                run_on_ray(self, units, todo)
            elif todo:
                self.load()
                self.warm_up({u.method.id for u in todo})
                self._run_units(units, todo)
            self.write_progress(len(units), len(units), None)
        return self.results_path

    def _run_units(self, units: list[Unit], todo: list[Unit]) -> None:
        bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=self.config.experiment_name,
                   unit="gen", disable=not self.progress, dynamic_ncols=True)
        if self.config.batch_size > 1:
            self._run_batches(units, todo, bar)
        for i, unit in enumerate(todo if self.config.batch_size == 1 else []):
            self.write_progress(len(units), len(units) - len(todo) + i, unit.key)
            bar.set_postfix_str(f"{unit.method.id} | {self.prompts[unit.prompt_index].id}", refresh=False)
            append_jsonl(self.results_path, self.run_unit(unit))  # flushed and fsynced: this unit is now safe
            bar.update(1)
        bar.close()

    def _run_batches(self, units: list[Unit], todo: list[Unit], bar: tqdm) -> None:
        """``batch_size`` > 1: a batch is the unit in flight. Batches are fixed by the full unit list (the same
        rows share a batch on every resume); a batch with any row missing runs whole and appends only the missing
        rows, so a resumed row was measured in the batch it belongs to."""
        missing = {u.key for u in todo}
        done = len(units) - len(todo)
        for batch in self.batches(units):
            rows = [u for u in batch if u.key in missing]
            if not rows:
                continue
            self.write_progress(len(units), done, [u.key for u in rows])
            bar.set_postfix_str(f"{batch[0].method.id} | batch of {len(batch)}", refresh=False)
            for unit, row in zip(batch, self.run_batch(batch)):
                if unit.key in missing:
                    append_jsonl(self.results_path, row)
            done += len(rows)
            bar.update(len(rows))

    def batches(self, units: list[Unit]) -> list[list[Unit]]:
        """Units grouped into batches of ``batch_size`` prompts with one method and seed, in prompt order; the
        batches interleaved by method (their order rotated from batch to batch) like single units."""
        groups: dict[tuple[str, int], list[Unit]] = {}
        for unit in sorted(units, key=lambda u: u.prompt_index):
            groups.setdefault((unit.method.id, unit.seed), []).append(unit)
        size = self.config.batch_size
        chunks = {key: [group[i:i + size] for i in range(0, len(group), size)] for key, group in groups.items()}
        methods = list(dict.fromkeys(m.id for m in self.methods))
        out = []
        for b in range(max(len(c) for c in chunks.values())):
            for seed in self.config.seeds:
                for j in range(len(methods)):
                    key = (methods[(j + b) % len(methods)], seed)
                    if key in chunks and b < len(chunks[key]):
                        out.append(chunks[key][b])
        return out

    def run_batch(self, batch: list[Unit]) -> list[ResultRow]:
        """Run one batch (one method and seed, several prompts) on the loaded pair; one results row per unit."""
        settings = self.config.generation_settings()
        method, seed = batch[0].method, batch[0].seed
        results = method.run_batch(self.pair.drafter, self.pair.verifier,
                                   [self.encoded[u.prompt_index] for u in batch], settings, seed, self.pad_token_id,
                                   self.costs)
        prompt_ids = [self.prompts[u.prompt_index].id for u in batch]
        for result in results:  # which rows shared the batch (the bench pairs methods by it)
            result.batch = {**(result.batch or {}), "prompts": prompt_ids}
        return [self._row(unit, result, settings) for unit, result in zip(batch, results)]

    def run_unit(self, unit: Unit, *, worker: dict[str, Any] | None = None) -> ResultRow:
        """Run one unit on the loaded pair; its results row (``worker``: where a Ray worker ran it). Both
        executors run units here."""
        settings = self.config.generation_settings()
        result = unit.method.run(self.pair.drafter, self.pair.verifier, self.encoded[unit.prompt_index], settings,
                                 unit.seed, batch_costs=self.costs)
        return self._row(unit, result, settings, worker)

    def _row(self, unit: Unit, result, settings: dict[str, Any], worker: dict[str, Any] | None = None) -> ResultRow:
        prompt, method = self.prompts[unit.prompt_index], unit.method
        return ResultRow(method=method.id, method_kind=method.kind, strategy=method.strategy,
                         params=dict(method.params), prompt_id=prompt.id, category=prompt.category,
                         seed=unit.seed, config={**method.config_dict(), **settings}, result=result,
                         unit_key=unit.key, worker=worker)

    def units(self) -> list[Unit]:
        """All units, methods interleaved per prompt and seed, their order rotated from prompt to prompt."""
        out = []
        n = len(self.methods)
        for p, prompt in enumerate(self.prompts):
            for seed in self.config.seeds:
                for j in range(n):
                    method = self.methods[(j + p) % n]
                    out.append(Unit(method, p, seed, f"{method.id}|{prompt.id}|{seed}"))
        return out

    # ------------------------------------------------------------------ steps
    def _prepare_output_dir(self) -> None:
        for sub in ("configs", "results", "plots", "checkpoints"):
            (self.output_dir / sub).mkdir(parents=True, exist_ok=True)
        saved = self.output_dir / "configs" / "experiment.yaml"
        if self.results_path.exists() and self.results_path.stat().st_size > 0:
            self._check_identity(saved)
        atomic_write_text(saved, self.config.to_yaml())
        _repair_torn_tail(self.results_path)

    def _check_identity(self, saved: Path) -> None:
        """Resuming into a folder is allowed only with the identity fields its results were made with."""
        previous = _read_saved_config(saved, self.results_path)
        for name in IDENTITY_FIELDS:
            old, new = previous[name], getattr(self.config, name)
            if name == "dtype":
                old, new = canonical_dtype(old), canonical_dtype(new)
            if old != new:
                raise ConfigError(f"{name}: {self.output_dir} holds results made with {name}="
                                  f"{previous[name]!r}; use another output_dir to change it")

    def _finished_keys(self) -> set[str]:
        if not self.results_path.exists():
            return set()
        try:
            return {row.get("unit_key") for row in read_jsonl(self.results_path)}
        except DamagedRowError as err:
            raise DamagedRowError(f"{err} (a rerun then runs its unit again)") from None

    def load_prompts(self) -> list:
        from ..data import load_prompts

        cfg = self.config
        return load_prompts(cfg.dataset_name, split=cfg.dataset_split, num_samples=cfg.num_samples,
                            seed=cfg.seeds[0], categories=cfg.categories, exclude=cfg.exclude_prompts)

    def load(self, write_manifest: bool = True) -> None:
        """Tokenizer and context check first (cheap), then the models, then the manifest (Ray workers: none)."""
        from ..models import encode_prompt, load_model_pair, load_tokenizer
        from ..models.context import check_fits

        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        context = self._context_length()
        tokenizer = load_tokenizer(cfg.verifier_model_path, progress=self.progress)
        self.pad_token_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        budget = cfg.max_sequence_length - cfg.max_new_tokens
        self.encoded = []
        for prompt in self.prompts:
            ids = encode_prompt(tokenizer, prompt.messages or prompt.text)
            if ids.shape[1] > budget:
                log.warning("%s: %d prompt tokens, keeping the last %d (max_sequence_length)",
                            prompt.id, ids.shape[1], budget)
                ids = ids[:, -budget:]
            check_fits(prompt.id, ids.shape[1], cfg.max_new_tokens, context)
            self.encoded.append(ids)
        self.pair = load_model_pair(cfg.drafter_model_path, cfg.verifier_model_path, dtype=cfg.dtype,
                                    device=cfg.device, progress=self.progress,
                                    drafter_quantization=cfg.drafter_quantization, cpu_linear=cfg.cpu_linear)
        if not write_manifest:
            return
        info = manifest(self.pair.device, experiment_name=cfg.experiment_name, methods=[m.id for m in self.methods],
                        prompts=[p.id for p in self.prompts], dtype=str(self.pair.dtype).replace("torch.", ""))
        atomic_write_text(self.output_dir / "configs" / "manifest.json", json.dumps(info, indent=2))

    def _context_length(self) -> int | None:
        """The smaller context of the two models (from their configs, before any weights are loaded)."""
        from transformers import AutoConfig

        from ..models.context import context_length
        from ..models.loading import resolve_model_dir

        cfg = self.config
        lengths = []
        for spec in (cfg.drafter_model_path, cfg.verifier_model_path):
            n = context_length(AutoConfig.from_pretrained(resolve_model_dir(spec, progress=self.progress)))
            if n is not None and cfg.max_sequence_length > n:
                raise ConfigError(f"max_sequence_length: {spec} has a context of {n} positions "
                                  f"(got {cfg.max_sequence_length})")
            lengths.append(n)
        known = [n for n in lengths if n is not None]
        return min(known) if known else None

    @property
    def batch_costs_path(self) -> Path:
        return self.layout_costs_path("padded")

    def layout_costs_path(self, layout: str) -> Path:
        """The folder's batch costs measured in one batch layout: ``configs/batch_costs.json`` (padded) or
        ``configs/batch_costs-packed.json``."""
        return self.output_dir / "configs" / ("batch_costs.json" if layout == "padded" else f"batch_costs-{layout}.json")

    def batch_costs(self, needed: bool = False) -> dict[str, BatchCostModel]:
        """What ``batch_stop="cost"`` methods price drafter steps with, per batch layout they run in:
        ``configs/batch_costs[-layout].json``, measured once with the prompt of median length cached (rows 1, 2, 4,
        ... up to ``batch_size``) and reused on resume (``needed``: the padded one whatever the methods). A file
        measured in another layout is refused naming it. Needs the loaded models."""
        layouts = {m.batch_layout for m in self.methods if m.batch_stop == "cost"} | ({"padded"} if needed else set())
        out = {}
        for layout in sorted(layouts):
            path = self.layout_costs_path(layout)
            if path.is_file():
                costs = BatchCostModel.load(path)
                if costs.layout != layout:
                    raise ValueError(f"{path}: measured in the {costs.layout} batch layout, not {layout}")
            else:
                costs = self.calibrate_batch_costs(layout)
                costs.save(path)
            out[layout] = costs
        return out

    def calibrate_batch_costs(self, layout: str = "padded") -> BatchCostModel:
        """Measure the batch costs of the loaded pair now, in the batch ``layout``, with the prompt of median length
        cached (rows 1, 2, 4, ... up to ``batch_size``)."""
        size = self.config.batch_size
        rows = sorted({b for b in (1, 2, 4, 8, 16, 32) if b < size} | {size})
        median = sorted(range(len(self.encoded)), key=lambda i: self.encoded[i].shape[1])[len(self.encoded) // 2]
        log.info("measuring %s batch costs (rows %s) on %s", layout, rows, self.prompts[median].id)
        return calibrate_batch(self.pair.drafter, self.pair.verifier, self.encoded[median][0].tolist(), tuple(rows),
                               layout=layout)

    def measure_batch_costs(self) -> BatchCostModel:
        """The folder's batch costs, measured now (models loaded for it) if the folder has none: batch replay's
        check (`entspec.replay.batch_check`) prices every method's rounds with them, whatever the methods."""
        with FolderLock(self.output_dir):
            if self.batch_costs_path.is_file():
                return BatchCostModel.load(self.batch_costs_path)
            if self.pair is None:
                self.prompts = self.load_prompts()
                self.load(write_manifest=False)
            return self.batch_costs(needed=True)["padded"]

    def warm_up(self, methods: set[str] | None = None) -> None:
        """Before timing: compile every graph a unit can use (with ``compile``), measure the batch costs (when a
        method needs them), then one short untimed generation per method (``methods``: only these ids, e.g. the
        ones with units left on a resume), so allocator, kernels and caches settle."""
        self.costs = self.batch_costs()
        settings = self.config.generation_settings()
        prompt_len = self.config.max_sequence_length - self.config.max_new_tokens  # the longest prompt kept
        todo = [m for m in self.methods if methods is None or m.id in methods]
        for method in tqdm(todo, desc="warm-up", disable=not self.progress, leave=False):
            method.warm_up(self.pair.drafter, self.pair.verifier, prompt_len, settings)
            if self.config.warmup_tokens and self.config.batch_size > 1:
                method.run_batch(self.pair.drafter, self.pair.verifier, self.encoded[:self.config.batch_size],
                                 {**settings, "max_new_tokens": self.config.warmup_tokens}, 0, self.pad_token_id,
                                 self.costs)
            elif self.config.warmup_tokens:
                method.run(self.pair.drafter, self.pair.verifier, self.encoded[0],
                           {**settings, "max_new_tokens": self.config.warmup_tokens}, seed=0, batch_costs=self.costs)

    def write_progress(self, total: int, done: int, in_flight: str | list[str] | None) -> None:
        atomic_write_text(self.progress_path, json.dumps({"done": done, "total": total, "in_flight": in_flight,
                                                          "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}))


def _check_unique_keys(units: list[Unit]) -> None:
    """Two units with one key would share one results row: the second would never run after a resume."""
    seen: set[str] = set()
    for unit in units:
        if unit.key in seen:
            raise ConfigError(f"unit key {unit.key!r} occurs twice (method id, prompt id and seed must "
                              "identify a unit); make the prompt ids, seeds or methods distinct")
        seen.add(unit.key)


def _read_saved_config(saved: Path, results: Path) -> dict[str, Any]:
    """The saved config's identity fields; a missing, torn or partial file is refused, never defaulted."""
    why = "missing"
    if saved.is_file():
        try:
            data = yaml.safe_load(saved.read_text(encoding="utf-8"))
            if isinstance(data, dict):  # saved before the field existed: made with an unquantized drafter
                data.setdefault("drafter_quantization", "none")
                data.setdefault("ignore_eos", False)
                data.setdefault("kv_cache", "dynamic")
                data.setdefault("compile", False)
                data.setdefault("batch_size", 1)
                data.setdefault("cpu_linear", "torch")  # before the field, every Linear ran as PyTorch's
            missing = [n for n in IDENTITY_FIELDS if not isinstance(data, dict) or n not in data]
            why = f"no field {missing[0]}" if missing else ""
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            why = f"not valid YAML: {str(err).splitlines()[0]}"
        if not why:
            return data
    raise ConfigError(f"{saved}: unreadable ({why}); it says what the rows of {results} were made with: "
                      "restore it, or use another output_dir")


def _repair_torn_tail(path: Path) -> None:
    """A writer killed mid-line leaves a partial last line: cut it so the next append starts clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)
