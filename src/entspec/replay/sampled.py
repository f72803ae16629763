"""Sampling traces: what a stopping rule could see along a sampled trajectory of the verifier, recorded once.

Speculative sampling (Leviathan et al. 2023, Algorithm 1) is, at every position, a *maximal coupling* of the
draft distribution q and the target distribution p (both processed by temperature / top-k / top-p): the drafted
token x ~ q and the emitted token y ~ p are equal with probability β = Σ_v min(p(v), q(v)). Seen from the emitted
token, the coupling says: given y_t = v, the drafted token was v (accepted) with probability
``a_t = min(1, q_t(v) / p_t(v))`` (mean over v ~ p: β_t), and otherwise (rejected) it was an independent draw from
the residual ``norm(max(0, q_t - p_t))``. Given the trajectory, the verdicts of different positions are
independent. So one sampled trajectory of the verifier (any lossless run gives one; here the engine's
autoregressive mode with a seed) and, per position t,

* ``beta`` β_t and ``accept_prob`` a_t(y_t) of the processed p_t and q_t;
* the drafter's statistics the rules read when the drafted token is accepted (it is then y_t): every entropy type
  of the processed q_t (nats), ``token_prob`` q_t(y_t) and ``top1_prob`` max q_t;
* for the rejected case: one draw ``reject_token`` from the residual, its probability q_t(x) (``reject_prob``),
  and the drafter's own *sampled* continuation after ``prompt + y_<t + reject_token`` (``cap - 1`` tokens with
  their probabilities and entropies; only where a_t < 1, the rows of the other positions are never read);

determine the rounds of any rule given which positions are accepted. A *realisation* (`realise`) draws those
verdicts (independent Bernoulli(a_t)) and is an ordinary greedy-shaped `Trace`, so `entspec.replay.engine.replay`
runs every registered rule on it unchanged; the mean over realisations is the expected-value replay
(:mod:`entspec.replay.expected`). The statistics a rule sees are exactly the engine's on each branch (no
expectation over the drafted token is needed: accepted, it is y_t; rejected, a residual draw); the rejection draw
and its continuation are one sample per position, used by every realisation (unbiased: a replay rejects a
position at most once).

With a drafter window (``drafter_context=N``) q_t and the continuations are the windowed drafter's, windowed as
greedy traces are (`entspec.replay.trace.drafter_windows`: one teacher-forced forward and one batch of continuations
per window); p_t and the trajectory are the verifier's over the whole sequence, as in the engine (`entspec trace`
reuses the whole-sequence trace's trajectory of the same seed, so windows are compared on the same trajectories).

Files: one compressed ``.npz`` per (prompt, trajectory seed), written atomically, like greedy traces.
"""

from __future__ import annotations

import copy
import json
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..engine.entropy import ENTROPY_TYPES, EntropyComputer
from ..engine.kv import cache_kwarg, new_cache
from ..engine.sampling import SamplingParams
from .trace import (TRACE_GLOB, Trace, TraceMeta, drafter_windows, file_safe, load_folder, save_npz,
                    teacher_forced, verifier_output)

SAMPLED_VERSION = 1
KIND = "sampled"
ROW_CHUNK = 64  # continuation rows per batched drafter pass (bounds the repeated cache's memory)


@dataclass
class SampledMeta:
    """What a sampling trace was recorded with; replay and tune refuse mixing settings."""

    prompt_id: str
    category: str
    prompt_len: int
    max_new_tokens: int
    eos_token_ids: list[int]
    cap: int
    renyi_alpha: float
    entropy_topk: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int  # the trajectory's seed
    dtype: str = ""
    drafter_context: int = 0  # the drafter's window (0: the whole sequence)
    kind: str = KIND
    version: int = SAMPLED_VERSION


@dataclass
class SampledTrace:
    """One sampled trajectory's trace. Arrays over output positions have length N; continuations ``[N, cap - 1]``."""

    meta: SampledMeta
    output: np.ndarray  # [N] int64: the verifier's sampled tokens y_t
    beta: np.ndarray  # [N] float64: Σ_v min(p_t(v), q_t(v))
    accept_prob: np.ndarray  # [N] float64: a_t = min(1, q_t(y_t) / p_t(y_t)) (1 where no rejection is possible)
    token_prob: np.ndarray  # [N] float32: q_t(y_t), what the rule sees when the drafted token is accepted
    top1_prob: np.ndarray  # [N] float32: max_v q_t(v)
    entropy: np.ndarray  # [N, len(ENTROPY_TYPES)] float32, nats, of the processed q_t
    reject_token: np.ndarray  # [N] int64: one draw from norm(max(0, q_t - p_t))
    reject_prob: np.ndarray  # [N] float32: q_t(reject_token)
    cont_token: np.ndarray  # [N, cap - 1] int64: the drafter's sampled continuation after the rejected token
    cont_prob: np.ndarray  # [N, cap - 1] float32: q of each continuation token under its own distribution
    cont_entropy: np.ndarray  # [N, cap - 1, len(ENTROPY_TYPES)] float32, nats
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.output.shape[0])

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.meta.temperature, self.meta.top_k, self.meta.top_p)

    def uniforms(self, draw: int) -> np.ndarray:
        """The ``draw``-th realisation's uniforms ``[N]`` (seeded by prompt, trajectory and draw: the same draw
        for every rule configuration, so configurations are compared on common random numbers)."""
        key = zlib.crc32(self.meta.prompt_id.encode())
        return np.random.default_rng([key, self.meta.seed, draw]).random(len(self))

    def realise(self, draw: int) -> Trace:
        """The greedy-shaped `Trace` of one draw of the verdicts: position t is accepted when u_t < a_t; a
        rejected position drafts ``reject_token`` and continues with its recorded continuation."""
        accepted = self.uniforms(draw) < self.accept_prob
        wrong = np.flatnonzero(~accepted)
        draft = np.where(accepted, self.output, self.reject_token)
        prob = np.where(accepted, self.token_prob, self.reject_prob).astype(np.float32)
        m = self.meta
        meta = TraceMeta(prompt_id=m.prompt_id, category=m.category, prompt_len=m.prompt_len,
                         max_new_tokens=m.max_new_tokens, eos_token_ids=list(m.eos_token_ids), cap=m.cap,
                         renyi_alpha=m.renyi_alpha, entropy_topk=m.entropy_topk, dtype=m.dtype,
                         drafter_context=m.drafter_context)
        return Trace(meta, self.output, draft, prob, self.top1_prob, self.entropy, wrong.astype(np.int64),
                     self.cont_token[wrong], self.cont_prob[wrong], self.cont_entropy[wrong],
                     extra={"seed": m.seed, "draw": draw})

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        return save_npz(path, {**asdict(self.meta), "extra": self.extra},
                        {n: getattr(self, n) for n in SAMPLED_ARRAYS})

    @classmethod
    def load(cls, path: str | Path) -> "SampledTrace":
        path = Path(path)
        meta, arrays = _read(path, SAMPLED_ARRAYS)
        extra = meta.pop("extra", {})
        if meta.get("kind") != KIND:
            raise ValueError(f"{path}: a greedy trace, not a sampling trace (temperature 0)")
        if meta.get("version") != SAMPLED_VERSION:
            raise ValueError(f"{path}: sampling trace version {meta.get('version')} (this entspec reads "
                             f"{SAMPLED_VERSION})")
        try:
            return cls(SampledMeta(**meta), extra=extra, **arrays)
        except TypeError as err:
            raise ValueError(f"{path}: not a readable entspec trace ({err})") from None


SAMPLED_ARRAYS = ("output", "beta", "accept_prob", "token_prob", "top1_prob", "entropy", "reject_token",
                  "reject_prob", "cont_token", "cont_prob", "cont_entropy")

# What every trace of one folder must share (tune and replay compare them); a difference is refused naming it.
SAMPLED_SHARED = ("max_new_tokens", "cap", "dtype", "renyi_alpha", "entropy_topk", "eos_token_ids", "temperature",
                  "top_k", "top_p", "drafter_context")


def _read(path: Path, names: tuple[str, ...]) -> tuple[dict, dict]:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in names if name in data}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # truncated, empty, garbage
        raise ValueError(f"{path}: not a readable entspec trace ({err or type(err).__name__})") from None
    missing = [n for n in names if n not in arrays] if meta.get("kind") == KIND else []
    if missing:
        raise ValueError(f"{path}: not a readable entspec trace (no {missing[0]})")
    return meta, arrays


def trace_kind(path: str | Path) -> str:
    """``"sampled"`` or ``"greedy"``: what a trace file holds (ValueError naming the file when unreadable)."""
    meta, _ = _read(Path(path), ())
    return meta.get("kind", "greedy")


def read_trace(path: str | Path) -> Trace | SampledTrace:
    """A trace file of either kind."""
    return SampledTrace.load(path) if trace_kind(path) == KIND else Trace.load(path)


def sampled_trace_path(folder: str | Path, index: int, prompt_id: str, seed: int) -> Path:
    return Path(folder) / f"{index:04d}-{file_safe(prompt_id)}~s{seed}.npz"


def load_sampled_traces(folder: str | Path) -> list[SampledTrace]:
    """Every sampling trace in ``folder`` (by file name: prompt index, then seed); a folder whose traces differ in
    a setting (`SAMPLED_SHARED`) or holds greedy traces is refused naming the file and the field."""
    return load_folder(folder, sorted(Path(folder).glob(TRACE_GLOB)), SampledTrace.load, SAMPLED_SHARED)


# --------------------------------------------------------------------------------------------- recording


@torch.inference_mode()
def record_sampled_trace(
    drafter: torch.nn.Module,
    verifier: torch.nn.Module,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    sampling: SamplingParams,
    seed: int = 0,
    cap: int = 20,
    output: list[int] | None = None,
    prompt_id: str = "prompt",
    category: str = "",
    eos_token_id: int | list[int] | None = None,
    renyi_alpha: float = 2.0,
    entropy_topk: int = 10,
    drafter_context: int | None = None,
) -> SampledTrace:
    """Record the sampling trace of ``input_ids [1, P]`` along one trajectory (module docstring).

    Args:
        sampling: temperature (> 0), top-k and top-p, applied to both models' logits as the engine does.
        seed: the trajectory's seed (the verifier's sampling) and of the rejection draws and continuations.
        output: the trajectory, if already known (any lossless sampled run at these settings); otherwise the
            engine's autoregressive mode samples it with ``seed``.
        drafter_context: the drafter's window N (None: the whole sequence), as `EntropyConfig.drafter_context`.
    """
    if sampling.greedy:
        raise ValueError("temperature: a sampling trace needs temperature > 0 (record_trace records greedy ones)")
    if drafter_context is not None and (isinstance(drafter_context, bool) or not isinstance(drafter_context, int)
                                        or drafter_context < 1):
        raise ValueError(f"drafter_context: must be an integer >= 1 or None (got {drafter_context!r})")
    eos, output = verifier_output(verifier, input_ids, max_new_tokens, cap, output, prompt_id, eos_token_id,
                                  sampling, seed)
    device = next(drafter.parameters()).device
    prompt = input_ids.to(device)
    full = torch.cat([prompt, prompt.new_tensor([output])], dim=1)  # [1, P + N]
    n_out, n_prompt = len(output), prompt.shape[1]
    out = torch.as_tensor(output, device=device)
    entropy = EntropyComputer(renyi_alpha=renyi_alpha, topk=entropy_topk)
    generator = torch.Generator(device=device).manual_seed(seed + 1)  # not the trajectory's own stream

    # 1. Teacher-forced p_t and q_t (processed) at every output position (`teacher_forced` for the drafter).
    target_probs = torch.softmax(sampling.process(
        verifier(input_ids=full.to(next(verifier.parameters()).device), logits_to_keep=n_out + 1
                 ).logits[0, :n_out].float().to(device)), dim=-1)  # [N, V]
    # Per drafter window (one, from position 0, without a window): q_t for its output positions lo..hi-1, then
    # 2. the drafter's sampled continuation after every rejected token of the window, over the window's cache.
    parts = []
    for start, lo, hi in drafter_windows(n_prompt, n_out, drafter_context):
        cache = new_cache(drafter)
        processed = sampling.process(teacher_forced(drafter, full[:, start:n_prompt + hi], hi - lo + 1,
                                                    cache)[:hi - lo])
        draft_probs = torch.softmax(processed, dim=-1)  # [hi - lo, V]
        beta, accept, reject = acceptance(target_probs[lo:hi], draft_probs, out[lo:hi], generator)
        rejectable = lo + torch.nonzero(accept < 1).view(-1)  # a_t = 1: never rejected, no continuation
        first = torch.zeros_like(out)
        first[lo:hi] = reject
        parts.append((beta, accept, draft_probs.gather(-1, out[lo:hi, None])[:, 0], draft_probs.max(dim=-1).values,
                      torch.stack([entropy.compute(processed, t) for t in ENTROPY_TYPES], dim=-1), reject,
                      draft_probs.gather(-1, reject[:, None])[:, 0],
                      _continuations(drafter, cache, n_prompt - start, first, rejectable, cap - 1, sampling, entropy,
                                     generator)))
    beta, accept, token_prob, top1, h, reject, reject_prob = (torch.cat([part[k] for part in parts]) for k in range(7))
    cont = tuple(sum(part[7][k] for part in parts) for k in range(3))  # each window fills only its own rows
    meta = SampledMeta(prompt_id=str(prompt_id), category=str(category), prompt_len=int(n_prompt),
                       max_new_tokens=int(max_new_tokens), eos_token_ids=[int(e) for e in eos], cap=int(cap),
                       renyi_alpha=float(renyi_alpha), entropy_topk=int(entropy_topk),
                       temperature=float(sampling.temperature), top_k=sampling.top_k,
                       top_p=None if sampling.top_p is None else float(sampling.top_p), seed=int(seed),
                       dtype=str(next(drafter.parameters()).dtype).replace("torch.", ""),
                       drafter_context=int(drafter_context or 0))

    def np32(x: torch.Tensor) -> np.ndarray:
        return x.float().cpu().numpy().astype(np.float32)

    return SampledTrace(meta, np.asarray(output, dtype=np.int64), beta.cpu().numpy(), accept.cpu().numpy(),
                        np32(token_prob), np32(top1), np32(h), reject.cpu().numpy().astype(np.int64),
                        np32(reject_prob), *cont)


def acceptance(target_probs: torch.Tensor, draft_probs: torch.Tensor, tokens: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``target_probs``/``draft_probs [N, V]`` and the emitted ``tokens [N]``: β = Σ min(p, q), the
    acceptance probability a = min(1, q(y) / p(y)) given the emitted token, and one draw from the rejected
    token's distribution norm(max(0, q - p)) (float64; a = 1 and the draw = y where that residual is empty)."""
    p, q = target_probs.double(), draft_probs.double()
    overlap = torch.minimum(p, q)
    beta = overlap.sum(-1)
    p_y, q_y = p.gather(-1, tokens[:, None])[:, 0], q.gather(-1, tokens[:, None])[:, 0]
    residual = (q - overlap).clamp(min=0.0)
    mass = residual.sum(-1)
    possible = mass > 1e-9  # p = q up to round-off: no rejection can happen
    accept = torch.where(possible & (p_y > 0), (q_y / p_y.clamp(min=1e-300)).clamp(max=1.0), torch.ones_like(p_y))
    safe = torch.where(possible[:, None], residual, q)
    reject = torch.multinomial(safe.float(), 1, generator=generator)[:, 0]
    reject = torch.where(possible, reject, tokens)
    return beta, accept, reject


def _continuations(drafter, full_cache, n_prompt: int, first: torch.Tensor, positions_: torch.Tensor,
                   steps: int, sampling: SamplingParams, entropy: EntropyComputer, generator: torch.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampled continuations of ``prompt + y_<t + first[t]`` for every t in ``positions_``: ``steps`` tokens each
    (rows of other positions stay zero: they are never read).

    ``full_cache`` holds the drafter's cache of prompt + output. Rows go in chunks of `ROW_CHUNK`: a copy of it is
    repeated per row, and row m's attention mask hides every cached position at or after P + t_m (its new tokens
    get positions P + t_m, P + t_m + 1, ...), as `entspec.replay.trace` does for greedy continuations.
    """
    n = int(first.shape[0])
    types = len(ENTROPY_TYPES)
    tokens = np.zeros((n, steps), dtype=np.int64)
    probs = np.zeros((n, steps), dtype=np.float32)
    ents = np.zeros((n, steps, types), dtype=np.float32)
    if steps == 0:
        return tokens, probs, ents
    device = first.device
    for lo in range(0, len(positions_), ROW_CHUNK):
        rows = positions_[lo:lo + ROW_CHUNK].to(device)
        out = rows.cpu().numpy()
        m = len(rows)
        cache = copy.deepcopy(full_cache)
        cached = cache.get_seq_length()
        cache.batch_repeat_interleave(m)
        mask = (torch.arange(cached, device=device)[None] < (n_prompt + rows)[:, None]).long()  # [m, P + N]
        inputs, positions = first[rows][:, None], (n_prompt + rows)[:, None]
        for k in range(steps):
            mask = torch.cat([mask, mask.new_ones(m, 1)], dim=1)
            logits = drafter(input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=1, **{cache_kwarg(drafter): cache}).logits[:, -1].float()  # [m, V]
            processed = sampling.process(logits)
            q = torch.softmax(processed, dim=-1)
            token = torch.multinomial(q, 1, generator=generator)  # [m, 1]
            tokens[out, k] = token[:, 0].cpu().numpy()
            probs[out, k] = q.gather(-1, token)[:, 0].cpu().numpy()
            ents[out, k] = torch.stack([entropy.compute(processed, t) for t in ENTROPY_TYPES], -1).cpu().numpy()
            inputs, positions = token, positions + 1
    return tokens, probs, ents
