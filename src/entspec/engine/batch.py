"""Batched speculative decoding: B sequences share every drafter step and every verifier call, and each
sequence stops drafting on its own rule.

One round over the rows still generating (cf. `entspec.engine.decoder` for one sequence):

1. every row asks `entspec.engine.round.draft_limit` how many tokens it may draft (its cap, budget and gate);
   the drafter runs in lock step over the rows still drafting (its first step also feeds each row the
   committed tokens its cache lacks), one device read per step; after each step every row decides with
   `entspec.engine.round.stop_reason` (its own rule state, its own entropies) and leaves the lock step;
   with ``batch_stop="cost"`` the lock step also stops for every row once one more step no longer pays
   (`entspec.engine.batch_cost`);
2. the verifier runs once over every row's pending token and draft (ragged: right-padded, per-row position
   ids and attention mask; `entspec.engine.batch_kv`);
3. each row accepts by argmax match (greedy) or Leviathan Algorithm 1 with its own random generator, so a
   row's tokens depend on its prompt and seed only, never on the rows beside it;
4. rejected positions become holes in both caches (no recomputation); finished rows leave the batch;
5. each row's rule and gate hear that row's verdict.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from .batch_cost import BatchCostModel, batch_step_pays, catch_up_pays, row_step_pays
from .batch_kv import BatchCache, PackedBatchCache, bucket
from .config import EntropyConfig
from .entropy import ENTROPY_TYPES, EntropyComputer, shannon_entropy
from .gate import SpeculationGate
from ..records import GenerationResult, RoundRecord
from .round import DraftLimit, cut_emitted, draft_limit, feedback, stop_reason
from .sampling import SamplingParams, sample, speculative_accept
from ..rules import DraftState, StoppingCriterion, build_criterion
from .timing import Stopwatch

# batch_stop="cost": the decayed sums a row's acceptance estimates start from (accepted, judged, the drafter's
# probabilities of the judged tokens): acceptance 0.6, worth two judged tokens
ACCEPTANCE_PRIOR = (1.2, 2.0, 1.2)
NO_DRAFTER = DraftLimit(0, "none")  # autoregressive decoding: every round verifies the pending token alone


@dataclass
class _Row:
    """One sequence of the batch: its tokens, its rule state, its random generator and its round so far."""

    index: int  # position in the caller's list of prompts
    tokens: list[int]  # committed: prompt, then new tokens
    prompt_len: int
    generator: torch.Generator
    criterion: StoppingCriterion
    gate: SpeculationGate
    drafter_start: int = 0  # where the drafter's window starts in ``tokens`` (drafter_context)
    rounds: list[RoundRecord] = field(default_factory=list)
    finish_reason: str | None = None
    first_token_s: float = 0.0
    done_s: float = 0.0
    # the round in progress
    limit: DraftLimit = NO_DRAFTER
    left: int = 0  # tokens the row may still emit
    lag: int = 0  # committed tokens its drafter cache lacks (the first drafter step's catch-up)
    state: DraftState = field(default_factory=DraftState)
    draft: list[int] = field(default_factory=list)
    draft_probs: list[torch.Tensor] = field(default_factory=list)  # q_1..q_n, [V] each
    processed: list[torch.Tensor] = field(default_factory=list)  # processed draft logits (record_all_entropies)
    stop: str = "none"
    threshold: float | None = None
    # batch_stop="cost": the round's expected accepted tokens (sum of survivals) and the last token's survival;
    # decayed sums over the drafted tokens judged so far (the accepted ones and the first rejected one of each
    # round): accepted, judged, and the drafter's probabilities of them, starting from the prior's
    expected: float = 0.0
    survival: float = 1.0
    accepted_sum: float = ACCEPTANCE_PRIOR[0]
    judged_sum: float = ACCEPTANCE_PRIOR[1]
    predicted_sum: float = ACCEPTANCE_PRIOR[2]

    @property
    def acceptance(self) -> float:
        """Recent share of judged drafted tokens that were accepted."""
        return self.accepted_sum / self.judged_sum

    def accept_estimate(self, token_prob: float) -> float:
        """Greedy: the chance that a drafted token of drafter probability ``token_prob`` is accepted, the drafter's
        probability scaled by how well it predicted this row's recent verdicts."""
        return min(1.0, token_prob * self.accepted_sum / self.predicted_sum)

    def heard(self, drafted: int, accepted: int, token_probs: list[float], decay: float = 0.8) -> None:
        """The round's verdicts on the row's ``drafted`` tokens. A round that drafted nothing tells nothing, so the
        estimates relax toward the prior instead: a row whose low estimate stopped the batch from drafting would
        otherwise keep that estimate for good, since only drafting could revise it. After a few such rounds the
        row's estimate is the prior's again and the cost stop weighs drafting afresh."""
        if drafted:
            judged = accepted + (accepted < drafted)
            self.accepted_sum = decay * self.accepted_sum + accepted
            self.judged_sum = decay * self.judged_sum + judged
            self.predicted_sum = decay * self.predicted_sum + sum(token_probs[:judged])
        else:
            self.accepted_sum, self.judged_sum, self.predicted_sum = (
                decay * mine + (1 - decay) * prior
                for mine, prior in zip((self.accepted_sum, self.judged_sum, self.predicted_sum), ACCEPTANCE_PRIOR))

    def new_tokens(self) -> list[int]:
        return self.tokens[self.prompt_len:]


class BatchDecoder:
    """The batched loop for one drafter/verifier pair (``drafter=None``: batched autoregressive decoding).

    `EntropyBasedSpeculativeDecoder.generate_batch` is its public face; the caches are made once and reused.
    ``compact_slack``: holes tolerated before a cache is compacted (`BatchCache`); ``costs``: the measured batch
    costs ``batch_stop="cost"`` prices steps with; ``refined``: the copy of them the last `generate` call refined
    with its own rounds (each call starts from the measured table, `BatchCostModel.fresh`).
    """

    def __init__(self, drafter: PreTrainedModel | None, verifier: PreTrainedModel, config: EntropyConfig,
                 compact_slack: int = 32, costs: BatchCostModel | None = None) -> None:
        self.config = config
        self.costs = costs
        self.refined: BatchCostModel | None = None
        # The drafter's lock step stays padded in either layout: its step is bound by reading its weights, and a
        # packed step cost 1.10-1.30x a padded one where most rows draft (docs/batched.md).
        self.verifier = (PackedBatchCache if config.batch_layout == "packed" else BatchCache)(verifier, compact_slack)
        self.drafter = None if drafter is None else BatchCache(drafter, compact_slack)
        self.entropy = EntropyComputer(config.entropy_type, config.renyi_alpha, config.entropy_topk,
                                       config.entropy_unit)
        self.pad_id = 0

    @property
    def method(self) -> str:
        return "autoregressive" if self.drafter is None else "speculative"

    def generate(self, prompts: list[list[int]], max_new_tokens: int, sampling: SamplingParams,
                 seeds: list[int], eos: set[int]) -> list[GenerationResult]:
        start = time.perf_counter()
        device = self.verifier.device
        self.refined = None if self.costs is None else self.costs.fresh()
        rows = [_Row(i, list(p), len(p), torch.Generator(device=device).manual_seed(s), build_criterion(self.config),
                     SpeculationGate(self.config)) for i, (p, s) in enumerate(zip(prompts, seeds))]
        for row in rows:
            row.criterion.reset()
            row.gate.reset()
        # Prefill every committed token but the last, which is fed as each row's first pending token (the drafter:
        # only its window's, with drafter_context; in a batch the window is not rebuilt, it grows after the prefill).
        # A deferred drafter prefill is the first drafting step's catch-up instead (the first round drafts nothing).
        window = self.config.drafter_context
        for row in rows:
            row.drafter_start = max(0, row.prompt_len - window) if window else 0
        with Stopwatch(device) as prefill:
            for kv in self._caches():
                kv.reset(len(rows))
                if kv is self.drafter and self.config.drafter_prefill == "deferred":
                    continue
                offsets = [row.drafter_start if kv is self.drafter else 0 for row in rows]
                if max(len(p) - o for p, o in zip(prompts, offsets)) > 1:
                    kv.feed([p[o:-1] for p, o in zip(prompts, offsets)], "left", self.pad_id, logits_to_keep=1)
        active = rows if max_new_tokens > 0 else []
        while active:
            self._round(active, max_new_tokens, sampling, eos, start)
            keep = [i for i, row in enumerate(active) if row.finish_reason is None]
            if len(keep) < len(active):
                for kv in self._caches():
                    kv.select(keep)
                active = [active[i] for i in keep]
        return [GenerationResult(new_tokens=row.new_tokens(), rounds=row.rounds, prompt_len=row.prompt_len,
                                 wall_time_s=(row.done_s or time.perf_counter() - start),
                                 prefill_time_s=prefill.seconds, time_to_first_token_s=row.first_token_s,
                                 finish_reason=row.finish_reason or "length", method=self.method,
                                 batch={"size": len(rows), "row": row.index}) for row in rows]

    def _caches(self) -> list[BatchCache | PackedBatchCache]:
        return [self.verifier] if self.drafter is None else [self.verifier, self.drafter]

    def _round(self, active: list[_Row], max_new_tokens: int, sampling: SamplingParams, eos: set[int],
               start: float) -> None:
        round_start = time.perf_counter()
        for row in active:
            row.threshold = row.criterion.threshold
            row.left = max_new_tokens - len(row.new_tokens())
            row.limit = (NO_DRAFTER if self.drafter is None
                         else draft_limit(self.config, row.gate, max_new_tokens - len(row.new_tokens()), not row.rounds))
            row.state, row.draft, row.draft_probs, row.processed = DraftState(), [], [], []
            row.stop = row.limit.at_limit if row.limit.tokens == 0 else "none"
        with Stopwatch(self.verifier.device) as drafting:
            catch_up = self._draft(active, sampling, eos)
        with Stopwatch(self.verifier.device) as verify:
            verdicts = self._verify(active, sampling)
        packed = self.config.batch_layout == "packed"
        drafts = [len(row.draft) for row in active]
        if self.refined is not None:  # what this round's calls cost refines this call's copy of the costs
            steps, rows = max(drafts), len(active)
            if steps and catch_up <= 2:  # not a round whose first step was a (deferred) prefill
                self.refined.observe("draft", rows, 1, drafting.seconds / steps)
            self.refined.observe("verify", rows, bucket(rows + sum(drafts)) / rows if packed else steps + 1,
                                 verify.seconds)
        committed = [len(row.tokens) for row in active]
        for row, (accepted, token, accept_probs) in zip(active, verdicts):
            budget = max_new_tokens - len(row.new_tokens())
            emitted = cut_emitted(row.draft[:accepted] + [token], budget, eos)
            row.tokens += emitted
            feedback(row.criterion, row.gate, row.state, accepted)
            row.heard(len(row.draft), accepted, row.state.token_probs)
            row.rounds.append(RoundRecord(
                drafted=len(row.draft), accepted=accepted, emitted=len(emitted), entropies=list(row.state.entropies),
                stop_reason=row.stop, draft_time_s=drafting.seconds, verify_time_s=verify.seconds,
                round_time_s=time.perf_counter() - round_start, draft_token_probs=list(row.state.token_probs),
                accept_probs=accept_probs, entropies_by_type=self._all_entropies(row), threshold=row.threshold,
                verify_width=1 + (len(row.draft) if packed else max(drafts))))
            now = time.perf_counter() - start
            row.first_token_s = row.first_token_s or now
            if eos and emitted[-1] in eos:
                row.finish_reason, row.done_s = "eos", now
            elif len(row.new_tokens()) >= max_new_tokens:
                row.finish_reason, row.done_s = "length", now
        # Both caches keep each row's accepted prefix; the verifier's own token is the next pending one.
        keep = [n + verdict[0] for n, verdict in zip(committed, verdicts)]
        self.verifier.rollback(keep)
        if self.drafter is not None:
            self.drafter.rollback([n - row.drafter_start for n, row in zip(keep, active)])

    def _draft(self, active: list[_Row], sampling: SamplingParams, eos: set[int]) -> int:
        """Lock-step drafting over the rows whose limit allows it; each leaves when its own stop fires. Returns
        the longest catch-up its first step fed (0 when nothing was drafted)."""
        drafting = [row.limit.tokens > 0 for row in active]
        if self.drafter is None or not any(drafting):
            return 0
        cfg = self.config
        costs = self.refined if cfg.batch_stop == "cost" else None
        # First step: each drafting row catches up on the committed tokens its cache lacks (1, 2 after a fully
        # accepted round, more after rounds without drafting, the whole window after a deferred prefill).
        for i, row in enumerate(active):
            row.expected, row.survival = 0.0, 1.0
            row.lag = len(row.tokens) - row.drafter_start - self.drafter.lengths[i]
        steps = 0  # lock-step drafter steps taken this round
        if costs is not None and not lock_step_continues(costs, active, drafting, steps, None):
            return 0
        segments = [row.tokens[len(row.tokens) - row.lag:] if drafting[i] else [] for i, row in enumerate(active)]
        catch_up = max(len(s) for s in segments)
        while True:
            logits = self.drafter.feed(segments, "left", self.pad_id, logits_to_keep=1)[:, -1]  # [B, V]
            processed = sampling.process(logits)
            q = torch.softmax(processed, dim=-1)
            if sampling.greedy:
                tokens = logits.argmax(-1)
            else:  # each row draws from its own generator, only while it drafts
                tokens = torch.stack([sample(q[i:i + 1], row.generator)[0] if drafting[i] else logits.new_zeros((), dtype=torch.long)
                                      for i, row in enumerate(active)])
            # One device -> host read per step: [x, q(x), H_configured, H_shannon_nats] for every row.
            stats = torch.stack([tokens.to(q.dtype), q.gather(-1, tokens[:, None])[:, 0],
                                 self.entropy(processed, check=False), shannon_entropy(processed, check=False)], dim=1)
            for i, (row, (token, prob, h, h_nats)) in enumerate(zip(active, stats.tolist())):
                if not drafting[i]:
                    continue
                if prob != prob:  # NaN logits make the whole row of q NaN
                    raise ValueError(f"{type(self.drafter.model).__name__} produced NaN logits "
                                     "(check the dtype and the weights)")
                row.draft.append(int(token))
                row.draft_probs.append(q[i])
                if cfg.record_all_entropies:
                    row.processed.append(processed[i])
                row.state.entropies.append(h)
                row.state.token_probs.append(prob)
                row.state.shannon_nats.append(h_nats)
                stop = stop_reason(cfg, row.criterion, row.state, int(token) in eos, row.limit)
                if stop is not None:
                    row.stop, drafting[i] = stop, False
            if not any(drafting):
                return catch_up
            steps += 1
            if costs is not None and not lock_step_continues(costs, active, drafting, steps, sampling):
                return catch_up
            segments = [[row.draft[-1]] if drafting[i] else [] for i, row in enumerate(active)]

    def _verify(self, active: list[_Row], sampling: SamplingParams) -> list[tuple[int, int, list[float]]]:
        """One verifier forward over every row's pending token and draft; per row (accepted, token, accept probs)."""
        logits = self.verifier.feed([[row.tokens[-1]] + row.draft for row in active], "right", self.pad_id)
        width = logits.shape[1] - 1  # the longest draft
        drafts = torch.full((len(active), width), -1, dtype=torch.long, device=logits.device)
        for i, row in enumerate(active):
            drafts[i, :len(row.draft)] = torch.tensor(row.draft, dtype=torch.long)
        if sampling.greedy:
            target = logits.argmax(dim=-1)  # [B, W + 1]
            matches = drafts == target[:, :width]  # padding (-1) never matches
            accepted = matches.long().cumprod(dim=1).sum(dim=1)
            tokens = target.gather(1, accepted[:, None])[:, 0]
            ratios = matches.to(logits.dtype)
        else:  # Leviathan Algorithm 1 row by row, each with its own generator
            verdicts = []
            for i, row in enumerate(active):
                n = len(row.draft)
                p = torch.softmax(sampling.process(logits[i, :n + 1]), dim=-1)
                q = torch.stack(row.draft_probs) if n else p.new_zeros(0, p.shape[-1])
                verdicts.append(speculative_accept(drafts[i:i + 1, :n], q[None], p[None], row.generator))
            accepted = torch.cat([v[0] for v in verdicts])
            tokens = torch.cat([v[1] for v in verdicts])
            ratios = torch.stack([torch.nn.functional.pad(v[2][0], (0, width - v[2].shape[1])) for v in verdicts])
        # One read per round: [accepted, token, NaN?, accept probs (W)] per row.
        nan = torch.isnan(logits).flatten(1).any(dim=1)
        values = torch.cat([torch.stack([accepted, tokens, nan], dim=1).double(), ratios.double()], dim=1).tolist()
        if any(v[2] for v in values):
            raise ValueError(f"{type(self.verifier.model).__name__} produced NaN logits "
                             "(check the dtype and the weights)")
        return [(int(v[0]), int(v[1]), v[3:3 + len(row.draft)]) for v, row in zip(values, active)]

    def _all_entropies(self, row: _Row) -> dict[str, list[float]]:
        """Every entropy type per drafted token, when the config records them (one read per row and round)."""
        if not self.config.record_all_entropies or not row.draft:
            return {}
        processed = torch.stack(row.processed)
        values = torch.stack([self.entropy.compute(processed, name, check=False) for name in ENTROPY_TYPES]).tolist()
        return dict(zip(ENTROPY_TYPES, values))


def batch_prompts(prompts: Sequence[torch.Tensor] | torch.Tensor, attention_mask: torch.Tensor | None,
                  vocab: int) -> list[list[int]]:
    """The token ids of each prompt: a list of ``[1, T_i]`` tensors, or a padded ``[B, T]`` batch with its
    attention mask (left or right padding; each row's ones contiguous). One line naming what is wrong."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2:
            raise ValueError("prompts: a padded batch must be a [B, T] LongTensor")
        mask = torch.ones_like(prompts) if attention_mask is None else attention_mask
        if mask.shape != prompts.shape:
            raise ValueError(f"attention_mask: shape {tuple(mask.shape)} differs from prompts' {tuple(prompts.shape)}")
        rows = []
        for i in range(prompts.shape[0]):
            where = mask[i].nonzero().flatten()
            if len(where) and int(where[-1] - where[0]) + 1 != len(where):
                raise ValueError(f"attention_mask: row {i} has padding between tokens (pad on the left or the right)")
            rows.append(prompts[i, where].view(1, -1))
        prompts = rows
    elif attention_mask is not None:
        raise ValueError("attention_mask: only with a padded [B, T] batch (a list of prompts needs none)")
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts: must be a non-empty list of [1, T] LongTensors or a padded [B, T] batch")
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, torch.Tensor) or p.dim() != 2 or p.shape[0] != 1:
            raise ValueError(f"prompts[{i}]: must be a [1, T] LongTensor")
        if p.shape[1] == 0:
            raise ValueError(f"prompts[{i}] is empty: a prompt needs at least one token (e.g. BOS)")
        if p.dtype != torch.long:
            raise ValueError(f"prompts[{i}]: must be integer token ids (torch.long), got {p.dtype}")
        if int(p.max()) >= vocab or int(p.min()) < 0:
            raise ValueError(f"prompts[{i}]: token id out of range for a vocabulary of {vocab}")
        out.append(p[0].tolist())
    return out


def batch_seeds(seed: int | Sequence[int], rows: int) -> list[int]:
    """One seed per row: an int gives every row that seed (each row then samples what it would alone)."""
    seeds = [seed] * rows if isinstance(seed, int) and not isinstance(seed, bool) else list(seed)
    if len(seeds) != rows:
        raise ValueError(f"seed: {len(seeds)} seeds for {rows} prompts (give one int or one per prompt)")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ValueError(f"seed: must be integers >= 0, got {s!r}")
    return seeds


# ------------------------------------------------------------------------------------ for batch replay
def replay_row(index: int, config: EntropyConfig) -> _Row:
    """A row with its own rule, gate and acceptance estimates but no tokens and no generator: batch replay
    (`entspec.replay.batch`) drives it through this module's decisions (`lock_step_continues`, `_Row.heard`), so a
    replayed batch and a decoded one decide with the same code."""
    row = _Row(index, [], 0, None, build_criterion(config), SpeculationGate(config))
    row.criterion.reset()
    row.gate.reset()
    return row


def lock_step_continues(costs: BatchCostModel, rows: list[_Row], drafting: list[bool], steps: int,
                        sampling: SamplingParams | None) -> bool:
    """batch_stop="cost" after ``steps`` lock-step steps: True while drafting on pays within the rows' limits
    (`batch_step_pays`); otherwise the rows still drafting stop with "batch_cost" and the answer is False. A
    row's chance that a token is accepted: greedy, from the drafter's probability of the token just drafted
    (`_Row.accept_estimate`; the next tokens are expected to do as well); sampling, and before the first step
    (``sampling`` None), the row's recent acceptance rate. The survivals of the rows that drafted at this step
    are updated here. Before the first step, when it must feed more than two committed tokens per row (``_Row.lag``),
    starting must also pay for that feed over the tokens the rows may still emit (``_Row.left``; `catch_up_pays`).
    `BatchDecoder._draft` and batch replay (`entspec.replay.batch`) both ask it."""
    chances = {}  # drafting row -> (survival, chance, room)
    for i, row in enumerate(rows):
        a = row.acceptance
        if sampling is not None and sampling.greedy and row.draft:
            a = row.accept_estimate(row.state.token_probs[-1])
        if sampling is not None and row.draft and len(row.draft) == steps:  # drafted at this step
            row.survival *= a
            row.expected += row.survival
        if drafting[i]:
            chances[i] = (row.survival, a, row.limit.tokens - len(row.draft))
    expected = sum(1.0 + row.expected for row in rows)
    lag = max((row.lag for i, row in enumerate(rows) if drafting[i]), default=0) if steps == 0 else 0
    if costs.layout == "packed" and steps:  # a row's own tokens cost only it: each row first stops on its own
        drafts = [len(row.draft) for row in rows]
        for i, chance in list(chances.items()):
            if not row_step_pays(costs, drafts, expected, chance):
                rows[i].stop, drafting[i] = "batch_cost", False
                del chances[i]
        if not chances:
            return False
    stopped = [len(row.draft) for i, row in enumerate(rows) if not drafting[i]]
    if batch_step_pays(costs, len(rows), steps, expected, list(chances.values()), stopped) and (
            lag <= 2 or catch_up_pays(costs, len(rows), lag, sum(row.left for row in rows),
                                      [(a, room) for _, a, room in chances.values()])):
        return True
    for i, row in enumerate(rows):
        if drafting[i]:
            row.stop, drafting[i] = "batch_cost", False
    return False
