"""The claim the package exists for, on the DANN paper's toy problem: adaptation beats source-only training."""

import numpy as np

import dann
from dann.config import load_config


def target_accuracy(method: str, seed: int) -> float:
    cfg = load_config(
        "moons",
        [
            f"method.name={method}",
            f"train.seed={seed}",
            f"data.seed={seed}",
            "train.progress=false",
            "train.device=cpu",
        ],
    )
    return dann.fit(cfg).history[-1]["oracle"]["target_acc"]


def test_dann_beats_source_only_on_moons_over_three_seeds():
    source_only = np.array([target_accuracy("source_only", s) for s in range(3)])
    adapted = np.array([target_accuracy("dann", s) for s in range(3)])
    assert (adapted > source_only).all(), (source_only, adapted)
    assert adapted.mean() - source_only.mean() >= 0.08, (source_only, adapted)
