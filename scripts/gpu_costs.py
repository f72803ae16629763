#!/usr/bin/env python
"""What a draft step and a verifier call cost on this machine, and what the engine adds around them.

Randomly initialised Qwen2 models with the real Qwen2.5-0.5B (drafter) and Qwen2.5-1.5B (verifier) shapes
(no checkpoint travels; random weights cost exactly what trained ones do), bf16 on CUDA. Reports:

1. forward costs at a fixed context: the drafter's one-token step, the verifier's call over n = 1..17 tokens,
   and c(n) = drafter step / verifier call;
2. entspec rounds (fixed k and an entropy rule that never fires, so both draft k tokens and the second reads
   its entropy every token): time per round split into draft, verify and the rest, and the engine's overhead
   = round time - (k drafter steps + one verifier call over k + 1 tokens) at the forward costs of (1);
3. end to end, same models, same prompt, greedy: entspec (fixed k, entropy rule, autoregressive),
   Hugging Face `generate` and Hugging Face assisted generation (constant k, no confidence stop);
4. entspec's KV-cache paths (issue 10): the dynamic cache, the static cache, and the static cache with the
   compiled step (`torch.compile`, "reduce-overhead" = CUDA graphs on CUDA, verify lengths padded to buckets):
   drafter step, verifier call over 1 and k + 1 tokens, and end to end (fixed k, autoregressive), with the time
   the first calls spent compiling and the number of graphs;
5. eager vs `torch.compile` where feasible: one-token decoding through Hugging Face `generate` with a static
   cache (transformers compiles that step itself on CUDA) against the eager dynamic-cache step.

Random models with tied embeddings tend to predict their input token again, so the two may agree more than
trained ones would: acceptance is reported, and the numbers are costs per round and per forward, not speedups. Needs only torch, transformers and this repository:

    PYTHONPATH=src python scripts/gpu_costs.py            # real shapes; cuda if available (< 5 minutes)
    PYTHONPATH=src python scripts/gpu_costs.py --tiny     # tiny shapes on CPU: a check of the script itself
    PYTHONPATH=src python scripts/gpu_costs.py --only-paths   # section 4 alone (dynamic / static / compiled)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import transformers
from transformers import LogitsProcessor, LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM

from entspec import EntropyBasedSpeculativeDecoder, EntropyConfig
from entspec.experiment.hf_baselines import hf_generate
from entspec.engine.caches import cached_model
from entspec.engine.timing import synchronize

# Qwen2.5 shapes as published in the checkpoints' config.json (both tie the LM head to the embedding).
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2),
}
TINY = {
    "qwen2.5-0.5b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2),
    "qwen2.5-1.5b": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2),
}
START = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - START


def log(msg: str) -> None:
    print(f"[{elapsed():6.1f}s] {msg}", flush=True)


def build(name: str, tiny: bool, device: torch.device, dtype: torch.dtype) -> Qwen2ForCausalLM:
    shape = (TINY if tiny else SHAPES)[name]
    cfg = Qwen2Config(vocab_size=512 if tiny else 151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
                      rope_theta=1_000_000.0, tie_word_embeddings=True, use_sliding_window=False, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    model = model.to(dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def median_seconds(fn, device: torch.device, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ 1. forward costs
def forward_costs(model, prompt: torch.Tensor, ns: list[int], reps: int, kv_cache: str = "dynamic",
                  compile: bool = False) -> dict[int, float]:
    """Median seconds of one cached forward over n new tokens after ``prompt`` (the cache is cropped back)."""
    lm = cached_model(model, kv_cache=kv_cache, compile=compile, check_nan=False)
    lm.prefill(prompt, prompt.shape[1] + 64)
    length = len(lm)
    tokens = torch.randint(1, model.config.vocab_size, (1, max(ns)), device=prompt.device)
    out = {}
    for n in ns:
        def call(n=n):
            lm.forward(tokens[:, :n], logits_to_keep=n)
            lm.crop(length)
        out[n] = median_seconds(call, prompt.device, reps, warmup=3 if compile else 2)  # CUDA graphs: 3rd call
    return out


# ------------------------------------------------------------------------------------------ 2./3. engines
def entspec_run(drafter, verifier, cfg: EntropyConfig | None, prompt, new_tokens: int, warmups: int = 1,
                **cache) -> dict:
    """One timed greedy generation after ``warmups`` (``cache``: kv_cache / compile for the decoder)."""
    decoder = (EntropyBasedSpeculativeDecoder.autoregressive(verifier, **cache) if cfg is None
               else EntropyBasedSpeculativeDecoder(drafter, verifier, cfg, **cache))
    for _ in range(warmups):  # the same length as the timed run: the same cache size and compiled graphs
        decoder.generate(prompt, max_new_tokens=new_tokens if cache else 4, ignore_eos=True)
    res = decoder.generate(prompt, max_new_tokens=new_tokens, ignore_eos=True)
    rounds = res.rounds
    return dict(wall_s=res.wall_time_s, prefill_s=res.prefill_time_s, tokens=len(res.new_tokens),
                rounds=len(rounds), drafted=[r.drafted for r in rounds], accepted=sum(r.accepted for r in rounds),
                round_s=[r.round_time_s for r in rounds], draft_s=[r.draft_time_s for r in rounds],
                verify_s=[r.verify_time_s for r in rounds], new_tokens=res.new_tokens)


def hf_run(drafter, verifier, prompt, new_tokens: int, k: int | None) -> dict:
    kwargs = {} if drafter is None else dict(num_assistant_tokens=k, schedule="constant", confidence_threshold=0.0)
    hf_generate(verifier, prompt, drafter=drafter, max_new_tokens=4, ignore_eos=True, **kwargs)  # warm-up
    res = hf_generate(verifier, prompt, drafter=drafter, max_new_tokens=new_tokens, ignore_eos=True, **kwargs)
    return dict(wall_s=res.wall_time_s, tokens=len(res.new_tokens), **res.counters)


# ------------------------------------------------------------------------------------------ 4. compiled step
class StepClock(LogitsProcessor):
    """Timestamps every decoding step of ``generate`` (after a device sync); scores pass through unchanged."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        synchronize(self.device)
        self.times.append(time.perf_counter())
        return scores


def hf_step_seconds(model, prompt, static: bool, new_tokens: int) -> float:
    """Median seconds between decoding steps of greedy ``model.generate`` (one forward of one token each).

    With ``static`` the cache is transformers' StaticCache, whose decoding step transformers compiles itself
    on CUDA; the first call pays the compilation, the second (same length, same cache shape) is timed.
    """
    kwargs = dict(attention_mask=torch.ones_like(prompt), do_sample=False, eos_token_id=None, pad_token_id=0,
                  max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    if static:
        kwargs["cache_implementation"] = "static"
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    for _ in range(2):  # compilation / warm-up, then the timed run
        clock = StepClock(prompt.device)
        with torch.inference_mode():
            model.generate(prompt, logits_processor=LogitsProcessorList([clock]), **kwargs)
    step = statistics.median(b - a for a, b in zip(clock.times[1:], clock.times[2:]))
    return step, counters["stats"]["unique_graphs"] - graphs


# ------------------------------------------------------------------------------------------ report
def ms(x: float) -> str:
    return f"{1000 * x:.2f}"


def report(r: dict) -> str:
    lines = [f"Device: {r['device']}; torch {r['torch']}, transformers {r['transformers']}; dtype {r['dtype']}; "
             f"context {r['context']} tokens; random weights, real Qwen2.5 shapes"
             + (" (TINY shapes: a script check, not a measurement)" if r["tiny"] else "") + ".", ""]
    f = r.get("forward")
    if f:
        step = f["drafter"][1]
        lines += [f"Drafter (0.5B) one-token step: {ms(step)} ms (median of {r['reps']}).", "",
                  "| n tokens verified | verifier call (ms) | c(n) = draft step / verifier call |", "|---|---|---|"]
        lines += [f"| {n} | {ms(t)} | {step / t:.2f} |" for n, t in f["verifier"].items()]
        lines.append("")
    rounds = r.get("rounds")
    if rounds:
        lines += ["entspec rounds (greedy; rounds drafting the full k; the rule never stops early):", "",
                  "| method | rounds | drafted / round | round (ms) | draft (ms) | verify (ms) | rest (ms) | "
                  "overhead vs raw forwards (ms) | overhead share |", "|---|---|---|---|---|---|---|---|---|"]
        for name, row in rounds.items():
            lines.append(f"| {name} | {row['rounds']} | {row['drafted_per_round']:.1f} | {ms(row['round'])} | "
                         f"{ms(row['draft'])} | {ms(row['verify'])} | {ms(row['rest'])} | {ms(row['overhead'])} | "
                         f"{100 * row['overhead_share']:.1f}% |")
        lines.append("")
    e2e = r.get("end_to_end")
    if e2e:
        lines += ["End to end, same prompt and models (greedy, ignore EOS):", "",
                  "| method | new tokens | wall (s) | ms / token | verifier calls | drafted | accepted |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in e2e.items():
            calls = row.get("verifier_calls", row.get("rounds", ""))
            drafted = sum(row["drafted"]) if "drafted" in row else row.get("drafter_calls", "")
            lines.append(f"| {name} | {row['tokens']} | {row['wall_s']:.3f} | {ms(row['wall_s'] / row['tokens'])} | "
                         f"{calls} | {drafted} | {row.get('accepted', '')} |")
        lines.append("(HF rows: drafted = drafter forward calls, prefill included; accepted is not exposed.)")
        lines.append("")
    paths = r.get("paths")
    if paths:
        k = r["k"]
        lines += [f"entspec KV-cache paths (issue 10): forwards at context {r['context']} (median of {r['reps']}), "
                  f"and end to end ({r['paths_new_tokens']} new tokens, greedy; fixed k={k}):", "",
                  f"| path | drafter step (ms) | verifier n=1 (ms) | verifier n={k + 1} (ms) | c(1) | "
                  f"fixed k={k} ms/token | autoregressive ms/token | first-call compile (s) | graphs |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in paths.items():
            f = row.get("forward", {})
            d, v1, vk = f.get("drafter"), f.get("verifier_1"), f.get("verifier_k")
            e2e = {key: ms(v["wall_s"] / v["tokens"]) for key, v in row.get("end_to_end", {}).items()}
            cells = [name, *(ms(x) if x else "n/a" for x in (d, v1, vk)), f"{d / v1:.2f}" if d and v1 else "n/a",
                     e2e.get("fixed", "n/a"), e2e.get("autoregressive", "n/a"),
                     f"{row['compile_s']:.1f}" if "compile_s" in row else "-", str(row.get("graphs", 0))]
            lines.append("| " + " | ".join(cells) + " |")
        same = r.get("paths_same_tokens")
        if same is not None:
            lines.append(f"\nSame tokens on every path as on the dynamic cache: {same}.")
        lines.append("")
    comp = r.get("compiled")
    if comp:
        lines += ["One-token decoding step through `generate` (median ms between steps; transformers compiles the "
                  "static-cache step itself on CUDA):", "",
                  "| model | eager, dynamic cache | static cache | ratio | graphs compiled |",
                  "|---|---|---|---|---|"]
        for name, row in comp.items():
            lines.append(f"| {name} | {ms(row['eager'])} | {ms(row['static'])} | {row['eager'] / row['static']:.2f}× | "
                         f"{row['graphs']} |")
        lines.append("")
    for err in r.get("errors", []):
        lines.append(f"- skipped: {err}")
    return "\n".join(lines)


def profile(drafter, verifier, prompt, args, out: Path) -> None:
    """torch.profiler over one short generation per setting: where a round's time goes besides the forwards.

    Two op tables per setting: by self CPU time (host waits such as cudaStreamSynchronize show here) and, on
    CUDA, by self device time.
    """
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if prompt.device.type == "cuda" else [])
    sorts = ["self_cpu_time_total"] + (["self_cuda_time_total"] if prompt.device.type == "cuda" else [])

    def tables(prof) -> str:
        averages = prof.key_averages()
        return "\n".join(f"-- sorted by {key}\n" + averages.table(sort_by=key, row_limit=25) for key in sorts)
    k, new_tokens = args.k, 2 * args.k + 2
    runs = {"fixed_trace": lambda: EntropyBasedSpeculativeDecoder(
                drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=k)),
            "fixed_notrace": lambda: EntropyBasedSpeculativeDecoder(
                drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=k, record_all_entropies=False)),
            "autoregressive": lambda: EntropyBasedSpeculativeDecoder.autoregressive(verifier)}
    for name, make in runs.items():
        decoder = make()
        decoder.generate(prompt, max_new_tokens=4, ignore_eos=True)  # warm-up
        with torch_profile(activities=activities) as prof:
            res = decoder.generate(prompt, max_new_tokens=new_tokens, ignore_eos=True)
        table = tables(prof)
        print(f"\n=== {name}: {len(res.rounds)} rounds, {res.wall_time_s:.3f} s ===\n{table}", flush=True)
        (out / f"profile_{name}.txt").write_text(table + "\n")
    hf_generate(verifier, prompt, max_new_tokens=4, ignore_eos=True)
    with torch_profile(activities=activities) as prof:
        hf_generate(verifier, prompt, max_new_tokens=new_tokens, ignore_eos=True)
    table = tables(prof)
    print(f"\n=== HF generate ===\n{table}", flush=True)
    (out / "profile_hf_generate.txt").write_text(table + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny shapes on CPU: checks the script, measures nothing")
    p.add_argument("--device", default="auto")
    p.add_argument("--context", type=int, default=256, help="prompt tokens before the measured forwards")
    p.add_argument("--k", type=int, default=8, help="draft length of the engine runs")
    p.add_argument("--new-tokens", type=int, default=64, help="new tokens per engine / HF run")
    p.add_argument("--reps", type=int, default=15, help="timed repetitions per forward cost")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--only-paths", action="store_true",
                   help="only section 4: dynamic vs static vs static + compiled KV-cache paths of the engine")
    p.add_argument("--profile", action="store_true",
                   help="only profile entspec rounds (fixed k with and without trace entropies, autoregressive) and "
                        "HF generate with torch.profiler: op tables and chrome traces in --out")
    p.add_argument("--budget-s", type=float, default=200.0,
                   help="start no compiled measurement past this many seconds (the run should end within 5 minutes)")
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for gpu_costs.json / gpu_costs.md")
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.tiny:
        device, args.context, args.reps, args.new_tokens, args.k = torch.device("cpu"), 16, 3, 16, 3
        torch.set_num_threads(1)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    r: dict = dict(device=name, torch=torch.__version__, transformers=transformers.__version__,
                   dtype=str(dtype).replace("torch.", ""), context=args.context, reps=args.reps, tiny=args.tiny,
                   k=args.k, errors=[])
    log(f"{name}, torch {torch.__version__}, transformers {transformers.__version__}")
    drafter = build("qwen2.5-0.5b", args.tiny, device, dtype)
    verifier = build("qwen2.5-1.5b", args.tiny, device, dtype)
    log("models built")
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, drafter.config.vocab_size, (1, args.context), generator=gen).to(device)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every section: a run cut short still leaves what it measured
        (out / "gpu_costs.json").write_text(json.dumps(r, indent=1, default=str))
        (out / "gpu_costs.md").write_text(report(r) + "\n")

    def section(title: str, fn) -> None:
        try:
            fn()
            log(f"{title}: done")
        except Exception as err:  # one failed section must not cost the others (one device run)
            traceback.print_exc()
            r["errors"].append(f"{title}: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
        write()

    def forward() -> None:
        r["forward"] = dict(drafter=forward_costs(drafter, prompt, [1], args.reps),
                            verifier=forward_costs(verifier, prompt, list(range(1, 18)), args.reps))

    def engine() -> None:
        k, costs = args.k, r.get("forward")
        rules = {f"entspec fixed k={k}": EntropyConfig(strategy="fixed", max_draft_len=k),
                 f"entspec absolute (never fires) k={k}": EntropyConfig(strategy="absolute", theta_abs=1e9,
                                                                        max_draft_len=k),
                 f"entspec fixed k={k}, no trace entropies": EntropyConfig(strategy="fixed", max_draft_len=k,
                                                                           record_all_entropies=False)}
        r["rounds"], r["end_to_end"] = {}, {}
        for label, cfg in rules.items():
            run = entspec_run(drafter, verifier, cfg, prompt, args.new_tokens)
            r["end_to_end"][label] = run
            full = [i for i, d in enumerate(run["drafted"]) if d == k]  # rounds not cut by the token budget
            full = full or list(range(run["rounds"]))
            mean = lambda xs: statistics.mean(xs[i] for i in full)  # noqa: E731
            row = dict(rounds=len(full), drafted_per_round=statistics.mean(run["drafted"][i] for i in full), round=mean(run["round_s"]), draft=mean(run["draft_s"]),
                       verify=mean(run["verify_s"]))
            row["rest"] = row["round"] - row["draft"] - row["verify"]
            n = round(row["drafted_per_round"])
            raw = n * costs["drafter"][1] + costs["verifier"][n + 1] if costs and n + 1 in costs["verifier"] else None
            row["overhead"] = row["round"] - raw if raw else float("nan")
            row["overhead_share"] = row["overhead"] / row["round"] if raw else float("nan")
            r["rounds"][label] = row
        r["end_to_end"]["entspec autoregressive"] = entspec_run(None, verifier, None, prompt, args.new_tokens)
        r["end_to_end"]["HF generate"] = hf_run(None, verifier, prompt, args.new_tokens, None)
        r["end_to_end"][f"HF assisted constant k={k}"] = hf_run(drafter, verifier, prompt, args.new_tokens, k)

    def compiled() -> None:
        if elapsed() > args.budget_s:
            raise TimeoutError(f"time budget spent ({elapsed():.0f} s > {args.budget_s:.0f} s)")
        r["compiled"] = {}
        for label, model in (("drafter 0.5B", drafter), ("verifier 1.5B", verifier)):
            if elapsed() > args.budget_s:
                r["errors"].append(f"compiled {label}: time budget spent")
                break
            eager, _ = hf_step_seconds(model, prompt, False, 12 if args.tiny else 32)
            static, graphs = hf_step_seconds(model, prompt, True, 12 if args.tiny else 32)
            r["compiled"][label] = dict(eager=eager, static=static, graphs=graphs)
            log(f"compiled {label}: eager {ms(eager)} ms, static {ms(static)} ms")

    def paths() -> None:
        """Dynamic vs static vs static + compiled: forwards, then end to end, per path (compiling costs time)."""
        from torch._dynamo.utils import counters

        k, new_tokens = args.k, args.new_tokens
        r["paths"], r["paths_new_tokens"], tokens = {}, new_tokens, {}
        options = {"dynamic": dict(kv_cache="dynamic"), "static": dict(kv_cache="static"),
                   "static + compiled": dict(kv_cache="static", compile=True)}
        for name, cache in options.items():
            if cache.get("compile") and (args.no_compile or elapsed() > args.budget_s):
                r["errors"].append(f"paths {name}: " + ("--no-compile" if args.no_compile else
                                                        f"time budget spent ({elapsed():.0f} s)"))
                continue
            row = r["paths"][name] = {}
            graphs, start = counters["stats"]["unique_graphs"], time.perf_counter()
            if cache.get("compile"):  # the first calls compile (and record CUDA graphs): timed apart
                forward_costs(drafter, prompt, [1, 2], 1, **cache)
                forward_costs(verifier, prompt, [1, k, k + 1], 1, **cache)
                entspec_run(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=k), prompt, new_tokens,
                            warmups=0, **cache)
                row["compile_s"] = time.perf_counter() - start
            row["forward"] = dict(drafter=forward_costs(drafter, prompt, [1], args.reps, **cache)[1])
            v = forward_costs(verifier, prompt, [1, k + 1], args.reps, **cache)
            row["forward"].update(verifier_1=v[1], verifier_k=v[k + 1])
            row["end_to_end"] = {
                "fixed": entspec_run(drafter, verifier, EntropyConfig(strategy="fixed", max_draft_len=k), prompt,
                                     new_tokens, **cache),
                "autoregressive": entspec_run(None, verifier, None, prompt, new_tokens, **cache)}
            row["graphs"] = counters["stats"]["unique_graphs"] - graphs
            tokens[name] = [row["end_to_end"][m].pop("new_tokens") for m in ("fixed", "autoregressive")]
            log(f"paths {name}: drafter {ms(row['forward']['drafter'])} ms, verifier n=1 "
                f"{ms(row['forward']['verifier_1'])} ms, n={k + 1} {ms(row['forward']['verifier_k'])} ms")
            write()
        r["paths_same_tokens"] = all(t == tokens["dynamic"] for t in tokens.values())

    if args.profile:
        section("profile", lambda: profile(drafter, verifier, prompt, args, out))
        return 0
    if args.only_paths:
        section("kv cache paths", paths)
        print("\n" + report(r), flush=True)
        return 0
    section("forward costs", forward)
    section("engine rounds and end to end", engine)
    section("kv cache paths", paths)
    if not args.no_compile:
        section("compiled step", compiled)
    print("\n" + report(r), flush=True)
    log(f"wrote {out / 'gpu_costs.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
