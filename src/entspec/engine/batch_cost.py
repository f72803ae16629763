"""What a batched round costs on this device, and the batch's stop: draft on while the next step pays.

`BatchCostModel` holds three measured tables: one drafter step over m rows (``draft_s``), one drafter prefill of
a prompt in m rows (``draft_prefill_s``; a round's first step that feeds n committed tokens per row is priced
linearly between the two) and one verifier call over B rows x W positions per row (``verify_s``), after a
prompt's worth of cached tokens. A round of B rows
whose longest draft is n costs ``sum of its drafter steps + verify(B, n + 1)``: the padded forward computes
every row to the longest draft, so a row's stop saves nothing while another row drafts on.
`calibrate_batch` measures both tables through the engine's own `BatchCache` (median of a few calls after a
warm-up); values between the measured points are interpolated (`scipy.interpolate.RegularGridInterpolator`),
beyond them extrapolated linearly. The measured table is a prior: a decoder refines it with its own rounds
(`observe`), since the costs inside a generation (longer caches, holes, the engine's own work) differ from a
calibration's by 10-20% on a CPU, enough to flip the decision between one drafted token and none. Each
`generate_batch` call refines its own copy (`fresh`): a batch decides on the measured table and its own rounds,
never on the rounds of the methods or batches the same process decoded before it, so methods timed one after the
other price steps alike and a resumed run decides as an uninterrupted one.

In the packed layout (``EntropyConfig(batch_layout="packed")``, `entspec.engine.batch_kv.PackedBatchCache`) the
verifier's call costs the tokens it runs, not rows x the longest draft: the table is measured in that layout
(``layout: packed``) and a round is priced by its tokens (`BatchCostModel.round_s`, `verify_packed`); the drafter's
lock step stays padded. There a row's own tokens cost only it, so before the batch's stop each drafting row is asked
on its own (`row_step_pays`) whether its next tokens pay for what they add to the call.

`batch_step_pays` is the batch's stop (``EntropyConfig(batch_stop="cost")``), asked after every lock-step
drafter step. With ``a`` a row's estimate that its next drafted token is accepted and ``S`` the product of its
estimates over the tokens drafted so far this round, the round so far is expected to emit
``E = sum over rows of (1 + sum of S over its drafted tokens)`` tokens in ``T`` seconds; ``j`` more steps would
add ``g_j = sum over drafting rows of S * (a + a^2 + ... + a^j)`` tokens (a row adds nothing past its own
limit) at ``j * d(B) + verify(B, W + j) - verify(B, W)`` seconds. Drafting goes on while some ``j`` up to the
rows' limits raises the round's rate (``g_j / dT_j >= E / T``), and stops when no number of further steps
would. It looks ahead, not only one step, because measured verify costs are not convex: on a CPU a forward
over 4 positions can cost less than one over 2, so a one-step test stops before the step that pays. The
estimate ``a``: greedy, the drafter's probability of its own token (its top-1 probability); sampling, the
row's recent acceptance rate; the tokens after the next are expected to do as well.

`catch_up_pays` is asked before a round's first step when that step must feed more than two committed tokens per
row: the deferred drafter prefill (``drafter_prefill="deferred"``), or the tokens of rounds that drafted nothing.
That feed is paid once, so it is priced against what drafting saves over the rest of the batch's tokens, not
against one round: the batch starts drafting when the best round's rate, over every token the rows may still
emit, saves more seconds than the feed costs beyond an ordinary step. At large B, where a drafted token barely
pays, this keeps a batch from paying a drafter prefill it can never earn back.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.interpolate import RegularGridInterpolator

from ..atomic import atomic_write_text
from .batch_kv import BatchCache, PackedBatchCache, bucket


# Verifier widths (positions per row) calibrated by default: every width a draft of up to 5 tokens uses, as CPU
# kernels are not monotone in it (a B = 4 bench run, docs/logs/2026-11-30-b4-128-fixed-traces.md: calls of 4 rows x 3
# positions took 1.65 s, of 4 rows x 4 positions 1.54 s, where interpolating the measured widths 2 and 4 gave
# 1.20 s), then coarser.
WIDTHS = (1, 2, 3, 4, 5, 6, 8, 12)
LAYOUTS = ("padded", "packed")


@dataclass
class BatchCostModel:
    """Seconds of a drafter step over ``draft_rows[i]`` rows (``draft_s[i]``) and of a verifier call over
    ``verify_rows[i]`` rows x ``verify_widths[j]`` positions (``verify_s[i][j]``), on one device."""

    draft_rows: list[int]
    draft_s: list[float]
    verify_rows: list[int]
    verify_widths: list[int]
    verify_s: list[list[float]]
    cached_tokens: int = 0  # tokens per row in the caches when measured
    # seconds of one drafter forward over ``cached_tokens`` positions per row (a prefill), per draft_rows entry;
    # empty in tables measured before it was: a long catch-up is then priced as one step
    draft_prefill_s: list[float] = field(default_factory=list)
    device: str = ""
    dtype: str = ""
    threads: int = 0
    measured_at: str = ""
    refine: bool = True  # refined by the rounds of the decoders that use it (`observe`)
    # the batch layout the forwards were timed in (`EntropyConfig.batch_layout`): "padded", a call over B rows x W
    # positions is one [B, W] forward; "packed", B x W tokens back to back, so a round is priced by its tokens
    layout: str = "padded"
    _grid: RegularGridInterpolator | None = field(default=None, init=False, repr=False, compare=False)
    _seen: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # (kind, rows, width) -> s

    def __post_init__(self) -> None:
        for name in ("draft_rows", "verify_rows", "verify_widths"):
            _check_axis(name, getattr(self, name))
        _check_seconds("draft_s", self.draft_s, len(self.draft_rows))
        if self.draft_prefill_s:
            _check_seconds("draft_prefill_s", self.draft_prefill_s, len(self.draft_rows))
        if not isinstance(self.verify_s, list) or len(self.verify_s) != len(self.verify_rows):
            raise ValueError(f"verify_s: must hold one list per verify_rows entry ({len(self.verify_rows)})")
        for row in self.verify_s:
            _check_seconds("verify_s", row, len(self.verify_widths))
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout: must be one of {', '.join(LAYOUTS)} (got {self.layout!r})")
        axes = [np.asarray(self.verify_rows, float), np.asarray(self.verify_widths, float)]
        if all(len(a) > 1 for a in axes):
            self._grid = RegularGridInterpolator(axes, np.asarray(self.verify_s, float), bounds_error=False,
                                                 fill_value=None)

    def draft(self, rows: int) -> float:
        """One drafter step over ``rows`` rows (as observed in this process, else as measured); 0 for no rows."""
        if rows <= 0:
            return 0.0
        return self._seen.get(("draft", rows, 1)) or self.measured_draft(rows)

    def round_s(self, drafts: list[int]) -> float:
        """A round of ``len(drafts)`` rows that drafted these many tokens each (no catch-up): its lock-step drafter
        steps, each over every row (a row that stopped rides along), and its verifier call, as wide as the longest
        draft (padded) or costing its tokens (packed: priced as that many tokens spread evenly over the rows)."""
        rows, steps = len(drafts), max(drafts, default=0)
        if self.layout == "packed":
            return steps * self.draft(rows) + self.verify_packed(rows, rows + sum(drafts))
        return steps * self.draft(rows) + self.verify(rows, steps + 1)

    def verify_packed(self, rows: int, tokens: int) -> float:
        """A packed verifier call over ``tokens`` tokens of ``rows`` rows: the forward runs `bucket` of them, priced
        as the table's call of ``rows`` rows whose positions per row add up to that (the calibration's calls of
        B x W tokens ran bucketed alike)."""
        return self.verify(rows, bucket(tokens) / rows)

    def draft_feed(self, rows: int, tokens: int) -> float:
        """One drafter forward feeding ``tokens`` positions to each of ``rows`` rows (a round's first step with its
        catch-up): a step's cost plus the measured prefill's cost per further position, linear in ``tokens``."""
        step = self.draft(rows)
        if tokens <= 1 or not self.draft_prefill_s or self.cached_tokens <= 1:
            return step
        prefill = _interp(rows, self.draft_rows, self.draft_prefill_s)
        return step + max(prefill - step, 0.0) * (tokens - 1) / (self.cached_tokens - 1)

    def verify(self, rows: int, width: int) -> float:
        """One verifier call over ``rows`` rows x ``width`` positions each (as observed in this process, else as
        measured, scaled by what the observed calls of that many rows cost against the measurements)."""
        seen = self._seen.get(("verify", rows, width))
        if seen is not None:
            return seen
        ratios = [s / self.measured_verify(rows, w) for (kind, b, w), s in self._seen.items()
                  if kind == "verify" and b == rows]
        return self.measured_verify(rows, width) * (float(np.mean(ratios)) if ratios else 1.0)

    def fresh(self) -> "BatchCostModel":
        """The measured table without this object's observations: what one `generate_batch` call refines."""
        return BatchCostModel(**self.to_dict())

    def observe(self, kind: str, rows: int, width: int, seconds: float, decay: float = 0.7) -> None:
        """A timing from a real round: ``kind`` "draft" (one step, width 1) or "verify"; moving average."""
        if not self.refine:
            return
        key = (kind, rows, width)
        old = self._seen.get(key)
        self._seen[key] = seconds if old is None else decay * old + (1 - decay) * seconds

    def measured_draft(self, rows: int) -> float:
        return _interp(rows, self.draft_rows, self.draft_s)

    def measured_verify(self, rows: int, width: int) -> float:
        if self._grid is not None:
            return max(float(self._grid([[rows, width]])[0]), 0.0)
        if len(self.verify_rows) == 1:
            return _interp(width, self.verify_widths, self.verify_s[0])
        return _interp(rows, self.verify_rows, [r[0] for r in self.verify_s])

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "BatchCostModel":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}: not a readable batch cost model ({err})") from None
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _check_axis(name: str, values) -> None:
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)):
        raise ValueError(f"{name}: must be a non-empty list of whole numbers >= 1 (got {values!r})")
    if any(a >= b for a, b in zip(values, values[1:])):
        raise ValueError(f"{name}: must be strictly increasing, no duplicates (got {values})")


def _check_seconds(name: str, values, n: int) -> None:
    if (not isinstance(values, list) or len(values) != n
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                       for v in values)):
        raise ValueError(f"{name}: must be {n} finite seconds > 0 (got {values!r})")


def _interp(x: float, xs: list[int], ys: list[float]) -> float:
    """Linear interpolation, extrapolated with the nearest segment's slope (flat with one point)."""
    if len(xs) == 1:
        return float(ys[0])
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
    return max(float(ys[i] + slope * (x - xs[i])), 0.0)


def batch_step_pays(costs: BatchCostModel, rows: int, steps: int, expected: float,
                    chances: list[tuple[float, float, int]], stopped: list[int] | None = None) -> bool:
    """Whether drafting on pays (module docstring). ``rows``: rows in the batch; ``steps``: drafter steps taken
    this round (each drafting row has drafted that many); ``expected``: the round's expected emitted tokens so far
    (E); ``chances``: per drafting row, the survival of its last drafted token (S), its chance that a next token
    is accepted (a) and how many more it may draft; ``stopped``: the drafts of the other rows (default: ``steps``
    each). A row that stopped pads every later step and the call in the padded layout and costs nothing more in
    the packed one (`BatchCostModel.round_s`)."""
    stopped = [steps] * (rows - len(chances)) if stopped is None else stopped
    spent = costs.round_s(stopped + [steps] * len(chances))
    gain, horizon = 0.0, max((room for _, _, room in chances), default=0)
    for j in range(1, horizon + 1):
        gain += sum(s * a ** j for s, a, room in chances if room >= j)
        more = costs.round_s(stopped + [steps + min(room, j) for _, _, room in chances]) - spent
        if gain * spent >= expected * max(more, 1e-12):
            return True
    return False


def row_step_pays(costs: BatchCostModel, drafts: list[int], expected: float, chance: tuple[float, float, int]) -> bool:
    """Packed layout: whether one drafting row's own next tokens pay for their tokens in the verifier call, at the
    round's rate so far (``expected`` tokens in the seconds of ``drafts``, every row's draft so far). The drafter
    steps are shared by the lock step, so they are `batch_step_pays`' to weigh: a row that fails here stops alone;
    the others draft on while that says so."""
    rows, tokens = len(drafts), len(drafts) + sum(drafts)
    spent = costs.round_s(drafts)
    s, a, room = chance
    gain = 0.0
    for j in range(1, room + 1):  # within the call's bucket a token is free: the look-ahead sees past it
        gain += s * a ** j
        more = costs.verify_packed(rows, tokens + j) - costs.verify_packed(rows, tokens)
        if gain * spent >= expected * max(more, 1e-12):
            return True
    return False


def catch_up_pays(costs: BatchCostModel, rows: int, catch_up: int, left: int,
                  chances: list[tuple[float, int]]) -> bool:
    """Whether a round should start drafting when its first drafter step must first feed ``catch_up`` committed
    tokens per row (a deferred prefill, or the tokens of rounds that drafted nothing): that feed is paid once and
    lets the batch draft for the rest of its tokens. It pays when the best drafting round's rate (`batch_step_pays`'
    expectation, from survival 1) saves more than the feed's extra seconds over the ``left`` tokens the batch still
    has to emit (every row's budget; rows that end at EOS earlier make this an upper bound). ``chances``: per drafting
    row, its chance that a drafted token is accepted and how many it may draft."""
    extra = costs.draft_feed(rows, catch_up) - costs.draft(rows)
    if extra <= 0:
        return True
    plain = rows / costs.verify(rows, 1)  # tokens per second drafting nothing
    best, gain = plain, 0.0
    idle = [0] * (rows - len(chances))  # rows that do not draft this round
    for j in range(1, max((room for _, room in chances), default=0) + 1):
        gain += sum(a ** j for a, room in chances if room >= j)
        best = max(best, (rows + gain) / costs.round_s(idle + [min(room, j) for _, room in chances]))
    return left * (1 / plain - 1 / best) >= extra


@torch.inference_mode()
def calibrate_batch(drafter: torch.nn.Module, verifier: torch.nn.Module, prompt: list[int],
                    rows: tuple[int, ...] = (1, 2, 4, 8), widths: tuple[int, ...] = WIDTHS,
                    reps: int = 2, layout: str = "padded") -> BatchCostModel:
    """Measure the batch cost model with ``prompt`` cached in every row (median of ``reps`` calls after one
    warm-up per point; one prefill per model), in the batch ``layout`` the engine will run. Minutes for large
    models on a CPU: run it once and `save` it."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    rows = tuple(sorted(rows))
    verify = _forward_seconds(verifier, rows, widths, prompt, reps, layout)
    # the drafter's lock step is padded in either layout (`entspec.engine.batch`)
    draft = [seconds[0] for seconds in _forward_seconds(drafter, rows, (1,), prompt, reps, "padded")]
    param = next(verifier.parameters())
    return BatchCostModel(draft_rows=list(rows), draft_s=draft, verify_rows=list(rows),
                          verify_widths=list(widths), verify_s=verify, cached_tokens=len(prompt),
                          draft_prefill_s=[_prefill_seconds(drafter, b, prompt, "padded") for b in rows],
                          device=str(param.device), dtype=str(param.dtype).replace("torch.", ""),
                          threads=torch.get_num_threads(), measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
                          layout=layout)


def _cache(model: torch.nn.Module, layout: str) -> BatchCache | PackedBatchCache:
    return (PackedBatchCache if layout == "packed" else BatchCache)(model)


def _forward_seconds(model: torch.nn.Module, rows: tuple[int, ...], widths: tuple[int, ...], prompt: list[int],
                     reps: int, layout: str) -> list[list[float]]:
    """Seconds of one forward of B rows x W positions for each B in ``rows`` (ascending) and W in ``widths``:
    the prompt is prefilled once in the most rows, and fewer rows are selected from them."""
    cache = _cache(model, layout)
    cache.reset(rows[-1])
    cache.feed([prompt] * rows[-1], "left", logits_to_keep=1)
    out = []
    for b in reversed(rows):
        cache.select(list(range(b)))
        out.append([])
        for width in widths:
            times = []
            for _ in range(reps + 1):  # the first call warms up
                start = time.perf_counter()
                cache.feed([prompt[-1:] * width] * b, "right")
                if model.device.type == "cuda":
                    torch.cuda.synchronize(model.device)
                times.append(time.perf_counter() - start)
                cache.rollback([len(prompt)] * b)
            out[-1].append(statistics.median(times[1:]))
    return out[::-1]


def _prefill_seconds(model: torch.nn.Module, rows: int, prompt: list[int], layout: str) -> float:
    """Seconds of one forward over ``prompt`` in each of ``rows`` rows of an empty cache (after the model's warm-up
    in `_forward_seconds`: one call, as a prefill is long enough to time once)."""
    cache = _cache(model, layout)
    cache.reset(rows)
    start = time.perf_counter()
    cache.feed([prompt] * rows, "left", logits_to_keep=1)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    return time.perf_counter() - start
