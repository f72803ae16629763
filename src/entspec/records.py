"""Raw per-round facts of a generation, and their JSONL form.

A generation is a list of rounds. One round = one verifier call: the drafter proposed `drafted` tokens
(zero for autoregressive decoding), the verifier accepted the first `accepted` of them and added one token
of its own (the correction at the first rejection, or the bonus token when all were accepted). Every
metric in :mod:`entspec.metrics` is derived from these records alone, so analysis never needs the models.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

SCHEMA_VERSION = 1


@dataclass
class RoundRecord:
    """What happened in one draft-then-verify round.

    Lists with one entry per drafted token have length ``drafted``.
    """

    drafted: int  # tokens proposed by the drafter this round
    accepted: int  # leading draft tokens the verifier accepted (0..drafted)
    emitted: int  # tokens appended to the output (accepted + 1, fewer only when cut by EOS or the budget)
    entropies: list[float]  # configured entropy type of each drafted token's (processed) draft distribution
    stop_reason: str  # why drafting stopped: "criterion", "max_draft_len", "max_new_tokens", "eos", "none"
    draft_time_s: float  # wall time of the drafter's forwards (and sampling) this round
    verify_time_s: float  # wall time of the verifier's forward and the acceptance step
    round_time_s: float  # wall time of the whole round; the rest is framework overhead
    draft_token_probs: list[float] = field(default_factory=list)  # q(x_i): drafter prob of each drafted token
    accept_probs: list[float] = field(default_factory=list)  # min(1, p(x_i)/q(x_i)) per drafted token (greedy: 1/0)
    entropies_by_type: dict[str, list[float]] = field(default_factory=dict)  # every entropy type, per drafted token
    threshold: float | None = None  # the threshold the rule drafted this round with (rules that have one)


@dataclass
class GenerationResult:
    """Output of one ``generate`` call: the new tokens and the trace that produced them."""

    new_tokens: list[int]
    rounds: list[RoundRecord]
    prompt_len: int
    wall_time_s: float  # from the call to the last token, prefill included
    prefill_time_s: float  # prompt forwards of drafter and verifier
    time_to_first_token_s: float  # from the call to the end of the first round
    finish_reason: str  # "eos", "length" (max_new_tokens) or "empty" (max_new_tokens == 0)
    method: str = "speculative"  # "speculative", "autoregressive", "hf_generate" or "hf_assisted"
    # call counts for generations without a round trace (Hugging Face baselines): verifier_calls, drafter_calls
    counters: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationResult":
        data = dict(data)
        data["rounds"] = [RoundRecord(**r) for r in data["rounds"]]
        return cls(**data)


def make_row(result: GenerationResult, *, config: dict[str, Any], **keys: Any) -> dict[str, Any]:
    """One JSONL row: schema version, the identifying keys (method, prompt id, seed, ...), config, trace."""
    return {"schema_version": SCHEMA_VERSION, **keys, "config": config, "result": result.to_dict()}


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one row and flush it to disk, so a killed process loses at most the row in flight."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (the process was killed mid-write) is skipped."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # only the unterminated final line of a killed writer can be torn


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    with Path(path).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
