"""Raw per-round facts of a generation, and their JSONL form.

A generation is a list of rounds. One round = one verifier call: the drafter proposed `drafted` tokens
(zero for autoregressive decoding), the verifier accepted the first `accepted` of them and added one token
of its own (the correction at the first rejection, or the bonus token when all were accepted). Every
metric in :mod:`entspec.metrics` is derived from these records alone, so analysis never needs the models.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

SCHEMA_VERSION = 1
log = logging.getLogger(__name__)


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


class DamagedRowError(ValueError):
    """A JSONL line other than a torn last line is not a JSON object; the message names the file and line."""


def read_jsonl(path: str | Path, *, skip_damaged: bool = False,
               damaged: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file, in order.

    Only a torn *last* line (no trailing newline: its writer was killed mid-write) is skipped silently.
    Any other line that is not a JSON object raises :class:`DamagedRowError` naming the file and line, or,
    with ``skip_damaged=True``, is skipped, its line number appended to ``damaged`` and logged.
    """
    path = Path(path)
    skipped: list[int] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            row = _parse_row(raw)
            if row is not None:
                yield row
            elif raw.endswith(b"\n"):  # a whole line that is not a row: damage, never a torn write
                if not skip_damaged:
                    raise DamagedRowError(f"{path} line {lineno}: damaged row (not a JSON object); fix or "
                                          "delete that line")
                skipped.append(lineno)
    if skipped:
        log.warning("%s: skipped %d damaged row(s) at line(s) %s", path, len(skipped),
                    ", ".join(map(str, skipped)))
        if damaged is not None:
            damaged.extend(skipped)


def _parse_row(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on one line, or None when the line is not one."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) else None


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
