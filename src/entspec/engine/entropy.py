"""Entropies of next-token distributions: Shannon, Rényi of order alpha, and top-k.

All functions take logits ``[..., V]`` of any float dtype, compute in float32, and treat ``-inf`` logits
(tokens masked by top-k / top-p) as probability zero. Results are in nats unless ``unit="bits"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ENTROPY_TYPES = ("shannon", "renyi", "topk")


def _log_probs(logits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.log_softmax(logits.to(dtype), dim=-1)


def _checked(h: torch.Tensor, check: bool = True) -> torch.Tensor:
    """NaN logits propagate to the entropy: checking the result is one look instead of a pass over V.

    ``check=False`` skips the look (a device -> host read): the drafter's hot path checks NaN once per round.
    """
    if check and torch.isnan(h).any():
        raise ValueError("entropy: logits contain NaN")
    return h


def shannon_entropy(logits: torch.Tensor, check: bool = True) -> torch.Tensor:
    """H = -sum_x p(x) log p(x), in nats; masked (-inf) tokens contribute 0."""
    log_p = _log_probs(logits)
    p = log_p.exp()
    return _checked(-(p * log_p.masked_fill(p == 0, 0.0)).sum(-1), check)


def renyi_entropy(logits: torch.Tensor, alpha: float, check: bool = True) -> torch.Tensor:
    """H_alpha = log(sum_x p(x)^alpha) / (1 - alpha), in nats.

    ``alpha -> 1`` is Shannon entropy; ``alpha = inf`` is min-entropy ``-log max_x p(x)``.
    Computed as a logsumexp of ``alpha * log p`` in float64 for stability.
    """
    if alpha < 0:
        raise ValueError(f"renyi alpha must be >= 0, got {alpha}")
    if math.isinf(alpha):
        return _checked(-_log_probs(logits).max(dim=-1).values, check)
    if abs(alpha - 1.0) < 1e-6:
        return shannon_entropy(logits, check)
    # float64: near alpha = 1 the numerator and 1 - alpha both vanish and float32 cancels badly.
    log_p = _log_probs(logits, torch.float64)
    if alpha == 0:  # Hartley entropy: log of the support size (a count: NaN would not propagate)
        _checked(log_p, check)
        return torch.log((log_p > -math.inf).sum(-1).float())
    return _checked((torch.logsumexp(alpha * log_p, dim=-1) / (1.0 - alpha)).float(), check)


def topk_entropy(logits: torch.Tensor, k: int, check: bool = True) -> torch.Tensor:
    """Shannon entropy of the k most probable tokens, renormalized among themselves."""
    if k < 1:
        raise ValueError(f"top-k entropy needs k >= 1, got {k}")
    k = min(k, logits.shape[-1])
    top = logits.float().topk(k, dim=-1).values
    return shannon_entropy(top, check)


@dataclass(frozen=True)
class EntropyComputer:
    """Computes one configured entropy type (and, for the trace, all of them) from logits.

    Args:
        entropy_type: ``"shannon"``, ``"renyi"`` or ``"topk"``.
        renyi_alpha: order of the Rényi entropy (``float("inf")`` for min-entropy).
        topk: k of the top-k entropy.
        unit: ``"nats"`` or ``"bits"``.
    """

    entropy_type: str = "shannon"
    renyi_alpha: float = 2.0
    topk: int = 10
    unit: str = "nats"

    def __post_init__(self) -> None:
        if self.entropy_type not in ENTROPY_TYPES:
            raise ValueError(f"entropy_type must be one of {ENTROPY_TYPES}, got {self.entropy_type!r}")
        if self.unit not in ("nats", "bits"):
            raise ValueError(f"entropy unit must be 'nats' or 'bits', got {self.unit!r}")

    def __call__(self, logits: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Entropy of the configured type, shape ``logits.shape[:-1]``; ``check=False``: no NaN look (no host read)."""
        return self.compute(logits, self.entropy_type, check)

    def compute(self, logits: torch.Tensor, entropy_type: str, check: bool = True) -> torch.Tensor:
        if entropy_type == "shannon":
            h = shannon_entropy(logits, check)
        elif entropy_type == "renyi":
            h = renyi_entropy(logits, self.renyi_alpha, check)
        elif entropy_type == "topk":
            h = topk_entropy(logits, self.topk, check)
        else:
            raise ValueError(f"entropy_type must be one of {ENTROPY_TYPES}, got {entropy_type!r}")
        return h / math.log(2) if self.unit == "bits" else h

    def all_types(self, logits: torch.Tensor, check: bool = True) -> dict[str, torch.Tensor]:
        """Every entropy type of the same logits (for the per-token trace)."""
        return {t: self.compute(logits, t, check) for t in ENTROPY_TYPES}
