"""A batch of sequences on one transformers ``DynamicCache``: ragged rows, per-row rollback, no recomputation.

Layout: the cache is one ``[B, heads, P, dim]`` tensor per layer and layer kind, and ``mask [B, P]`` says which
of the P physical positions are part of each row's committed sequence. Prompts of different lengths are
left-padded; each forward appends one segment of W positions to every row (a row with fewer tokens pads
its segment); rolling a row back turns its rejected positions into *holes* (mask 0) instead of moving
anything. Every forward passes the mask (so no row attends to a hole or another row's padding) and per-row
position ids (a row's i-th committed token is at position i whatever the holes before it), so each row sees
exactly what it would see alone. Positions that are holes in every row at the end are cropped with
``DynamicCache.crop``; when holes make the cache longer than the longest row by `compact_slack` positions,
`compact` gathers each row's committed positions to the right (one copy of the cache). Finished rows leave
the batch with ``DynamicCache.batch_select_indices``::

    row 0   p p p p | a a a a | x . . | y y . |        p: left padding of a shorter prompt
    row 1   b b b b | b b b b | x x x | y . . |        .: a hole (rejected draft token or segment padding)
            prefill              round 1  round 2       x, y: committed tokens of later rounds
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

from .kv import cache_kwarg, new_cache


class BatchCache:
    """A causal LM and a batched KV cache of ``len(self.lengths)`` rows (see the module docstring).

    ``lengths[i]`` is how many tokens of row i's committed sequence the cache holds (its non-hole positions).
    """

    def __init__(self, model: PreTrainedModel, compact_slack: int = 32) -> None:
        if any(getattr(layer, "is_sliding", False) for layer in getattr(new_cache(model), "layers", [])):
            raise ValueError(f"{type(model).__name__}: batched decoding does not support sliding-window "
                             "attention layers yet (decode such models one sequence at a time)")
        self.model = model
        self.compact_slack = compact_slack
        self._cache_kwarg = cache_kwarg(model)
        self.cache: DynamicCache = new_cache(model)
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=model.device)
        self.lengths: list[int] = []
        self.compactions = 0

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset(self, rows: int) -> None:
        self.cache = new_cache(self.model)
        self.mask = torch.zeros(rows, 0, dtype=torch.long, device=self.device)
        self.lengths = [0] * rows
        self.compactions = 0

    @torch.inference_mode()
    def feed(self, segments: list[list[int]], align: str, pad_id: int = 0,
             logits_to_keep: int | None = None) -> torch.Tensor:
        """Append one segment per row (``segments[i]`` may be empty) and return the logits ``[B, k, V]`` of the
        last ``k = logits_to_keep`` (default: all W) appended positions. ``align="left"`` pads each segment at its start (so every row's last token is
        at column W-1: drafting, prefill), ``"right"`` at its end (token j of every row at column j: verify)."""
        rows, width = len(segments), max(len(s) for s in segments)
        ids = torch.full((rows, width), pad_id, dtype=torch.long)
        seg_mask = torch.zeros(rows, width, dtype=torch.long)
        positions = torch.zeros(rows, width, dtype=torch.long)
        for i, seg in enumerate(segments):
            start = width - len(seg) if align == "left" else 0
            ids[i, start:start + len(seg)] = torch.tensor(seg, dtype=torch.long)
            seg_mask[i, start:start + len(seg)] = 1
            positions[i, start:start + len(seg)] = torch.arange(self.lengths[i], self.lengths[i] + len(seg))
            positions[i, :start] = self.lengths[i]  # pads: any valid position (masked as keys, outputs unused)
            positions[i, start + len(seg):] = self.lengths[i] + len(seg)
            self.lengths[i] += len(seg)
        device = self.device
        self.mask = torch.cat([self.mask, seg_mask.to(device)], dim=1)
        out = self.model(input_ids=ids.to(device), attention_mask=self.mask, position_ids=positions.to(device),
                         use_cache=True, logits_to_keep=logits_to_keep or width, **{self._cache_kwarg: self.cache})
        return out.logits

    def rollback(self, lengths: list[int]) -> None:
        """Keep the first ``lengths[i]`` committed tokens of each row: later ones become holes; positions that
        are holes in every row at the end are cropped, and the cache is compacted when holes pile up."""
        self.lengths = [min(a, b) for a, b in zip(lengths, self.lengths)]
        keep = torch.tensor(self.lengths, device=self.device)
        self.mask = self.mask * (self.mask.cumsum(dim=1) <= keep[:, None])
        used = self.mask.any(dim=0).nonzero()
        physical = int(used.max()) + 1 if len(used) else 0
        if physical < self.mask.shape[1]:
            self.cache.crop(physical - self.mask.shape[1])
            self.mask = self.mask[:, :physical]
        if self.mask.shape[1] - max(self.lengths, default=0) > self.compact_slack:
            self.compact()

    def compact(self) -> None:
        """Gather every row's committed positions to the right end (left padding only): one copy of the cache."""
        rows, physical = self.mask.shape
        width = max(self.lengths, default=0)
        # Stable sort puts holes (0) first and committed positions (1) after, each in their original order.
        order = torch.sort(self.mask, dim=1, stable=True).indices[:, physical - width:]  # [B, width]
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            layer.keys, layer.values = (_gather_positions(t, order) for t in (layer.keys, layer.values))
        self.mask = self.mask.gather(1, order)
        self.compactions += 1

    def select(self, rows: list[int]) -> None:
        """Keep only these rows (finished ones leave the batch)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        if self.cache.get_seq_length() > 0:
            self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.lengths = [self.lengths[i] for i in rows]


def _gather_positions(states: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``states [B, heads, P, dim]`` at positions ``order [B, P']`` of each row -> ``[B, heads, P', dim]``."""
    return states.gather(2, order[:, None, :, None].expand(-1, states.shape[1], -1, states.shape[-1]))
