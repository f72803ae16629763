"""A cheaper drafter on CPU: int8 weights for its Linear layers (the verifier is never touched).

Speculative decoding stays lossless whatever the drafter is: greedy output is the verifier's argmax chain,
and speculative sampling corrects toward the verifier's p using q exactly as the quantized drafter produced
it. Quantizing only the drafter therefore changes speed and acceptance, never the output distribution.

Methods (``drafter_quantization``):

- ``"int8-weight-only"``: every ``nn.Linear`` (the LM head included) keeps int8 weights with one scale per
  output channel; activations stay in the model's dtype (bfloat16 is the fast one) and the matmul is
  ``torch.ops.aten._weight_int8pack_mm``, the core kernel behind torchao's and gpt-fast's int8 weight-only
  path. Plain PyTorch, nothing deprecated, works on a bf16 model as loaded.
- ``"int8-dynamic"``: PyTorch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``): int8
  weights and per-call int8 activations through fbgemm / oneDNN, fp32 everywhere else. CPU only; the
  ``torch.ao.quantization`` eager API is deprecated in favour of torchao and warns when used.
- ``"int8"``: the method this module recommends for the drafter's dtype (`int8_method`): weight-only for a
  bf16/fp16 drafter (on a CPU with fast bf16 it did half the work of a bf16 step and kept the drafter's
  distribution, docs/logs/2026-11-27-int8-drafter.md), dynamic for a float32 drafter on CPU (on an AVX2-only CPU
  the weight-only kernel with fp32 activations was 2.1x slower than the fp32 drafter at 1 row and 6.8x at 4, while
  dynamic was 3.1x and 3.3x faster: docs/logs/2026-11-30-int8-dynamic.md).
- ``"none"``: the drafter as loaded.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

QUANTIZATIONS = ("none", "int8", "int8-weight-only", "int8-dynamic")


def int8_method(dtype: torch.dtype, device: torch.device) -> str:
    """What ``"int8"`` means for a drafter of ``dtype`` on ``device``: ``"int8-dynamic"`` for float32 on CPU (fbgemm's
    int8 kernels), else ``"int8-weight-only"`` (the kernel that is fast with bf16 / fp16 activations)."""
    return "int8-dynamic" if dtype == torch.float32 and device.type == "cpu" else "int8-weight-only"


class Int8WeightOnlyLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` stored as int8 ``[out, in]`` and per-output-channel scales ``[out]``.

    Symmetric quantization: ``W ~ scale[:, None] * W_int8`` with ``scale = max|W_row| / 127``.
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in]`` -> ``[..., out]`` in the scales' dtype."""
        flat = x.reshape(-1, self.in_features).to(self.scales.dtype)
        y = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scales)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def scales_per_call(model: nn.Module) -> bool:
    """Whether one token's outputs depend on the other tokens of the same forward: dynamic quantization takes one
    activation scale per call, over every token (and row) in it. Teacher-forcing such a drafter over a whole
    output in one forward gives other distributions than the engine's one-token steps (measured on the real int8
    pair at T 1.0: acceptance β 0.43 against 0.53), so traces feed it one token per forward
    (`entspec.replay.trace.teacher_forced`)."""
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


def quantize_drafter(model: nn.Module, method: str = "int8") -> nn.Module:
    """Return ``model`` with int8 Linear layers by ``method`` (one of `QUANTIZATIONS`); ``"none"``: as is.

    Quantizes in place where it can (the weight-only swap); dynamic quantization returns a converted copy
    in float32. The model should be in eval mode; the result is for inference only.
    """
    if method not in QUANTIZATIONS:
        raise ValueError(f"drafter_quantization must be one of {', '.join(QUANTIZATIONS)}, got {method!r}")
    if method == "none":
        return model
    device = next(model.parameters()).device
    method = int8_method(next(model.parameters()).dtype, device) if method == "int8" else method
    if method == "int8-dynamic":
        if device.type != "cpu":
            raise ValueError(f"drafter_quantization int8-dynamic runs on CPU only (the drafter is on {device})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the eager torch.ao API announces its deprecation on every call
            return torch.ao.quantization.quantize_dynamic(model.float(), {nn.Linear}, dtype=torch.qint8)
    dtype = next(model.parameters()).dtype
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8WeightOnlyLinear(child, dtype).to(device))
    # A tied LM head is now an independent int8 copy; keep the input embedding as it was.
    if getattr(model.config, "tie_word_embeddings", False):
        model.config.tie_word_embeddings = False
    return model
