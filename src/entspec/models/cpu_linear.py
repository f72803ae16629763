"""Few-token forwards on CPU: the Linear product with the weight as the left operand.

``nn.Linear`` computes ``x @ W.T`` (a GEMM with the few-row activation on the left). On the project's 2-core
AMD EPYC (AVX2, PyTorch's MKL build), that call costs almost as much per row as a separate forward once it has
more than one row: the 1.5B verifier's 8960x1536 fp32 MLP weight takes 5.2 ms for 1 row, 16 ms for 4 and 21 ms
for 16. The same product written ``(W @ x.T).T`` takes 5.3, 6.0 and 11.9 ms: 1.2-3.7x faster from 2 to 64 rows,
within 10% either way at 1 row, converging from 256 rows on (``scripts/linear_layout.py``,
``docs/logs/2026-11-30-cpu-linear.md``). One row keeps PyTorch's product: side by side once, the 0.5B drafter's
one-row step took 0.21 s weight-major and 0.18 s so (``docs/logs/2026-11-30-deferred-prefill.md``). A verifier
forward over a few drafted tokens, and every batched decoding step, is exactly this few-row product, so the layout
decides whether speculation can pay on such a CPU at all: the real 1.5B verifier's forward over 4 new tokens (one
row, 128 cached) took 1.89 s against 0.58 s for one token, and 0.77 s against 0.61 s with the weight on the left.

The result is the same product up to float rounding (a different summation order), so it is a property of
the model, applied to every method alike: the Hugging Face baselines in a run use the same model objects.
``cpu_linear: auto`` (the default) uses it for float32 models on CPU, where it was measured; ``torch`` keeps
``nn.Linear`` as PyTorch runs it.
"""

from __future__ import annotations

import torch
from torch import nn

CPU_LINEAR = ("auto", "weight-major", "torch")


class WeightMajorLinear(nn.Linear):
    """``nn.Linear`` whose product over two or more rows is computed as ``(W @ x.T).T`` (one row keeps PyTorch's
    product, the faster one there); parameters and state dict unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] == 1:
            return super().forward(x)
        y = torch.matmul(self.weight, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def check_cpu_linear(mode: str) -> None:
    """A one-line ``ValueError`` naming the field for a mode that is not one of `CPU_LINEAR`."""
    if mode not in CPU_LINEAR:
        raise ValueError(f"cpu_linear must be one of {', '.join(CPU_LINEAR)}, got {mode!r}")


def use_cpu_linear(model: nn.Module, mode: str = "auto") -> int:
    """Give ``model``'s plain ``nn.Linear`` layers the weight-major product; returns how many were changed.

    ``mode``: ``"auto"`` (float32 weights on CPU only), ``"weight-major"`` (any CPU model) or ``"torch"``
    (nothing changes). Quantized or other Linear subclasses are left alone; a model on another device is left
    alone whatever the mode. In place: the modules keep their parameters (tied weights stay tied).
    """
    check_cpu_linear(mode)
    first = next(model.parameters(), None)
    if mode == "torch" or first is None or first.device.type != "cpu":
        return 0
    if mode == "auto" and first.dtype != torch.float32:
        return 0
    changed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = WeightMajorLinear
            changed += 1
    return changed
