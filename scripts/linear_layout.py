"""What one Linear product of a few rows costs in each layout on this CPU (entspec.models.cpu_linear).

For the Qwen2.5-1.5B verifier's three weight shapes that dominate a forward (MLP up/gate, MLP down, LM head), the
milliseconds of ``x @ W.T`` as ``nn.Linear`` runs it (``torch``) and of ``(W @ x.T).T`` (``weight-major``), for x
of M rows, float32. Median of a few calls after warm-up.

    .venv/bin/python scripts/linear_layout.py --threads 2 --rows 1,2,4,8,16,64,256,1024
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch
from torch import nn

from entspec.models.cpu_linear import WeightMajorLinear

SHAPES = {"mlp up/gate 8960x1536": (1536, 8960), "mlp down 1536x8960": (8960, 1536), "lm head 151936x1536": (1536, 151936)}


def milliseconds(layer: nn.Module, rows: int, reps: int) -> float:
    x = torch.randn(rows, layer.in_features)
    with torch.no_grad():
        layer(x)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            layer(x)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,4,8,16,64,256,1024")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = []
    for name, (n_in, n_out) in SHAPES.items():
        layer = nn.Linear(n_in, n_out, bias=False)
        for m in (int(r) for r in args.rows.split(",")):
            layer.__class__ = nn.Linear
            torch_ms = milliseconds(layer, m, args.reps)
            layer.__class__ = WeightMajorLinear
            table.append({"weight": name, "rows": m, "torch_ms": torch_ms,
                          "weight_major_ms": milliseconds(layer, m, args.reps)})
    frame = pd.DataFrame(table)
    frame["ratio"] = frame.torch_ms / frame.weight_major_ms
    print(f"float32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(frame.to_string(index=False, float_format="%.2f"))


if __name__ == "__main__":
    main()
