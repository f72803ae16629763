"""Greedy traces: everything a stopping rule could see along the verifier's output, recorded once.

A trace of one prompt holds the verifier's greedy output ``y_0..y_{N-1}`` and, at every output position t,
the drafter's statistics conditioned on the committed prefix ``prompt + y_<t``: its greedy token ``d_t``,
that token's probability, the top-1 probability and every entropy type (nats). Where the drafter is wrong
(``d_t != y_t``) a round that keeps drafting continues from *its own* token, so the trace also holds the
drafter's greedy continuation after ``d_t`` (``cap - 1`` tokens, with the same statistics). With these,
any stopping rule can be replayed exactly (:mod:`entspec.replay.engine`) without running a model.

Recording costs one verifier decode (or none, if the output is given: any lossless greedy run gives it),
one teacher-forced drafter forward over the whole output (one-token steps for a drafter whose outputs depend on
the rest of the forward: `teacher_forced`), and ``cap - 1`` batched drafter steps for all
continuations at once (each row attends to its own prefix through the attention mask).

With a drafter window (``drafter_context=N``, `EntropyConfig.drafter_context`) the drafter's statistics are those
of the single-sequence engine's windowed drafter: it reads the prompt's last N tokens from position 0, the window
grows with the output and is rebuilt on the last N tokens once it holds 2N + 1; one teacher-forced forward (and one
batch of continuations) per window. The engine rebuilds at the start of a round, the trace at the position where
the window is full, so the two agree exactly until the first rebuild (2N + 1 - min(prompt, N) output tokens) and
differ after it by where the round boundary fell; the batched engine never rebuilds (its window grows), so batch
replay of a windowed trace is exact until then too. A deferred prefill starts its window one token later than the
trace's (the prompt and the first new token).

Files: one compressed ``.npz`` per prompt (columnar numpy arrays; the metadata as one JSON string).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..atomic import atomic_path
from ..engine.entropy import ENTROPY_TYPES, EntropyComputer
from ..engine.kv import cache_kwarg, new_cache
from ..engine.sampling import SamplingParams
from ..models.quantize import scales_per_call

TRACE_VERSION = 1


@dataclass
class TraceMeta:
    """What a trace was recorded with; replay refuses settings the trace cannot answer."""

    prompt_id: str
    category: str
    prompt_len: int
    max_new_tokens: int  # the budget the output was generated with (N <= max_new_tokens)
    eos_token_ids: list[int]
    cap: int  # the longest draft the continuations support
    renyi_alpha: float
    entropy_topk: int
    dtype: str = ""
    drafter_context: int = 0  # the drafter's window (0: the whole sequence)
    version: int = TRACE_VERSION


@dataclass
class Trace:
    """One prompt's greedy trace. Arrays over output positions have length N; continuations ``[M, cap - 1]``."""

    meta: TraceMeta
    output: np.ndarray  # [N] int64: the verifier's greedy tokens y_t
    draft_token: np.ndarray  # [N] int64: the drafter's greedy token d_t after prompt + y_<t
    token_prob: np.ndarray  # [N] float32: q_t(d_t)
    top1_prob: np.ndarray  # [N] float32: max_v q_t(v) (= token_prob when greedy)
    entropy: np.ndarray  # [N, len(ENTROPY_TYPES)] float32, nats, in ENTROPY_TYPES order
    cont_pos: np.ndarray  # [M] int64: positions t with d_t != y_t (ascending)
    cont_token: np.ndarray  # [M, cap - 1] int64: the drafter's greedy tokens after prompt + y_<t + d_t
    cont_prob: np.ndarray  # [M, cap - 1] float32
    cont_entropy: np.ndarray  # [M, cap - 1, len(ENTROPY_TYPES)] float32, nats
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.output.shape[0])

    @property
    def match(self) -> np.ndarray:
        """``[N] bool``: the drafter's greedy token equals the verifier's."""
        return self.draft_token == self.output

    @cached_property
    def lists(self) -> "TraceLists":
        """The trace as plain Python lists, built once (replay indexes lists several times faster than numpy)."""
        return TraceLists(
            output=self.output.tolist(), draft_token=self.draft_token.tolist(), token_prob=self.token_prob.tolist(),
            entropy=self.entropy.tolist(), cont_row={int(t): i for i, t in enumerate(self.cont_pos)},
            cont_token=self.cont_token.tolist(), cont_prob=self.cont_prob.tolist(),
            cont_entropy=self.cont_entropy.tolist(), eos=frozenset(self.meta.eos_token_ids),
            steps=int(self.cont_token.shape[1]) if self.cont_token.ndim == 2 else 0)

    @cached_property
    def agreement_run(self) -> np.ndarray:
        """``a_t``: consecutive positions from t at which the drafter agrees with the verifier ``[N]``."""
        runs = np.zeros(len(self) + 1, dtype=np.int64)
        match = self.match
        for t in range(len(self) - 1, -1, -1):
            runs[t] = runs[t + 1] + 1 if match[t] else 0
        return runs[:-1]

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        return save_npz(path, {**asdict(self.meta), "extra": self.extra}, {n: getattr(self, n) for n in _ARRAYS})

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("kind", "greedy") != "greedy":
                    raise TypeError(meta.get("temperature"))
                arrays = {name: data[name] for name in _ARRAYS}
        except TypeError as err:
            raise ValueError(f"{path}: a sampling trace (temperature {err}), not a greedy one "
                             "(entspec.replay.sampled reads it)") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # truncated, empty, garbage
            raise ValueError(f"{path}: not a readable entspec trace ({err or type(err).__name__})") from None
        extra = meta.pop("extra", {})
        if meta.get("version") != TRACE_VERSION:
            raise ValueError(f"{path}: trace version {meta.get('version')} (this entspec reads {TRACE_VERSION})")
        return cls(TraceMeta(**meta), extra=extra, **arrays)


@dataclass
class TraceLists:
    """`Trace.lists`: its columns as Python lists; ``cont_row`` maps a wrong position to its continuation row."""

    output: list[int]
    draft_token: list[int]
    token_prob: list[float]
    entropy: list[list[float]]
    cont_row: dict[int, int]
    cont_token: list[list[int]]
    cont_prob: list[list[float]]
    cont_entropy: list[list[list[float]]]
    eos: frozenset[int]
    steps: int  # continuation length (cap - 1)


_ARRAYS = ("output", "draft_token", "token_prob", "top1_prob", "entropy", "cont_pos", "cont_token", "cont_prob",
           "cont_entropy")


TRACE_GLOB = "[0-9][0-9][0-9][0-9]-*.npz"  # trace files only: never a temporary file being written


def trace_path(folder: str | Path, index: int, prompt_id: str) -> Path:
    return Path(folder) / f"{index:04d}-{file_safe(prompt_id)}.npz"


def file_safe(prompt_id: str) -> str:
    """A prompt id as part of a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in prompt_id)


def save_npz(path: str | Path, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """A trace file: ``meta`` as JSON beside the arrays, written atomically (a killed recorder leaves the previous
    file or none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
    return path


def trace_files(folder: str | Path) -> list[Path]:
    """The trace files of ``folder``, by prompt index."""
    return sorted(Path(folder).glob(TRACE_GLOB))


# What every trace of one folder must share to be replayed together (tune compares them).
SHARED_META = ("max_new_tokens", "cap", "dtype", "renyi_alpha", "entropy_topk", "eos_token_ids", "drafter_context")


def load_traces(folder: str | Path) -> list[Trace]:
    """Every trace in ``folder`` (sorted by file name, i.e. by prompt index); a folder whose traces were recorded
    with different settings is refused naming the first difference."""
    return load_folder(folder, trace_files(folder), Trace.load, SHARED_META)


def load_folder(folder: str | Path, paths: list[Path], load: Callable[[Path], Any], shared: tuple[str, ...]) -> list:
    """The traces at ``paths`` (of ``folder``), refusing a folder whose traces differ in one of the ``shared`` meta
    fields (one line naming the file and the field): one traces folder holds one setting."""
    if not paths:
        raise FileNotFoundError(f"{folder}: no traces ({TRACE_GLOB}); record them with `entspec trace`")
    traces = [load(p) for p in paths]
    first = traces[0].meta
    for path, trace in zip(paths[1:], traces[1:]):
        for name in shared:
            if getattr(trace.meta, name) != getattr(first, name):
                raise ValueError(f"{path}: recorded with {name}={getattr(trace.meta, name)!r} but {paths[0].name} "
                                 f"with {getattr(first, name)!r}; one traces folder holds one setting")
    return traces


# --------------------------------------------------------------------------------------------- recording


@torch.inference_mode()
def record_trace(
    drafter: torch.nn.Module,
    verifier: torch.nn.Module,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    cap: int = 20,
    output: list[int] | None = None,
    prompt_id: str = "prompt",
    category: str = "",
    eos_token_id: int | list[int] | None = None,
    renyi_alpha: float = 2.0,
    entropy_topk: int = 10,
    drafter_context: int | None = None,
) -> Trace:
    """Record the greedy trace of ``input_ids [1, P]`` (module docstring).

    Args:
        output: the verifier's greedy tokens, if already known (e.g. from a lossless greedy run);
            otherwise they are generated with the engine's autoregressive mode.
        cap: the longest draft length replay will be asked about (continuations hold ``cap - 1`` tokens).
        drafter_context: the drafter's window N (None: the whole sequence), as `EntropyConfig.drafter_context`.
    """
    if drafter_context is not None and (isinstance(drafter_context, bool) or not isinstance(drafter_context, int)
                                        or drafter_context < 1):
        raise ValueError(f"drafter_context: must be an integer >= 1 or None (got {drafter_context!r})")
    eos, output = verifier_output(verifier, input_ids, max_new_tokens, cap, output, prompt_id, eos_token_id)
    device = next(drafter.parameters()).device
    prompt = input_ids.to(device)
    full = torch.cat([prompt, prompt.new_tensor([output])], dim=1)  # [1, P + N]
    n_out, n_prompt = len(output), prompt.shape[1]
    entropy = EntropyComputer(renyi_alpha=renyi_alpha, topk=entropy_topk)
    output_arr = np.asarray(output, dtype=np.int64)
    parts = []
    for start, lo, hi in drafter_windows(n_prompt, n_out, drafter_context):
        # 1. Teacher-forced drafter over the window gives q_t for its output positions lo..hi-1.
        cache = new_cache(drafter)
        logits = teacher_forced(drafter, full[:, start:n_prompt + hi], hi - lo + 1, cache)[:hi - lo]  # [hi - lo, V]
        token, prob, ents = _stats(logits, entropy)
        # 2. Continuations after every wrong token, all rows in one batch over the window's cache.
        wrong = lo + np.flatnonzero(token != output_arr[lo:hi])
        draft_token = np.zeros(n_out, np.int64)
        draft_token[lo:hi] = token
        parts.append((token, prob, ents, wrong, *_continuations(drafter, cache, n_prompt - start, wrong, draft_token,
                                                                cap - 1, entropy)))
    draft_token, token_prob, entropies, wrong, cont_token, cont_prob, cont_entropy = (
        np.concatenate(column) for column in zip(*parts))
    meta = TraceMeta(prompt_id=str(prompt_id), category=str(category), prompt_len=int(n_prompt),
                     max_new_tokens=int(max_new_tokens), eos_token_ids=[int(e) for e in eos], cap=int(cap),
                     renyi_alpha=float(renyi_alpha), entropy_topk=int(entropy_topk),
                     dtype=str(next(drafter.parameters()).dtype).replace("torch.", ""),
                     drafter_context=int(drafter_context or 0))
    return Trace(meta, output_arr, draft_token, token_prob, token_prob.copy(), entropies, wrong.astype(np.int64),
                 cont_token, cont_prob, cont_entropy)


def teacher_forced(drafter: torch.nn.Module, ids: torch.Tensor, keep: int, cache) -> torch.Tensor:
    """The drafter's float logits ``[keep, V]`` at the last ``keep`` positions of ``ids [1, L]``, filling ``cache``
    with all L. One forward; for a drafter whose outputs depend on the other tokens of a call
    (`entspec.models.quantize.scales_per_call`), a prefill up to the first kept position and then one token per
    forward, as the engine feeds it while drafting (its catch-up after a round feeds one or two)."""
    kw = {cache_kwarg(drafter): cache, "use_cache": True}
    if not scales_per_call(drafter):
        return drafter(input_ids=ids, logits_to_keep=keep, **kw).logits[0].float()
    split = ids.shape[1] - keep + 1
    rows = [drafter(input_ids=ids[:, :split], logits_to_keep=1, **kw).logits[0, -1]]
    rows += [drafter(input_ids=ids[:, i:i + 1], logits_to_keep=1, **kw).logits[0, -1]
             for i in range(split, ids.shape[1])]
    return torch.stack(rows).float()


def drafter_windows(prompt_len: int, n_out: int, window: int | None) -> list[tuple[int, int, int]]:
    """The drafter's windows along a trace (module docstring): ``(start, lo, hi)``, the window beginning at sequence
    position ``start`` serving output positions ``lo..hi-1``. Without a window, one from position 0."""
    if not window:
        return [(0, 0, n_out)]
    out, start, lo = [], max(0, prompt_len - window), 0
    while lo < n_out:
        hi = min(n_out, start + 2 * window + 1 - prompt_len)  # the window is full: rebuilt on the last N tokens
        out.append((start, lo, hi))
        start, lo = prompt_len + hi - window, hi
    return out


def verifier_output(verifier: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int, cap: int,
                    output: list[int] | None, prompt_id: str, eos_token_id: int | list[int] | None,
                    sampling: SamplingParams | None = None, seed: int = 0) -> tuple[list[int], list[int]]:
    """The EOS ids and the verifier's output a trace is recorded along: ``output`` when given (any lossless run),
    else the engine's autoregressive decoding, greedy or with ``sampling`` and ``seed``."""
    from ..engine.decoder import EntropyBasedSpeculativeDecoder

    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    plain = EntropyBasedSpeculativeDecoder.autoregressive(verifier)
    eos = sorted(plain.eos_ids(eos_token_id))
    if output is None:
        sampling = sampling or SamplingParams(0.0)
        output = plain.generate(input_ids, max_new_tokens=max_new_tokens, temperature=sampling.temperature,
                                top_k=sampling.top_k, top_p=sampling.top_p, seed=seed, eos_token_id=eos or None,
                                ignore_eos=not eos).new_tokens
    if not output:
        raise ValueError(f"{prompt_id}: empty output (max_new_tokens={max_new_tokens})")
    return eos, output


def _stats(logits: torch.Tensor, entropy: EntropyComputer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy token, its probability and every entropy type (nats) of ``logits [..., V]``."""
    probs = torch.softmax(logits.float(), dim=-1)
    top1, token = probs.max(dim=-1)
    h = torch.stack([entropy.compute(logits, t) for t in ENTROPY_TYPES], dim=-1)
    return token.cpu().numpy().astype(np.int64), top1.cpu().numpy().astype(np.float32), h.cpu().numpy().astype(np.float32)


def _continuations(drafter, cache, n_prompt: int, wrong: np.ndarray, draft_token: np.ndarray, steps: int,
                   entropy: EntropyComputer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy continuations of ``prompt + y_<t + d_t`` for every t in ``wrong``: ``steps`` tokens each.

    The cache holds prompt + the whole output (length P + N). Row m may only see its first P + t_m cached
    positions, so the attention mask hides the rest, and its new tokens get positions P + t_m, P + t_m + 1, ...
    """
    m = len(wrong)
    types = len(ENTROPY_TYPES)
    tokens = np.zeros((m, steps), dtype=np.int64)
    probs = np.zeros((m, steps), dtype=np.float32)
    ents = np.zeros((m, steps, types), dtype=np.float32)
    if m == 0 or steps == 0:
        return tokens, probs, ents
    device = next(drafter.parameters()).device
    cached = cache.get_seq_length()
    cache.batch_repeat_interleave(m)
    visible = torch.arange(cached, device=device)[None] < torch.as_tensor(n_prompt + wrong, device=device)[:, None]
    mask = visible.long()  # [M, P + N]
    inputs = torch.as_tensor(draft_token[wrong], device=device)[:, None]  # [M, 1]: the wrong token
    positions = torch.as_tensor(n_prompt + wrong, device=device)[:, None]
    for k in range(steps):
        mask = torch.cat([mask, mask.new_ones(m, 1)], dim=1)
        logits = drafter(input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **{cache_kwarg(drafter): cache}).logits[:, -1].float()  # [M, V]
        tok, prob, h = _stats(logits, entropy)
        tokens[:, k], probs[:, k], ents[:, k] = tok, prob, h
        inputs = torch.as_tensor(tok, device=device)[:, None]
        positions = positions + 1
    return tokens, probs, ents


def nats_to_unit(unit: str) -> float:
    """Factor from nats to ``unit``."""
    return 1.0 if unit == "nats" else 1.0 / math.log(2)
