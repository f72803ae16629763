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


FILLER = -2  # the owner of a filler token while its forward runs (a hole is -1)


def bucket(tokens: int) -> int:
    """How many tokens a packed forward of ``tokens`` tokens runs: 1, 4, 8, 16, then the next multiple of 8.

    CPU matrix products are far from monotone in their row count: on the AVX2 EPYC of docs/results.md the 1.5B
    verifier's forward (float32, weight-major Linear) took 0.70 s over 16 tokens and 1.39 s over 15, 0.92 s over 12
    and 0.99 s over 32 (docs/logs/2026-12-01-packed.md); the padded layout of 4 rows always runs a multiple of 4.
    The filler tokens cost a little where the count was already fast and save up to half where it was not."""
    if tokens <= 1:
        return tokens
    for size in (4, 8, 16):
        if tokens <= size:
            return size
    return -(-tokens // 8) * 8


class PackedBatchCache(BatchCache):
    """A batch of sequences packed into one sequence of a transformers ``DynamicCache``: no padding anywhere.

    Layout: one ``[1, heads, K, dim]`` tensor per layer and ``owner [K]``, the row each physical position belongs to
    (-1: a hole). A forward appends every row's segment back to back (a row with an empty segment adds nothing and
    costs nothing) with a 4D attention mask under which a token sees only its own row's committed positions and
    its own earlier tokens, and per-token position ids (a row's i-th committed token is at position i). So a
    verifier call costs the tokens the rows verify, not rows x the longest draft, and a drafter step runs only the
    rows still drafting: a row that stops early saves its share of both. The price: every query's attention reads
    the keys of all rows (masked), a cost that grows with B x the cached length; for the short queries of
    decoding it is small beside the weights, which every forward reads once whatever the batch.

    Rollback turns rejected positions into holes; trailing holes are cropped (``DynamicCache.crop``); when the
    holes outnumber ``compact_slack`` per row, `compact` gathers the committed positions (one copy of the cache).
    Finished rows leave by becoming holes. The interface is `BatchCache`'s; `feed` returns the same
    ``[B, k, V]`` logits (zeros where a row has no token)::

        owner   0 0 0 0 1 1 | 0 . . 1 1 | 0 0 1 . |       .: a hole (-1); a row's segments are contiguous
                prefill       round 1     round 2
    """

    BUCKETED = True  # run `bucket` of the tokens (False: the exact count; scripts/packed_costs.py measures both)
    # A feed of more tokens than this (a prefill) runs row by row: a packed mask over several long prompts costs
    # (B x T)^2 entries and attention over every row's keys, where rows one at a time cost B x T^2.
    ROW_BY_ROW_TOKENS = 256

    def __init__(self, model: PreTrainedModel, compact_slack: int = 32) -> None:
        super().__init__(model, compact_slack)  # the model checks, the cache and the row lengths
        self.owner = torch.zeros(0, dtype=torch.long, device=model.device)

    def reset(self, rows: int) -> None:
        super().reset(rows)
        self.owner = torch.zeros(0, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def feed(self, segments: list[list[int]], align: str, pad_id: int = 0,
             logits_to_keep: int | None = None) -> torch.Tensor:
        """Append one segment per row (``segments[i]`` may be empty) and return logits ``[B, k, V]`` laid out as
        `BatchCache.feed` lays them out: ``align="left"``, each row's last token at column W-1; ``"right"``, token j
        at column j (W: the longest segment; ``k = logits_to_keep``, default W: the last k columns)."""
        width = max(len(s) for s in segments)
        keep = logits_to_keep or width
        if sum(map(len, segments)) <= self.ROW_BY_ROW_TOKENS or sum(1 for s in segments if s) == 1:
            return self._forward(segments, align, width, keep)
        logits = None
        for i, seg in enumerate(segments):
            if seg:
                part = self._forward([seg if j == i else [] for j in range(len(segments))], align, width, keep)
                logits = part if logits is None else logits + part  # each part is zero outside its row
        return logits

    def _forward(self, segments: list[list[int]], align: str, width: int, keep: int) -> torch.Tensor:
        """`feed`'s forward: every segment back to back, then filler tokens up to `bucket` of the count (each sees
        only itself; their positions are cropped right after), columns laid out for a batch ``width`` wide."""
        ids, owner, positions, rows, cols = [], [], [], [], []
        for i, seg in enumerate(segments):
            start = width - len(seg) if align == "left" else 0
            ids += seg
            owner += [i] * len(seg)
            positions += range(self.lengths[i], self.lengths[i] + len(seg))
            rows += [i] * len(seg)
            cols += range(start, start + len(seg))
            self.lengths[i] += len(seg)
        real = len(ids)
        total = bucket(real) if self.BUCKETED else real
        device = self.device
        old = self.owner.shape[0]
        new_owner = torch.tensor(owner + [FILLER] * (total - real), dtype=torch.long, device=device)
        keys_owner = torch.cat([self.owner, new_owner])
        index = torch.arange(old + total, device=device)
        queries = index[old:]
        sees = (keys_owner[None, :] == new_owner[:, None]) & (index[None, :] <= queries[:, None])
        sees[real:] = index[None, :] == queries[real:, None]  # a filler sees itself alone
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(sees.shape, dtype=dtype, device=device).masked_fill_(~sees, torch.finfo(dtype).min)
        kept = [n for n, c in enumerate(cols) if c >= width - keep]
        out = self.model(input_ids=torch.tensor([ids + [0] * (total - real)], dtype=torch.long, device=device),
                         attention_mask=mask[None, None],
                         position_ids=torch.tensor([positions + [0] * (total - real)], dtype=torch.long, device=device),
                         use_cache=True, logits_to_keep=torch.tensor(kept, dtype=torch.long, device=device),
                         **{self._cache_kwarg: self.cache})
        if total > real:
            self.cache.crop(real - total)
        self.owner = keys_owner[:old + real]
        logits = out.logits.new_zeros(len(segments), keep, out.logits.shape[-1])
        where = torch.tensor([rows[n] for n in kept], device=device), torch.tensor(
            [cols[n] - (width - keep) for n in kept], device=device)
        logits[where] = out.logits[0]
        return logits

    @torch.inference_mode()
    def rollback(self, lengths: list[int]) -> None:
        """Keep the first ``lengths[i]`` committed tokens of each row: later ones become holes; trailing holes are
        cropped, and the cache is compacted when holes pile up."""
        self.lengths = [min(a, b) for a, b in zip(lengths, self.lengths)]
        for i, n in enumerate(self.lengths):
            mine = (self.owner == i).nonzero()[:, 0]
            self.owner[mine[n:]] = -1
        self._tidy()

    def _tidy(self) -> None:
        used = (self.owner >= 0).nonzero()
        physical = int(used.max()) + 1 if len(used) else 0
        if physical < self.owner.shape[0]:
            self.cache.crop(physical - self.owner.shape[0])
            self.owner = self.owner[:physical]
        if int((self.owner < 0).sum()) > self.compact_slack * max(len(self.lengths), 1):
            self.compact()

    def compact(self) -> None:
        """Drop every hole: one copy of the cache."""
        order = (self.owner >= 0).nonzero()[:, 0]
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            layer.keys, layer.values = (t.index_select(2, order) for t in (layer.keys, layer.values))
        self.owner = self.owner[order]
        self.compactions += 1

    @torch.inference_mode()
    def select(self, rows: list[int]) -> None:
        """Keep only these rows (finished ones leave the batch: their positions become holes)."""
        renumber = torch.full((len(self.lengths) + 1,), -1, dtype=torch.long, device=self.device)
        renumber[torch.tensor(rows, dtype=torch.long, device=self.device)] = torch.arange(len(rows), device=self.device)
        self.owner = renumber[self.owner]  # a hole (-1) reads the last entry, -1
        self.lengths = [self.lengths[i] for i in rows]
        self._tidy()
