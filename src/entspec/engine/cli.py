"""`entspec generate`: one prompt through the decoder, printing the text and what each round did."""

from __future__ import annotations

import argparse
import sys

from .config import EntropyConfig
from .decoder import EntropyBasedSpeculativeDecoder
from .caches import KV_CACHES, check_cache_options
from .static_kv import COMPILE_MODES
from ..models.quantize import QUANTIZATIONS


def cmd_generate(args: argparse.Namespace) -> int:
    from ..models import encode_prompt, load_model_pair, resolve_device
    from ..models.context import check_fits, context_length

    resolve_device(args.device)  # an unusable device is refused before any download or load
    kv_cache = args.kv_cache or ("static" if args.compile else "dynamic")  # --compile alone implies static
    compile = False if args.compile is None else True if args.compile == "auto" else args.compile
    check_cache_options(kv_cache, compile)  # refused before any load
    pair = load_model_pair(args.drafter, args.verifier, dtype=args.dtype, device=args.device,
                           drafter_quantization=args.drafter_quantization, cpu_linear=args.cpu_linear)
    config = EntropyConfig(strategy=args.strategy, entropy_type=args.entropy_type, theta_abs=args.theta_abs,
                           theta_rel=args.theta_rel, max_draft_len=args.max_draft_len)
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    input_ids = encode_prompt(pair.tokenizer, prompt)
    contexts = [n for n in (context_length(pair.drafter), context_length(pair.verifier)) if n is not None]
    check_fits("PROMPT", input_ids.shape[1], args.max_new_tokens, min(contexts, default=None))
    decoder = (EntropyBasedSpeculativeDecoder.autoregressive(pair.verifier, kv_cache=kv_cache, compile=compile)
               if args.autoregressive else
               EntropyBasedSpeculativeDecoder(pair.drafter, pair.verifier, config, kv_cache=kv_cache, compile=compile))
    if compile is not False:  # compile ahead, so the figures below are of decoding, not of compiling
        print("compiling the decode steps (once per process) ...", file=sys.stderr, flush=True)
        decoder.warm_up(input_ids.shape[1], args.max_new_tokens)
    result = decoder.generate(input_ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    print(pair.tokenizer.decode(result.new_tokens, skip_special_tokens=True))
    drafted = sum(r.drafted for r in result.rounds)
    accepted = sum(r.accepted for r in result.rounds)
    rate = f"{accepted / drafted:.2f}" if drafted else "n/a"
    print(f"\n{len(result.new_tokens)} tokens in {result.wall_time_s:.2f} s "
          f"({len(result.new_tokens) / result.wall_time_s:.2f} tok/s); {len(result.rounds)} verifier calls, "
          f"{drafted} drafted, {accepted} accepted (rate {rate}); {kv_cache} KV cache"
          + (f", compiled ({decoder.verifier.mode})" if compile is not False else ""))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate from one prompt and print per-run statistics")
    p.add_argument("prompt")
    p.add_argument("--drafter", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--verifier", default="qwen2.5-coder-1.5b-instruct")
    p.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn (chat template)")
    p.add_argument("--autoregressive", action="store_true", help="the verifier alone (baseline)")
    p.add_argument("--strategy", default="absolute")
    p.add_argument("--entropy-type", default="shannon")
    p.add_argument("--theta-abs", type=float, default=2.0)
    p.add_argument("--theta-rel", type=float, default=1.5)
    p.add_argument("--max-draft-len", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--drafter-quantization", default="none", choices=QUANTIZATIONS,
                   help="int8 drafter weights (the verifier is never quantized); int8 = dynamic for a float32 "
                        "drafter on CPU, else weight-only")
    p.add_argument("--cpu-linear", default="auto", choices=["auto", "weight-major", "torch"],
                   help="the Linear product's layout on CPU (entspec.models.cpu_linear; auto: weight-major for float32)")
    p.add_argument("--kv-cache", choices=KV_CACHES, default=None,
                   help="dynamic: transformers' DynamicCache (default); static: a preallocated StaticCache, rollback "
                        "moves the write position (default with --compile)")
    p.add_argument("--compile", nargs="?", const="auto", default=None, choices=("auto", *COMPILE_MODES),
                   help="torch.compile both forwards on the static cache (auto: reduce-overhead on CUDA, default "
                        "elsewhere); the first calls pay the compilation")
    p.set_defaults(func=cmd_generate)
