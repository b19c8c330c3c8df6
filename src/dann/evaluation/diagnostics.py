"""Diagnostics of domain alignment, computed without target labels: the proxy A-distance between source and target
features, and a 2-D t-SNE map of features. Small scikit-learn problems run on one thread: on a busy CPU, BLAS
threads only contend (ten times slower on 2 shared cores)."""

from __future__ import annotations

import torch

from ..data.domains import SOURCE, TARGET


def proxy_a_distance(f_s: torch.Tensor, f_t: torch.Tensor, seed: int = 0) -> float:
    """Proxy A-distance ``2 (1 − 2ε)`` between source features ``f_s`` (N_s, F) and target features ``f_t`` (N_t, F)
    (Ben-David et al., "Analysis of Representations for Domain Adaptation", NeurIPS 2007; used by Ganin et al.,
    JMLR 2016). ε is the test error of a linear domain classifier (logistic regression on standardized features)
    trained on one half of a balanced sample (``min(N_s, N_t)`` per domain) and tested on the other half. About 0
    when the domains cannot be told apart, 2 when they are linearly separable; slightly negative values are noise."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    n = min(len(f_s), len(f_t))
    if n < 4:
        raise ValueError(f"the proxy A-distance needs at least 4 samples per domain, got {len(f_s)} and {len(f_t)}")
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([f_s[torch.randperm(len(f_s), generator=g)[:n]], f_t[torch.randperm(len(f_t), generator=g)[:n]]])
    d = torch.tensor([SOURCE] * n + [TARGET] * n)
    order = torch.randperm(2 * n, generator=g)
    train, test = order[:n], order[n:]
    x_np, d_np = x.double().numpy(), d.numpy()
    with threadpool_limits(1):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_np[train], d_np[train])
        error = 1.0 - clf.score(x_np[test], d_np[test])
    return 2.0 * (1.0 - 2.0 * error)


def tsne_2d(f: torch.Tensor, seed: int = 0, max_iter: int = 500) -> torch.Tensor:
    """A 2-D t-SNE embedding (N, 2) of features ``f`` (N, F), N ≥ 4 (van der Maaten & Hinton, JMLR 2008); the
    perplexity is 30, or (N − 1)/3 for small N."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(30.0, max(1.0, (len(f) - 1) / 3))
    with threadpool_limits(1):
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter)
        return torch.as_tensor(tsne.fit_transform(f.double().numpy()))
