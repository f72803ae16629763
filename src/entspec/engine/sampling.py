"""Processed distributions and the acceptance step of speculative sampling.

Variable names follow Leviathan et al. 2023, Algorithm 1: ``target_probs`` is the verifier's distribution
p, ``draft_probs`` the drafter's distribution q. Temperature, top-k and top-p are applied identically to
both before the test (transformers' own logits warpers, in the order ``generate`` applies them), and q is
exactly the distribution each draft token was sampled from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper


@dataclass(frozen=True)
class SamplingParams:
    """``temperature == 0`` means greedy decoding; top-k / top-p are ignored then."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "top_k", "top_p"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if self.top_k is not None and not isinstance(self.top_k, int):
            raise ValueError(f"top_k must be an integer, got {self.top_k!r}")
        if self.temperature is None or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @cached_property
    def _warpers(self) -> LogitsProcessorList:
        return self.warpers()

    def warpers(self) -> LogitsProcessorList:
        """Temperature, then top-k, then top-p: the order of ``GenerationMixin`` sampling."""
        warpers = LogitsProcessorList()
        if not self.greedy and self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k is not None:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p is not None and self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(self.top_p))
        return warpers

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """Processed logits ``[N, V]`` (float32; masked tokens are ``-inf``).

        In greedy mode the token is the argmax of the raw logits; the processed distribution (used only for
        entropies and the trace) is then the temperature-1 distribution with top-k / top-p applied.
        """
        # NaN is rejected once, where logits leave the model (`CachedModel.forward`), not again per use.
        # The warpers are built once per SamplingParams (the decoder makes one per generation), not per step.
        return self._warpers(None, logits.float())


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``probs [N, V]`` -> ``[N]``."""
    try:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    except RuntimeError:
        # NaN logits are checked once per round after the fact; a draw from NaN fails first, so say why here.
        if torch.isnan(probs).any():
            raise ValueError("sampling: probabilities contain NaN (NaN logits: check the dtype and the weights)") from None
        raise


def speculative_accept(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leviathan et al. Algorithm 1, vectorized over a leading batch of independent draws.

    Args:
        draft_tokens: ``[B, n]`` tokens sampled from ``draft_probs``.
        draft_probs: ``[B, n, V]`` q_1..q_n, the distributions the draft tokens were sampled from.
        target_probs: ``[B, n + 1, V]`` p_1..p_{n+1}, the verifier's distributions at the same positions plus one.
        generator: source of the uniform draws and of the final sample.

    Returns:
        ``num_accepted [B]`` (the first rejected index, or n), ``next_token [B]`` (sampled from
        norm(max(0, p - q)) at the first rejection, or from p_{n+1} when all n were accepted), and
        ``accept_probs [B, n]`` = min(1, p(x_i) / q(x_i)).
    """
    batch, n = draft_tokens.shape
    p_x = target_probs[:, :n].gather(-1, draft_tokens.unsqueeze(-1)).squeeze(-1)  # [B, n]
    q_x = draft_probs.gather(-1, draft_tokens.unsqueeze(-1)).squeeze(-1)  # [B, n]
    accept_probs = (p_x / q_x).clamp(max=1.0)
    r = torch.rand(batch, n, generator=generator, device=draft_tokens.device)
    accepted = r < accept_probs  # r ~ U[0, 1): accept with probability min(1, p/q)
    num_accepted = accepted.long().cumprod(dim=-1).sum(dim=-1)  # length of the accepted prefix

    # At the first rejection sample from norm(max(0, p - q)); after a full acceptance q is "0", giving p_{n+1}.
    rows = torch.arange(batch, device=draft_tokens.device)
    padded_q = torch.cat([draft_probs, draft_probs.new_zeros(batch, 1, draft_probs.shape[-1])], dim=1)  # [B, n+1, V]
    residual = (target_probs[rows, num_accepted] - padded_q[rows, num_accepted]).clamp(min=0.0)
    mass = residual.sum(-1, keepdim=True)
    # p == q at a rejected position has probability 0; guard against float round-off all the same.
    residual = torch.where(mass > 0, residual / mass.clamp(min=1e-30), target_probs[rows, num_accepted])
    next_token = sample(residual, generator)
    return num_accepted, next_token, accept_probs


def greedy_accept(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> tuple[int, int, list[float]]:
    """Temperature 0: accept while the draft token is the verifier's argmax; then emit the verifier's argmax.

    Args:
        draft_tokens: ``[n]``.
        target_logits: ``[n + 1, V]`` verifier logits at the draft positions plus one.

    Returns:
        ``(num_accepted, next_token, accept_probs)`` with accept_probs 1.0 / 0.0 per draft position.
    """
    num_accepted, next_token, accept_probs = greedy_verdict(draft_tokens, target_logits)
    return int(num_accepted), int(next_token), accept_probs.tolist()


def greedy_verdict(draft_tokens: torch.Tensor, target_logits: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`greedy_accept` left on the device (no host read): ``num_accepted []``, ``next_token []``, ``accept_probs [n]``."""
    n = draft_tokens.shape[0]
    target_tokens = target_logits.argmax(dim=-1)  # [n + 1]
    matches = draft_tokens == target_tokens[:n]
    num_accepted = matches.long().cumprod(dim=0).sum()
    return num_accepted, target_tokens[num_accepted], matches.float()
