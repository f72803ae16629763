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

SCHEMA_VERSION = 2  # 2: ResultRow (method identity as fields, params); 1 is read via upgrade_row
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
    verify_width: int | None = None  # batched decoding: positions this row took in the verifier call (padded
    # layout: 1 + the longest draft of the batch that round, the ones past its own 1 + drafted are padding; packed:
    # 1 + drafted)


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
    # batched decoding: {"size": rows decoded together, "row": this sequence's index}; None when run alone
    batch: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationResult":
        data = dict(data)
        data["rounds"] = [RoundRecord(**r) for r in data["rounds"]]
        return cls(**data)


# The fields of a ResultRow that identify it in a table (ResultRow.columns; unit_key only when set).
KEY_FIELDS = ("unit_key", "method", "method_kind", "strategy", "prompt_id", "category", "seed")


@dataclass
class ResultRow:
    """One row of ``results.jsonl``: which unit ran (method identity, prompt, seed), its config, its trace.

    The JSON form (:meth:`to_json`) is one flat object; ``pandas.read_json(path, lines=True,
    precise_float=True)`` reads a results file into one column per key, and ``from_json`` takes its records::

        {"schema_version": 2, "unit_key": ..., "method": ..., "method_kind": ..., "strategy": ...,
         "params": {...}, "prompt_id": ..., "category": ..., "seed": ..., ["worker": {...}], ...,
         "config": {...}, "result": {...}}

    Keys a row carries besides these (hand-written rows) are kept in ``extra`` and written back at the top
    level. Rows of schema 1 are read through :func:`upgrade_row`.
    """

    method: str  # the method id (MethodSpec.id), e.g. "fixed[max_draft_len=4]", "hf_assisted[default]"
    method_kind: str  # entspec, autoregressive, hf_generate or hf_assisted (entspec.experiment.methods.KINDS)
    strategy: str  # the stopping rule of an entspec method, else the kind
    prompt_id: str
    category: str
    seed: int
    config: dict[str, Any]  # everything that defines the method, plus the generation settings
    result: GenerationResult
    params: dict[str, Any] = field(default_factory=dict)  # the method's declared parameters (MethodSpec.params)
    unit_key: str | None = None  # "method|prompt_id|seed": what a resumed run skips
    worker: dict[str, Any] | None = None  # Ray runs: host, device, PID of the worker that ran the unit
    extra: dict[str, Any] = field(default_factory=dict)  # any other top-level keys
    schema_version: int = SCHEMA_VERSION

    def columns(self) -> dict[str, Any]:
        """The row's identifying columns for a table: method identity, prompt, seed and the other keys
        (``unit_key`` and ``worker`` when set, ``extra``); not ``params``, ``config`` or ``result``."""
        out = {name: getattr(self, name) for name in KEY_FIELDS if name != "unit_key" or self.unit_key is not None}
        if self.worker is not None:
            out["worker"] = self.worker
        out.update(self.extra)
        return out

    @property
    def params_text(self) -> str:
        """The declared parameters but the strategy, ``k=v`` joined by commas ("" when there are none)."""
        return ",".join(f"{k}={_param_text(v)}" for k, v in sorted(self.params.items()) if k != "strategy")

    def as_mapping(self) -> dict[str, Any]:
        """The row as a plain mapping, ``result`` kept a GenerationResult (for `entspec.replay.compare`,
        which reads rows as mappings)."""
        return {**self.columns(), "params": self.params, "config": self.config, "result": self.result}

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object written to ``results.jsonl``."""
        return {"schema_version": self.schema_version, **self.columns(), "params": self.params,
                "config": self.config, "result": self.result.to_dict()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ResultRow":
        """A row from its JSON object (any schema version; ``result`` a dict or a GenerationResult)."""
        data = upgrade_row(data)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        if not isinstance(kwargs["result"], GenerationResult):
            kwargs["result"] = GenerationResult.from_dict(kwargs["result"])
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})

    @classmethod
    def from_result(cls, result: GenerationResult) -> "ResultRow":
        """A bare generation as a row, its identity filled as for a schema 1 row without keys."""
        return cls.from_json({"schema_version": 1, "result": result})


def upgrade_row(data: dict[str, Any]) -> dict[str, Any]:
    """A row's JSON object in the current schema (a copy). Schema 1 -> 2: the keys older or hand-written rows
    may lack are derived (method and method_kind from ``result.method``, strategy from the config or the
    kind) or defaulted (prompt_id "prompt", category "all", seed 0, config {}); schema 1 did not record the
    declared parameters, so ``params`` is {}."""
    version = data.get("schema_version", 1)
    if version == SCHEMA_VERSION:
        return dict(data)
    if version != 1:
        raise ValueError(f"unknown results schema_version {version!r} (this entspec reads 1 and {SCHEMA_VERSION})")
    result = data["result"]
    decoding = result.method if isinstance(result, GenerationResult) else result.get("method", "speculative")
    kind = data.get("method_kind", "entspec" if decoding == "speculative" else decoding)
    config = data.get("config", {})
    defaults = {"method": decoding, "method_kind": kind, "strategy": config.get("strategy", kind),
                "prompt_id": "prompt", "category": "all", "seed": 0, "config": config, "params": {}}
    return {**defaults, **data, "schema_version": SCHEMA_VERSION}


def _param_text(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(v.get("strategy", "?") if isinstance(v, dict) else _param_text(v) for v in value)
    return str(value)


def append_jsonl(path: str | Path, row: ResultRow | dict[str, Any]) -> None:
    """Append one row (a ResultRow or a JSON object) and flush it to disk, so a killed process loses at most
    the row in flight."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(_dumps(row) + "\n")
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


def read_rows(path: str | Path, *, skip_damaged: bool = False,
              damaged: list[int] | None = None) -> Iterator[ResultRow]:
    """The :class:`ResultRow` s of a results file (schema 1 rows upgraded); damage as in :func:`read_jsonl`."""
    for data in read_jsonl(path, skip_damaged=skip_damaged, damaged=damaged):
        yield ResultRow.from_json(data)


def write_jsonl(path: str | Path, rows: Iterable[ResultRow | dict[str, Any]]) -> None:
    with Path(path).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(_dumps(row) + "\n")


def _dumps(row: ResultRow | dict[str, Any]) -> str:
    return json.dumps(row.to_json() if isinstance(row, ResultRow) else row, default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
