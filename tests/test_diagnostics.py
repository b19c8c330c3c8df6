import pytest
import torch

from dann.evaluation.diagnostics import proxy_a_distance, tsne_2d


def two_clouds(shift: float, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Source and target features (n, 5): unit Gaussians, the target moved by ``shift`` along the first axis."""
    g = torch.Generator().manual_seed(0)
    f_s, f_t = torch.randn(n, 5, generator=g), torch.randn(n, 5, generator=g)
    f_t[:, 0] += shift
    return f_s, f_t


@pytest.mark.parametrize(
    ("shift", "low", "high"),
    [
        (10.0, 1.95, 2.0),  # linearly separable: ε = 0
        (1.0, 0.5, 1.1),  # overlapping: Bayes error Φ(−0.5) = 0.31, so 2(1 − 2ε) ≈ 0.77
        (0.0, -0.15, 0.15),  # the same distribution: ε ≈ 0.5
    ],
)
def test_proxy_a_distance_on_separable_overlapping_and_identical_features(shift, low, high):
    assert low <= proxy_a_distance(*two_clouds(shift)) <= high


def test_proxy_a_distance_balances_the_domains_and_needs_a_few_samples():
    f_s, f_t = two_clouds(0.0)
    assert abs(proxy_a_distance(f_s, f_t[:200])) < 0.3  # 1000 vs 200 samples: still chance, not the majority class
    with pytest.raises(ValueError, match="at least 4 samples per domain"):
        proxy_a_distance(f_s, f_t[:3])


def test_tsne_keeps_far_clusters_apart():
    f_s, f_t = two_clouds(20.0, n=60)
    emb = tsne_2d(torch.cat([f_s, f_t]))
    assert emb.shape == (120, 2) and torch.isfinite(emb).all()
    a, b = emb[:60], emb[60:]
    gap = torch.cdist(a, b).min()
    assert gap > max(torch.pdist(a).median(), torch.pdist(b).median())
