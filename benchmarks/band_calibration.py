"""Are the noise bands of ``dann compare`` and the report the right width? Prints, per validator, the spread of its
score over independent draws of n target samples (the truth the band estimates), the standard error the half-sampling
band measures from one draw, the ordinary bootstrap's for comparison, and how often the 95 % band holds the mean
score.

Synthetic outputs of a 10-class classifier on an imbalanced target (features = class centre + noise, logits = a noisy
linear read-out), so every validator that reads only the target has a non-degenerate score. CPU, one thread:

    python benchmarks/band_calibration.py            # n = 500 samples: about 2 minutes on 2 slow cores
    python benchmarks/band_calibration.py --n 2000 --validators bnm entropy
"""

from __future__ import annotations

import argparse
import time

import torch

from dann.selection.bands import score_band
from dann.selection.validators import ValidationInputs, score_one

K, F = 10, 32
PRIOR = torch.tensor([0.3, 0.2, 0.1, 0.1, 0.08, 0.07, 0.05, 0.04, 0.03, 0.03])
CENTRES = torch.randn(K, F, generator=torch.Generator().manual_seed(99))


def draw(n: int, seed: int) -> ValidationInputs:
    """Target outputs of n samples: features (n, F) and logits (n, K)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(PRIOR, n, replacement=True, generator=g)
    f_t = CENTRES[y] + torch.randn(n, F, generator=g)
    logits = 0.4 * f_t @ CENTRES.T + torch.randn(n, K, generator=g)
    return ValidationInputs(f_t[:0], None, None, None, f_t, logits)


def bootstrap_se(name: str, v: ValidationInputs, replicates: int, seed: int = 0) -> float:
    """The ordinary bootstrap's standard error: draws of n samples with replacement."""
    g, n, values = torch.Generator().manual_seed(seed), len(v.logits_t), []
    for _ in range(replicates):
        i = torch.randint(0, n, (n,), generator=g)
        values.append(score_one(name, ValidationInputs(v.f_s, None, None, None, v.f_t[i], v.logits_t[i]))[0])
    return torch.tensor(values, dtype=torch.float64).std().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="target samples per draw (500)")
    parser.add_argument("--draws", type=int, default=200, help="independent draws for the true spread (200)")
    parser.add_argument("--banded", type=int, default=40, help="draws whose band is measured (40; 10 bootstrapped)")
    target_only = ["bnm", "entropy", "im", "snd", "class_ami"]  # the synthetic draws have no source samples
    parser.add_argument("--validators", nargs="+", default=target_only, choices=target_only)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"n = {args.n} target samples, {args.draws} draws for the truth, {args.banded} banded draws")
    print("| validator | true sd | half-sampling se (mean) | bootstrap se (mean) | 95 % band holds the mean | s/band |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.validators:
        scores = torch.tensor([score_one(name, draw(args.n, s))[0] for s in range(args.draws)], dtype=torch.float64)
        mean, half, boot, held = scores.mean().item(), [], [], 0
        tic = time.perf_counter()
        for s in range(args.banded):
            band, _ = score_band(name, draw(args.n, 1000 + s))
            half.append((band.high - band.low) / 2 / 1.959964)
            held += band.low <= mean <= band.high
        seconds = (time.perf_counter() - tic) / args.banded
        for s in range(min(args.banded, 10)):
            boot.append(bootstrap_se(name, draw(args.n, 1000 + s), 30))
        print(
            f"| {name} | {scores.std().item():.4f} | {sum(half) / len(half):.4f} | {sum(boot) / len(boot):.4f} "
            f"| {held}/{args.banded} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
