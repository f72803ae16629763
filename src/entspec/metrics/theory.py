"""Closed forms of Leviathan et al. 2023 (arXiv 2211.17192), Section 3, for a fixed draft length γ.

α is the expected per-token acceptance, α = E[β] with β = Σ_x min(p(x), q(x)) = 1 − TV(p, q)
(p: target/verifier distribution, q: draft distribution). c = T_draft_step / T_verify_call.

* expected tokens per verifier call  E[τ] = (1 − α^(γ+1)) / (1 − α)            (γ + 1 at α = 1)
* expected wall-time speedup               (1 − α^(γ+1)) / ((1 − α)(γc + 1))
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["expected_tokens_per_call", "expected_speedup", "optimal_gamma", "acceptance_from_distributions"]


def expected_tokens_per_call(alpha: float | np.ndarray, gamma: int | np.ndarray) -> float | np.ndarray:
    """E[tokens per verifier call] = (1 − α^(γ+1)) / (1 − α) = Σ_{i=0..γ} α^i; γ + 1 when α = 1.

    Computed as the geometric sum, which is exact at α = 1 and stable near it. Broadcasts over arrays.
    """
    alpha = np.asarray(alpha, dtype=float)
    gamma = np.asarray(gamma)
    if np.any((alpha < 0) | (alpha > 1)):
        raise ValueError("alpha must lie in [0, 1]")
    if np.any(gamma < 0):
        raise ValueError("gamma must be >= 0")
    near_one = np.isclose(alpha, 1.0, rtol=0.0, atol=1e-12)
    safe = np.where(near_one, 0.5, alpha)  # placeholder where the closed form would divide by zero
    closed = (1.0 - safe ** (gamma + 1)) / (1.0 - safe)
    out = np.where(near_one, gamma + 1.0, closed)
    return float(out) if out.ndim == 0 else out


def expected_speedup(alpha: float | np.ndarray, gamma: int | np.ndarray, c: float) -> float | np.ndarray:
    """Expected wall-time speedup over autoregressive decoding: (1 − α^(γ+1)) / ((1 − α)(γc + 1))."""
    return expected_tokens_per_call(alpha, gamma) / (np.asarray(gamma) * c + 1.0)


def optimal_gamma(alpha: float, c: float, max_gamma: int = 64) -> int:
    """The γ in 0..max_gamma maximising :func:`expected_speedup` (the smallest one on ties)."""
    gammas = np.arange(max_gamma + 1)
    return int(np.argmax(expected_speedup(alpha, gammas, c)))


def acceptance_from_distributions(p: Any, q: Any) -> Any:
    """β = Σ_x min(p(x), q(x)) over the last axis, for torch tensors or numpy arrays (same type back)."""
    try:
        import torch

        if isinstance(p, torch.Tensor) or isinstance(q, torch.Tensor):
            return torch.minimum(torch.as_tensor(p), torch.as_tensor(q)).sum(dim=-1)
    except ImportError:  # torch is a dependency, but numpy use needs nothing more
        pass
    return np.minimum(np.asarray(p, dtype=float), np.asarray(q, dtype=float)).sum(axis=-1)
