"""The cost model replay and the oracle price rounds with, measured on the machine by the engine itself.

Time of one round that drafts n tokens (n = 0: plain decoding)::

    round(n) = n * draft_step_s + verify_s(n + 1) + overhead_round_s

``verify_s(m)``, the verifier's forward over m tokens, grows with m (it is nearly flat on a memory-bound
machine, but not quite); it is measured at a few m and interpolated linearly (extrapolated with the last
slope). The first round after the prefill reuses the prefill's last logits, so its verifier forward covers
only the n drafted tokens (none when n = 0). Prefill is linear in the prompt length, per model.

:func:`calibrate` measures all of it with the engine's own stopwatches: it decodes with ``fixed`` k for a few
k and reads the per-round ``draft_time_s``, ``verify_time_s`` and ``round_time_s`` of the trace, so the costs
include exactly the work the engine does per step (entropies, sampling, acceptance).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..atomic import atomic_write_text

if TYPE_CHECKING:
    from ..engine.sampling import SamplingParams

COST_FILE = "cost_model.json"  # a traces folder's cost model
BATCH_COST_FILE = "batch_costs.json"  # a greedy traces folder's batch costs, when its experiment has batch_size > 1


@dataclass
class CostModel:
    draft_step_s: float  # one drafter step (forward + the engine's per-token work)
    verify_tokens: list[int]  # m at which verify_s was measured (ascending)
    verify_s: list[float]  # verifier call over m tokens, incl. the acceptance step
    overhead_round_s: float  # per-round framework time outside the two stopwatches
    prefill_s_per_token: dict[str, float] = field(default_factory=lambda: {"drafter": 0.0, "verifier": 0.0})
    prefill_s_fixed: dict[str, float] = field(default_factory=lambda: {"drafter": 0.0, "verifier": 0.0})
    device: str = ""
    dtype: str = ""
    threads: int = 0
    measured_at: str = ""

    def __post_init__(self) -> None:
        if len(self.verify_tokens) != len(self.verify_s) or not self.verify_tokens:
            raise ValueError("verify_tokens, verify_s: must be non-empty and of equal length")
        _check_costs(self)
        self._m = np.asarray(self.verify_tokens, dtype=float)
        self._v = np.asarray(self.verify_s, dtype=float)
        self._rounds: dict[tuple[int, bool], float] = {}  # round_time is on replay's hot path

    def verify(self, m: int) -> float:
        """Verifier call over ``m`` tokens (0 for m = 0: the kept prefill logits)."""
        if m <= 0:
            return 0.0
        if len(self._m) == 1:
            return float(self._v[0])
        if m > self._m[-1]:  # extrapolate with the last measured slope
            slope = (self._v[-1] - self._v[-2]) / (self._m[-1] - self._m[-2])
            return float(self._v[-1] + slope * (m - self._m[-1]))
        return float(np.interp(m, self._m, self._v))

    def round_time(self, drafted: int, first: bool = False, steps: int | None = None) -> float:
        """Seconds of one round that drafts ``drafted`` tokens (``first``: right after the prefill) in ``steps``
        drafter steps (default ``drafted``; more with chunked drafting)."""
        key = (drafted, first, steps)
        if key not in self._rounds:
            verified = drafted if first else drafted + 1
            self._rounds[key] = ((drafted if steps is None else steps) * self.draft_step_s + self.verify(verified)
                                 + self.overhead_round_s)
        return self._rounds[key]

    def prefill(self, prompt_len: int, with_drafter: bool = True, drafter_window: int | None = None) -> float:
        """Both models' prefill of a prompt (the drafter's over its last ``drafter_window`` tokens, when given)."""
        drafter = min(prompt_len, drafter_window or prompt_len)
        return self.model_prefill("verifier", prompt_len) + (self.model_prefill("drafter", drafter) if with_drafter
                                                             else 0.0)

    def model_prefill(self, model: str, tokens: int) -> float:
        """One model's (``"drafter"`` or ``"verifier"``) prefill of ``tokens`` tokens."""
        return self.prefill_s_fixed[model] + self.prefill_s_per_token[model] * tokens

    @property
    def cost_ratio(self) -> float:
        """c = draft step / one-token verifier call."""
        return self.draft_step_s / self.verify(1)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def relative(self) -> dict[str, Any]:
        """These costs as `EntropyConfig` fields, in one-token verifier calls (`entspec.engine.round_cost`): the
        drafter step ``cost_ratio``, the linear ``verify_slope`` and the measured ``verify_curve``."""
        v1 = self.verify(1)
        return {"cost_ratio": round(self.draft_step_s / v1, 4),
                "verify_slope": round(max(0.0, (self.verify(17) - v1) / 16 / v1), 4),
                "verify_curve": [[m, round(self.verify(m) / v1, 4)] for m in self.verify_tokens]}

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "CostModel":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}: not a readable cost model ({err})") from None
        except ValueError as err:  # a field with an impossible value: name the file and the field
            raise ValueError(f"{path}: {err}") from None


def _check_costs(model: CostModel) -> None:
    """Finite, positive costs; verify_tokens whole numbers >= 1, strictly increasing (one line naming the field)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    tokens = model.verify_tokens
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in tokens):
        raise ValueError(f"verify_tokens: must be whole numbers >= 1 (got {tokens})")
    if any(a >= b for a, b in zip(tokens, tokens[1:])):
        raise ValueError(f"verify_tokens: must be strictly increasing, no duplicates (got {tokens})")
    if not all(number(v) and v > 0 for v in model.verify_s):
        raise ValueError(f"verify_s: must be finite seconds > 0 (got {model.verify_s})")
    for name in ("draft_step_s", "overhead_round_s"):
        value = getattr(model, name)
        if not number(value) or value < 0:
            raise ValueError(f"{name}: must be finite seconds >= 0 (got {value!r})")
    for name in ("prefill_s_per_token", "prefill_s_fixed"):
        values = getattr(model, name)
        if not isinstance(values, dict) or not all(number(v) and v >= 0 for v in values.values()):
            raise ValueError(f"{name}: must map drafter/verifier to finite seconds >= 0 (got {values!r})")


def calibrate(
    drafter: torch.nn.Module,
    verifier: torch.nn.Module,
    input_ids: torch.Tensor,
    *,
    draft_lengths: tuple[int, ...] = (1, 2, 4, 8, 16),
    rounds: int = 6,
    sampling: "SamplingParams | None" = None,
    drafter_context: int | None = None,
) -> CostModel:
    """Measure the cost model with the engine on ``input_ids [1, P]`` (``rounds`` rounds per length), greedy or
    at ``sampling``'s temperature / top-k / top-p (sampling adds per-token work to both stopwatches); with a
    ``drafter_context`` window the drafter steps read the window (and the drafter's prefill is fitted on it).

    Every k in ``draft_lengths`` decodes ``rounds`` rounds with ``fixed`` k (k + 1 verified tokens per round);
    autoregressive decoding gives the 1-token verifier call. Medians over rounds (the first is skipped).
    """
    from ..engine.config import EntropyConfig
    from ..engine.decoder import EntropyBasedSpeculativeDecoder

    dtype = next(verifier.parameters()).dtype
    device = next(verifier.parameters()).device
    common = dict(ignore_eos=True, temperature=0.0)
    if sampling is not None and not sampling.greedy:
        common.update(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
    plain = EntropyBasedSpeculativeDecoder.autoregressive(verifier)
    plain.generate(input_ids, max_new_tokens=3, **common)  # warm-up
    verify = {1: [], }
    overhead, draft_steps = [], []
    res = plain.generate(input_ids, max_new_tokens=rounds + 2, **common)
    for r in res.rounds[1:]:
        verify[1].append(r.verify_time_s)
        overhead.append(r.round_time_s - r.verify_time_s)
    for k in draft_lengths:
        dec = EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=k,
                                                                              drafter_context=drafter_context))
        res = dec.generate(input_ids, max_new_tokens=(k + 1) * (rounds + 1) + 1, **common)
        for r in res.rounds[1:]:
            if r.drafted != k:
                continue
            verify.setdefault(k + 1, []).append(r.verify_time_s)
            draft_steps.append(r.draft_time_s / k)
            overhead.append(r.round_time_s - r.draft_time_s - r.verify_time_s)
    prefill_fixed, prefill_per_token = _prefill_costs(drafter, verifier, input_ids, drafter_context)
    ms = sorted(verify)
    return CostModel(
        draft_step_s=float(np.median(draft_steps)),
        verify_tokens=ms,
        verify_s=[float(np.median(verify[m])) for m in ms],
        overhead_round_s=float(np.median(overhead)),
        prefill_s_per_token=prefill_per_token,
        prefill_s_fixed=prefill_fixed,
        device=_device_name(device),
        dtype=str(dtype).replace("torch.", ""),
        threads=torch.get_num_threads(),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def calibrate_window(drafter: torch.nn.Module, verifier: torch.nn.Module, input_ids: torch.Tensor, base: CostModel,
                     drafter_context: int, *, draft_len: int = 4, rounds: int = 4, repeats: int = 3,
                     sampling: "SamplingParams | None" = None) -> CostModel:
    """``base`` (the whole-sequence traces' cost model) with the drafter's step and prefill of a ``drafter_context``
    window, measured relative to the whole sequence's in this process: what a window changes is a ratio, and a
    ratio of two calibrations made minutes apart carries the machine's drift between them (on the CPU of
    docs/logs/2026-12-01-long-int8.md two calibrations 20 minutes apart read the same verifier call 22-48% apart).

    Fixed ``draft_len`` decoding with and without the window alternates ``repeats`` times (``rounds`` rounds each);
    the windowed step is ``base.draft_step_s`` times the ratio of the two medians. The drafter's prefill of the
    window is fitted as `calibrate` fits it and scaled by the ratio of the base's prefill of the whole prompt to
    the one measured here. The verifier's costs and the round's overhead are the base's: a window changes neither.
    """
    from ..engine.config import EntropyConfig
    from ..engine.decoder import EntropyBasedSpeculativeDecoder

    common = dict(ignore_eos=True, temperature=0.0, max_new_tokens=(draft_len + 1) * (rounds + 1) + 1)
    if sampling is not None and not sampling.greedy:
        common.update(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
    steps: dict[int | None, list[float]] = {None: [], drafter_context: []}
    decoders = {w: EntropyBasedSpeculativeDecoder(drafter, verifier, EntropyConfig(
        strategy="fixed", max_draft_len=draft_len, drafter_context=w)) for w in steps}
    for w, dec in decoders.items():  # warm-up
        dec.generate(input_ids, **{**common, "max_new_tokens": draft_len + 2})
    for _ in range(repeats):
        for w, dec in decoders.items():
            steps[w] += [r.draft_time_s / r.drafted for r in dec.generate(input_ids, **common).rounds[1:]
                         if r.drafted == draft_len]
    ratio = float(np.median(steps[drafter_context]) / np.median(steps[None]))
    whole_fixed, whole_per_token = _prefill_costs(drafter, verifier, input_ids, models=("drafter",))
    fixed, per_token = _prefill_costs(drafter, verifier, input_ids, drafter_context, models=("drafter",))
    prompt_len = input_ids.shape[1]
    scale = base.model_prefill("drafter", prompt_len) / max(
        whole_fixed["drafter"] + whole_per_token["drafter"] * prompt_len, 1e-12)
    data = base.to_dict()
    data["prefill_s_fixed"] = {**data["prefill_s_fixed"], "drafter": fixed["drafter"] * scale}
    data["prefill_s_per_token"] = {**data["prefill_s_per_token"], "drafter": per_token["drafter"] * scale}
    return CostModel(**{**data, "draft_step_s": base.draft_step_s * ratio,
                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _prefill_costs(drafter, verifier, input_ids, drafter_context: int | None = None,
                   models: tuple[str, ...] = ("drafter", "verifier")) -> tuple[dict[str, float], dict[str, float]]:
    """Per model (of ``models``): prefill time = fixed + per_token * P, fitted on the prompt and its first half (the
    drafter's on its last ``drafter_context`` tokens and their last half, the lengths it prefills with that window)."""
    from ..engine.kv import CachedModel
    from ..engine.timing import Stopwatch

    fixed, per_token = {}, {}
    for name, model in (("drafter", drafter), ("verifier", verifier)):
        if name not in models:
            continue
        prompt = input_ids[:, -drafter_context:] if drafter_context and name == "drafter" else input_ids
        lengths = sorted({max(1, prompt.shape[1] // 2), prompt.shape[1]})
        lm = CachedModel(model)
        times = []
        for n in lengths:
            samples = []
            for _ in range(3):
                with Stopwatch(lm.device) as sw:
                    lm.prefill(prompt[:, -n:].to(lm.device))
                samples.append(sw.seconds)
            times.append(float(np.median(samples[1:])))
        if len(lengths) == 1:
            fixed[name], per_token[name] = 0.0, times[0] / lengths[0]
        else:
            slope = max(0.0, (times[1] - times[0]) / (lengths[1] - lengths[0]))
            fixed[name], per_token[name] = max(0.0, times[1] - slope * lengths[1]), slope
    return fixed, per_token


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def load_cost_model(folder: str | Path) -> CostModel:
    """The cost model of a traces folder (`COST_FILE`)."""
    path = Path(folder) / COST_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no cost model; `entspec trace` calibrates one")
    return CostModel.load(path)
