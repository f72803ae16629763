"""Mean drafted and accepted tokens per round for every stopping rule on a tiny random pair (CPU, seconds).

A quick, model-free sanity check of the rules' behaviour: the verifier is a random Llama with a sharpened
output head (so entropies vary), the drafter the same weights plus 5% noise. Usage:
    python scripts/tiny_pair_rounds.py
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny import perturbed, tiny_llama  # noqa: E402

from entspec import STOPPING_CRITERIA, EntropyBasedSpeculativeDecoder, EntropyConfig  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    verifier = tiny_llama(seed=0)
    drafter = perturbed(verifier, noise=0.05)
    prompts = [torch.randint(1, 64, (1, 6), generator=torch.Generator().manual_seed(i)) for i in range(20)]
    print("| strategy | temperature | rounds | mean drafted / round | mean accepted / round | acceptance rate |")
    print("|---|---|---|---|---|---|")
    for temperature in (0.0, 1.0):
        for strategy in sorted(STOPPING_CRITERIA):
            cfg = EntropyConfig(strategy=strategy, theta_abs=1.0, max_draft_len=8)
            decoder = EntropyBasedSpeculativeDecoder(drafter, verifier, cfg)
            rounds = [r for i, p in enumerate(prompts)
                      for r in decoder.generate(p, max_new_tokens=32, temperature=temperature, seed=i).rounds]
            drafted = sum(r.drafted for r in rounds)
            accepted = sum(r.accepted for r in rounds)
            print(f"| {strategy} | {temperature} | {len(rounds)} | {drafted / len(rounds):.2f} | "
                  f"{accepted / len(rounds):.2f} | {accepted / drafted:.2f} |")


if __name__ == "__main__":
    main()
