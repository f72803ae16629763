"""`executor: ray`: the same units as the local runner, run by Ray actors on one machine or a cluster.

The driver (the process that runs ``entspec run``) keeps everything that makes a run safe: the folder lock,
the prompts, the list of units not yet in ``results.jsonl``, and the file itself. It is the only writer:
rows come back from the workers and are appended and fsynced here, so resume, de-duplication and the
torn-tail repair are the local runner's, unchanged.

1. Connect to the cluster (``ray_address``) or start a local Ray instance.
2. Start ``ray_workers`` actors. Each loads the model pair once (one GPU each when the cluster has GPUs,
   else ``threads`` CPUs), on first use, and warms up like the local runner.
3. Send each idle actor one work unit: one prompt with all its (method, seed) units still to run, in the
   local runner's rotated order, so every paired comparison is timed on one machine. Each row records the
   worker's host, device and PID.
4. Write each row as it comes back, in the order its worker ran them. A worker that dies (process
   killed, node lost) is restarted by Ray (``ACTOR_RESTARTS``), which then reruns the units it had not
   returned (``TASK_RETRIES``; a restarted worker reloads the models first). A unit is written once: a
   row whose key is already written is dropped, whatever raced it. When Ray gives up on a worker, the run
   stops with a one-line error; a rerun resumes it.

Killing the driver kills its actors (Ray ends a job's actors with its driver); a rerun resumes as usual.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..engine.config import ConfigError
from ..records import ResultRow, append_jsonl
from .manifest import device_description, manifest

if TYPE_CHECKING:
    from .config import ExperimentConfig
    from .runner import ExperimentRunner, Unit

log = logging.getLogger(__name__)

ACTOR_RESTARTS = 8  # how often Ray restarts a dead worker before giving it up
TASK_RETRIES = 3  # how often Ray reruns a unit whose worker died before returning it
CONNECT_TIMEOUT_S = 5.0


class WorkerError(ValueError):
    """A worker could not load the models or run a unit because of its input; the message names its node."""


class _Worker:
    """A Ray actor: one model pair, loaded on first use, that turns unit keys into results rows (`ResultRow`)."""

    def __init__(self, config: dict[str, Any], prompts: list, runner_class: type[ExperimentRunner]) -> None:
        self.config = config  # plain data: the actor is rebuilt from it after a restart
        self.prompts = prompts
        self.runner_class = runner_class  # the driver's runner class (this module does not import the runner)
        self.runner: ExperimentRunner | None = None
        self.units: dict[str, Unit] = {}
        self.info: dict[str, Any] = {}

    def setup(self) -> dict[str, Any]:
        """Load the pair and warm up (once per process); where this worker runs."""
        if self.runner is None:
            from ..models import resolve_device
            from .config import ExperimentConfig

            host = socket.gethostname()
            try:
                config = ExperimentConfig.from_dict(self.config)
                resolve_device(config.device)
                runner = self.runner_class(config, progress=False)
                runner.prompts = self.prompts
                runner.load(write_manifest=False)  # the driver writes the manifest
                runner.warm_up()
            except (ValueError, KeyError, OSError) as err:  # a model missing on this node, a bad device, ...
                raise WorkerError(f"worker on {host}: {err}") from None
            self.units = {unit.key: unit for unit in runner.units()}
            self.info = {"host": host, "device": str(runner.pair.device), "pid": os.getpid(),
                         "device_name": device_description(runner.pair.device),
                         "dtype": str(runner.pair.dtype).replace("torch.", "")}
            self.runner = runner
        return self.info

    def run(self, key: str) -> ResultRow:
        """The results row of unit ``key`` (the local runner's, with ``worker``: host, device, PID)."""
        self.setup()
        try:
            return self.runner.run_unit(self.units[key], worker=self.info)
        except (ValueError, KeyError, OSError) as err:
            raise WorkerError(f"{key} on {self.info['host']}: {err}") from None


def run_on_ray(runner: ExperimentRunner, units: list[Unit], todo: list[Unit]) -> None:
    """Run the units ``todo`` (of ``units``) on Ray workers; rows are appended to ``runner.results_path``."""
    cfg = runner.config
    ray = _import_ray()
    started = _connect(ray, cfg)
    actors: list = []
    try:
        groups = _by_prompt(todo)
        resources = _resources(ray.cluster_resources(), cfg)
        count = _worker_count(ray.cluster_resources(), cfg, resources, len(groups))
        worker = ray.remote(_Worker).options(max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES,
                                               **resources)
        # plain values, not object refs: Ray keeps an actor's arguments for its restarts
        actors = [worker.remote(_portable(cfg), runner.prompts, type(runner)) for _ in range(count)]
        log.info("%s: %d units on %d Ray workers (%s each)", cfg.experiment_name, len(todo), count, resources)
        _Driver(ray, runner, actors, units, todo, groups).run()
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()


class _Driver:
    """The dispatch loop: an idle worker gets the next prompt; rows are written in the order each worker ran them."""

    def __init__(self, ray: Any, runner: ExperimentRunner, actors: list, units: list[Unit], todo: list[Unit],
                 groups: list[list[Unit]]) -> None:
        self.ray, self.runner, self.actors, self.units = ray, runner, actors, units
        self.written = {u.key for u in units} - {u.key for u in todo}  # keys already in results.jsonl
        self.queue: deque[list[Unit]] = deque(groups)
        self.pending: list[deque] = [deque() for _ in actors]  # per worker: (ObjectRef, unit), in its run order
        self.workers: dict[tuple[str, int], dict[str, Any]] = {}  # (host, pid) -> worker info, for the manifest

    def run(self) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        runner, total = self.runner, len(self.units)
        bar = tqdm(total=total, initial=len(self.written), desc=runner.config.experiment_name, unit="gen",
                   disable=not runner.progress, dynamic_ncols=True)
        bar.set_postfix_str(f"{len(self.actors)} Ray workers", refresh=False)
        for i in range(len(self.actors)):
            self._send(i)
        while any(self.pending):
            runner.write_progress(total, len(self.written), [u.key for q in self.pending for _, u in q])
            heads = {q[0][0]: i for i, q in enumerate(self.pending) if q}  # each worker's next row
            [ref], _ = self.ray.wait(list(heads), num_returns=1)
            i = heads[ref]
            _, unit = self.pending[i].popleft()
            try:
                row = self.ray.get(ref)
            except RayActorError as err:  # died more often than Ray retries, or gone for good
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise WorkerError(f"{unit.key}: its Ray worker died and Ray's {TASK_RETRIES} retries ran out "
                                  f"({reason}); finished rows are saved, run the same command again to resume"
                                  ) from None
            except RayTaskError as err:  # an exception inside the worker: the run stops, as it would locally
                cause = getattr(err, "cause", None)
                raise (cause if isinstance(cause, WorkerError) else err) from None
            if row.unit_key not in self.written:  # a retry racing a late result: the first row wins
                append_jsonl(runner.results_path, row)  # flushed and fsynced: this unit is now safe
                self.written.add(row.unit_key)
                self._note_worker(row.worker)
                bar.update(1)
            if not self.pending[i]:  # this worker is idle
                self._send(i)
        bar.close()

    def _send(self, i: int) -> None:
        """Give worker ``i`` the next prompt: all its units at once (an actor runs its calls in order)."""
        while self.queue and not self.pending[i]:
            for unit in self.queue.popleft():
                if unit.key not in self.written:
                    self.pending[i].append((self.actors[i].run.remote(unit.key), unit))

    def _note_worker(self, info: dict[str, Any]) -> None:
        """A worker seen for the first time (a new actor or a restart) is added to the manifest."""
        if (info["host"], info["pid"]) in self.workers:
            return
        self.workers[(info["host"], info["pid"])] = info
        runner, workers = self.runner, list(self.workers.values())
        data = manifest(torch.device("cpu"), experiment_name=runner.config.experiment_name,
                        methods=[m.id for m in runner.methods], prompts=[p.id for p in runner.prompts],
                        dtype=workers[0]["dtype"], executor="ray", workers=workers)
        data["device"] = "; ".join(sorted({f"{w['host']}: {w['device_name']}" for w in workers}))
        atomic_write_text(runner.output_dir / "configs" / "manifest.json", json.dumps(data, indent=2))


# ---------------------------------------------------------------- connecting and sizing
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: Ray is not installed here; pip install 'entspec[ray]' or use executor "
                          "local (got 'ray')") from None
    return ray


def _connect(ray: Any, cfg: ExperimentConfig) -> bool:
    """Connect to ``ray_address`` (None: start a local instance); True when this call connected."""
    address = cfg.ray_address
    if address not in (None, "auto", "local"):
        check_address(address)
    if ray.is_initialized():  # the caller's own ray.init(): use that connection
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False} if address is None else {}
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"ray_address: {str(err).splitlines()[0]} (got {address!r})") from None
    return True


def check_address(address: str) -> None:
    """``HOST:PORT`` or ``ray://HOST:PORT`` must answer a TCP connect within a few seconds.

    Ray itself retries an unreachable address for a minute or more; this says so at once, in one line.
    """
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"ray_address: expected auto, HOST:PORT or ray://HOST:PORT (got {address!r})")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise ConfigError(f"ray_address: no Ray cluster answers at {hostport} ({why}); start one with "
                          f"`ray start --head` or fix the address (got {address!r})") from None


def _resources(total: dict[str, float], cfg: ExperimentConfig) -> dict[str, Any]:
    """What one worker asks Ray for: a GPU when the cluster has them (and the device allows), else CPUs."""
    gpus = total.get("GPU", 0)
    if cfg.device.startswith("cuda") and not gpus:
        raise ConfigError(f"device: the Ray cluster has no GPU (got {cfg.device!r})")
    if ":" in cfg.device:
        raise ConfigError(f"device: a Ray worker sees only the GPU Ray gives it; use auto or cuda "
                          f"(got {cfg.device!r})")
    cpus = cfg.threads or 1
    if gpus and cfg.device in ("auto", "cuda"):
        return {"num_gpus": 1, "num_cpus": cpus}
    return {"num_cpus": cpus}


def _worker_count(total: dict[str, float], cfg: ExperimentConfig, resources: dict[str, Any],
                  prompts: int) -> int:
    """``ray_workers``, or as many as the cluster has room for; never more than there are prompts to run."""
    if "num_gpus" in resources:
        room = int(total.get("GPU", 0))
    else:
        room = int(total.get("CPU", 0) // resources["num_cpus"])
    count = cfg.ray_workers or max(room, 1)
    if count > room:
        log.warning("ray_workers: %d asked, the cluster has room for %d now (%s per worker); the rest start "
                    "when nodes join", count, room, resources)
    return max(1, min(count, prompts))


def _by_prompt(todo: list[Unit]) -> list[list[Unit]]:
    """The work units: each prompt's units, in the order they come (the local runner's rotated order)."""
    groups: dict[int, list[Unit]] = {}
    for unit in todo:
        groups.setdefault(unit.prompt_index, []).append(unit)
    return list(groups.values())


def _portable(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as plain data for the workers, with local model folders made absolute (workers' cwd differs)."""
    data = cfg.to_dict()
    for name in ("drafter_model_path", "verifier_model_path"):
        if Path(data[name]).exists():
            data[name] = str(Path(data[name]).resolve())
    return data

