"""Label shift: the target's class proportions q_t estimated without target labels, from a model's predictions.

Under label shift P_t(x | y) = P_s(x | y) and only the class proportions differ, p_s → q_t. Two estimators:

**BBSE** (Lipton, Wang, Smola, "Detecting and Correcting for Label Shift with Black Box Predictors", ICML 2018).
With the joint confusion matrix of held-out *source* data and the mean prediction on the target,

    C[i, j] = P_s(ŷ = i, y = j)      (K, K), sums to 1
    μ_t[i]  = P_t(ŷ = i)             (K,)
    C w = μ_t,   q_t = w ⊙ p_s,      w = q_t / p_s the importance weights

ŷ is the hard prediction (``soft=False``, as published) or the predicted distribution (``soft=True``). Instead of
``w = C⁻¹ μ_t``, which can come out negative on finite samples, the proportions solve the constrained least squares

    q_t = argmin ‖M q − μ_t‖²  over q ≥ 0, Σ q = 1,     M = C diag(1 / p_s) = P_s(ŷ | y)

(``solve_weights``, scipy's SLSQP), which is C⁻¹ μ_t when that lies in the simplex. It is the quadratic program of
IWDAN's class weights (Tachet des Combes et al., NeurIPS 2020, ``dann.methods.iw``), written in q instead of w.

**EM** (Saerens, Latinne, Decaestecker, "Adjusting the Outputs of a Classifier to New a Priori Probabilities: A Simple
Procedure", Neural Computation 2002): the target posteriors re-weighted by q / π (π the prior the model trained
with), renormalized, and q their mean, until q settles. It needs calibrated posteriors: label smoothing makes them
under-confident, so the source posteriors first get one temperature fitted on the held-out source (Guo et al.,
ICML 2017; that EM with a calibrated model is hard to beat: Alexandari, Kundaje, Shrikumar, ICML 2020).

The uncertainty band is a bootstrap: each of ``bootstrap`` resamples (seeded) draws the held-out source samples and
the target samples with replacement and estimates again; the band is the 5th to 95th percentile. The shift is
called ``large`` when even the band's low end of the total-variation distance ½ Σ |q_t − p_s| exceeds
``LARGE_TV`` = 0.1.

Everything here works on arrays (probabilities (N, K), labels (N,)); ``dann.estimate_label_shift`` runs a trained
model on data first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LARGE_TV = 0.1  # total variation ½ Σ |q_t − p_s| above which a label shift is called large (its band's low end)
BAND = (5.0, 95.0)  # percentiles of the bootstrap band
METHODS = ("bbse", "em")
TEMPERATURES = (0.05, 20.0)  # the range searched by the temperature scaling of EM


@dataclass(frozen=True, eq=False)
class LabelShift:
    """An estimate of the target's class proportions. Arrays are (K,), in class order: ``proportions`` q_t, the
    ``source`` proportions p_s, the importance ``weights`` w = q_t / p_s (1 for a class absent from the source),
    the band ``low``–``high`` of q_t (5th–95th percentile over ``bootstrap`` resamples); ``tv`` = ½ Σ |q_t − p_s|
    and its band ``tv_band``; ``large`` when ``tv_band[0] > LARGE_TV``."""

    proportions: np.ndarray
    source: np.ndarray
    weights: np.ndarray
    low: np.ndarray
    high: np.ndarray
    method: str
    tv: float
    tv_band: tuple[float, float]
    large: bool
    bootstrap: int
    classes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists and floats), for JSON."""
        return {
            "method": self.method,
            "classes": list(self.classes) or list(range(len(self.proportions))),
            "proportions": self.proportions.tolist(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "source": self.source.tolist(),
            "weights": self.weights.tolist(),
            "tv": self.tv,
            "tv_band": list(self.tv_band),
            "large": self.large,
            "large_threshold": LARGE_TV,
            "bootstrap": self.bootstrap,
        }

    def __str__(self) -> str:
        names = self.classes or tuple(str(k) for k in range(len(self.proportions)))
        width = max(5, *(len(n) for n in names))
        lines = [f"label shift ({self.method}, {self.bootstrap} bootstrap resamples, band 5th-95th percentile)"]
        lines.append(f"{'class':<{width}}  source  target  band           weight")
        for k, name in enumerate(names):
            band = f"[{self.low[k]:.3f}, {self.high[k]:.3f}]"
            lines.append(
                f"{name:<{width}}  {self.source[k]:.3f}   {self.proportions[k]:.3f}   {band:<14} {self.weights[k]:.3f}"
            )
        verdict = "large" if self.large else "not shown to be large"
        lines.append(
            f"total variation {self.tv:.3f} [{self.tv_band[0]:.3f}, {self.tv_band[1]:.3f}]: {verdict} "
            f"(threshold {LARGE_TV} on the band's low end)"
        )
        return "\n".join(lines)


def joint_confusion(probs_s: np.ndarray, y_s: np.ndarray, soft: bool = False) -> np.ndarray:
    """Source probabilities (N, K) and labels (N,) → C (K, K), C[i, j] = P(ŷ = i, y = j), summing to 1; ŷ the
    argmax (``soft=False``) or the predicted distribution."""
    probs_s = np.asarray(probs_s, dtype=np.float64)
    pred = probs_s if soft else np.eye(probs_s.shape[1])[probs_s.argmax(1)]
    onehot = np.eye(probs_s.shape[1])[np.asarray(y_s)]
    return pred.T @ onehot / max(len(probs_s), 1)


def mean_prediction(probs_t: np.ndarray, soft: bool = False) -> np.ndarray:
    """Target probabilities (N, K) → μ_t (K,), the share of each predicted class (or the mean distribution)."""
    probs_t = np.asarray(probs_t, dtype=np.float64)
    if soft:
        return probs_t.mean(0)
    return np.bincount(probs_t.argmax(1), minlength=probs_t.shape[1]) / max(len(probs_t), 1)


def solve_weights(confusion: np.ndarray, mu_t: np.ndarray) -> np.ndarray:
    """C (K, K) = P_s(ŷ = i, y = j) (any positive scale) and μ_t (K,) (any positive scale) → w (K,) ≥ 0 with
    Σ_j w_j p_s[j] = 1, p_s the column sums of C normalized: the least-squares solution of C w = μ_t over those
    constraints, solved for q = w ⊙ p_s on the simplex. A class with no source sample (a zero column) gets w = 1."""
    from scipy.optimize import minimize

    c = np.asarray(confusion, dtype=np.float64)
    c, mu = c / c.sum(), np.asarray(mu_t, dtype=np.float64) / np.sum(mu_t)
    p_s = c.sum(0)
    seen = p_s > 0
    m = c[:, seen] / p_s[seen]  # P_s(ŷ = i | y = j)

    def objective(q: np.ndarray) -> tuple[float, np.ndarray]:
        r = m @ q - mu
        return float(r @ r), 2 * m.T @ r

    q0 = p_s[seen]
    result = minimize(
        objective, q0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * len(q0),
        constraints=[{"type": "eq", "fun": lambda q: q.sum() - 1.0, "jac": lambda q: np.ones_like(q)}],
        options={"ftol": 1e-14, "maxiter": 500},
    )  # fmt: skip
    q = np.clip(result.x, 0.0, None)
    if not np.isfinite(q).all() or q.sum() <= 0:  # never expected of a convex program; keep the source proportions
        q = q0
    w = np.ones(len(p_s))
    w[seen] = q / q.sum() / p_s[seen]
    return w


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature T (in ``TEMPERATURES``) minimizing the negative log-likelihood of softmax(log p / T) on
    labeled samples (N, K), (N,) (temperature scaling, Guo et al., ICML 2017)."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[rows, y]))

    lo, hi = np.log(TEMPERATURES)
    return float(np.exp(minimize_scalar(nll, bounds=(lo, hi), method="bounded").x))


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) of probabilities (N, K)."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)) / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def em_proportions(probs_t: np.ndarray, prior: np.ndarray, tol: float = 1e-6, max_iter: int = 1000) -> np.ndarray:
    """Saerens et al.'s EM: target posteriors (N, K) of a model trained with class prior π (K,) → q_t (K,)."""
    probs_t, prior = np.asarray(probs_t, dtype=np.float64), np.asarray(prior, dtype=np.float64)
    ratio = np.divide(1.0, prior, out=np.zeros_like(prior), where=prior > 0)
    q = prior.copy()
    for _ in range(max_iter):
        post = probs_t * (q * ratio)
        post /= np.clip(post.sum(1, keepdims=True), 1e-300, None)
        new = post.mean(0)
        if np.abs(new - q).max() < tol:
            return new
        q = new
    return q


def _proportions(
    probs_s: np.ndarray, y_s: np.ndarray, probs_t: np.ndarray, method: str, soft: bool, prior: np.ndarray | None
) -> np.ndarray:
    if method == "bbse":
        c = joint_confusion(probs_s, y_s, soft)
        w = solve_weights(c, mean_prediction(probs_t, soft))
        return w * c.sum(0)
    k = probs_s.shape[1]
    counts = np.bincount(y_s, minlength=k)
    t = fit_temperature(probs_s, y_s)
    return em_proportions(tempered(probs_t, t), counts / counts.sum() if prior is None else prior)


def label_shift_from_probabilities(
    probs_s: np.ndarray,
    y_s: np.ndarray,
    probs_t: np.ndarray,
    method: str = "bbse",
    *,
    soft: bool = False,
    prior: np.ndarray | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    classes: tuple[str, ...] | list[str] = (),
) -> LabelShift:
    """Estimate the target's class proportions from a model's probabilities on held-out labeled source samples
    ``probs_s`` (N_s, K) with labels ``y_s`` (N_s,) and on target samples ``probs_t`` (N_t, K).

    ``method``: ``bbse`` (the confusion-matrix estimator; ``soft``: with predicted distributions instead of the
    argmax) or ``em`` (after temperature scaling on the source samples). ``prior`` (K,): the class proportions the
    model trained with, which EM divides out (default: those of ``y_s``; uniform for a model trained with
    ``data.balance_classes``). ``bootstrap`` resamples of both sample sets, seeded by ``seed``, give the band.
    Raises ``ValueError`` for an unknown method or mismatched shapes."""
    if method not in METHODS:
        raise ValueError(f"unknown label-shift method {method!r}; valid: {', '.join(METHODS)}")
    probs_s, probs_t = np.asarray(probs_s, dtype=np.float64), np.asarray(probs_t, dtype=np.float64)
    y_s = np.asarray(y_s, dtype=np.int64)
    k = probs_s.shape[1] if probs_s.ndim == 2 else -1
    if k < 1 or probs_t.ndim != 2 or probs_t.shape[1] != k or y_s.shape != (len(probs_s),):
        raise ValueError(
            f"expected probabilities (N_s, K), labels (N_s,) and probabilities (N_t, K); got shapes {probs_s.shape}, "
            f"{y_s.shape} and {probs_t.shape}"
        )
    if len(probs_s) == 0 or len(probs_t) == 0:
        raise ValueError("label-shift estimation needs labeled source samples and target samples; one set is empty")
    if y_s.min() < 0 or y_s.max() >= k:
        raise ValueError(f"source labels must lie in [0, {k}); got {y_s.min()}..{y_s.max()}")
    p_s = np.bincount(y_s, minlength=k) / len(y_s)
    q = _proportions(probs_s, y_s, probs_t, method, soft, prior)
    rng = np.random.default_rng(seed)
    draws = np.empty((bootstrap, k))
    for b in range(bootstrap):
        i, j = rng.integers(0, len(y_s), len(y_s)), rng.integers(0, len(probs_t), len(probs_t))
        draws[b] = _proportions(probs_s[i], y_s[i], probs_t[j], method, soft, prior)
    tv = 0.5 * float(np.abs(q - p_s).sum())
    if bootstrap:
        low, high = np.percentile(draws, BAND, axis=0)
        tv_low, tv_high = np.percentile(0.5 * np.abs(draws - p_s).sum(1), BAND)
    else:
        low, high, tv_low, tv_high = q.copy(), q.copy(), tv, tv
    weights = np.divide(q, p_s, out=np.ones(k), where=p_s > 0)
    return LabelShift(
        q, p_s, weights, low, high, method, tv, (float(tv_low), float(tv_high)), bool(tv_low > LARGE_TV), bootstrap,
        tuple(classes),
    )  # fmt: skip


def model_label_shift(
    net: Any,
    source: Any,
    target: Any,
    classes: list[str],
    *,
    method: str = "bbse",
    soft: bool = False,
    balanced: bool = False,
    bootstrap: int = 200,
    seed: int = 0,
    batch_size: int = 256,
) -> LabelShift:
    """``label_shift_from_probabilities`` with a network's predictions: ``net`` (a ``DomainAdaptNet``) on the held-out
    labeled ``source`` domain and the ``target`` domain (anything with ``batches(size)``; ``source.y`` (N_s,)).
    ``balanced``: the model trained with ``data.balance_classes`` (EM then divides out the uniform prior)."""
    from .metrics import predict_batches

    probs_t, _ = predict_batches(net, target.batches(batch_size))
    probs_s, index = predict_batches(net, source.batches(batch_size))
    k = len(classes)
    prior = np.full(k, 1.0 / k) if balanced else None
    y_s = source.y[index].numpy()
    return label_shift_from_probabilities(
        probs_s.numpy(), y_s, probs_t.numpy(), method, soft=soft, prior=prior, bootstrap=bootstrap, seed=seed,
        classes=classes,
    )  # fmt: skip
