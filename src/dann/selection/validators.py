"""Unsupervised model selection: validators score a checkpoint **without target labels**.

Convention: **higher is better** for every validator (losses and entropies are negated). A validator is a small
registered function of ``ValidationInputs`` (network outputs on labeled source held-out data and unlabeled target
data; there is no field for target labels, so no validator can read them) returning a float.

The trainer scores every validator at each evaluation (``evaluate_validators``, in eval mode under
``torch.no_grad``), writes the scores to ``metrics.jsonl`` under ``"validators"``, and keeps
``checkpoints/best.pt``: the checkpoint with the highest ``selection.validator`` score so far (``running_best``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..data.domains import SOURCE, TARGET, DomainData
from ..errors import ConfigError
from ..evaluation.metrics import embed
from ..methods.base import entropy as _entropy  # row entropies; `entropy` here is the validator
from ..models.network import DomainAdaptNet
from ..registry import Registry
from ..training.distributed import World


@dataclass
class ValidationInputs:
    """Network outputs, float32 on the CPU. Source: ``f_s`` (N_s, F) features of source training samples (DEV's
    domain classifier); ``f_sv`` (N_v, F), ``logits_sv`` (N_v, K) and labels ``y_sv`` (N_v,) of the source held-out
    set, or None without one. Target: ``f_t`` (N_t, F) and ``logits_t`` (N_t, K) of unlabeled target samples."""

    f_s: torch.Tensor
    f_sv: torch.Tensor | None
    logits_sv: torch.Tensor | None
    y_sv: torch.Tensor | None
    f_t: torch.Tensor
    logits_t: torch.Tensor


Validator = Callable[[ValidationInputs], float]
VALIDATORS: Registry[Validator] = Registry("validator")
_NEEDS_SOURCE_VAL: set[str] = set()


def validator(needs_source_val: bool = False) -> Callable[[Validator], Validator]:
    """Register a validator under its function name; ``needs_source_val`` marks those that read ``f_sv``/``y_sv``."""

    def wrap(fn: Validator) -> Validator:
        if needs_source_val:
            _NEEDS_SOURCE_VAL.add(fn.__name__)
        return VALIDATORS.register()(fn)

    return wrap


@validator(needs_source_val=True)
def source_acc(v: ValidationInputs) -> float:
    """Accuracy on the labeled source held-out set, in [0, 1]: the classic baseline ("Src Val" in Musgrave et al.,
    "Unsupervised Domain Adaptation: A Reality Check", 2021). It ignores the target domain entirely."""
    return (v.logits_sv.argmax(1) == v.y_sv).double().mean().item()


@validator()
def entropy(v: ValidationInputs) -> float:
    """Minus the mean entropy of the target predictions, in [−ln K, 0]: confident predictions score high. Used for
    validation by Morerio, Cavazza & Murino, "Minimal-Entropy Correlation Alignment for Unsupervised Deep Domain
    Adaptation" (ICLR 2018). A model that puts every target sample in one class also scores high."""
    return -_entropy(torch.softmax(v.logits_t.double(), 1)).mean().item()


@validator()
def im(v: ValidationInputs) -> float:
    """Information maximization ``H(E_t[p]) − E_t[H(p)]``, in [0, ln K]: the mutual information between target
    inputs and predicted classes, high when predictions are confident *and* spread over the classes (Gomes, Krause
    & Perona, "Discriminative Clustering by Regularized Information Maximization", NeurIPS 2010; a validator in
    Musgrave et al. 2021)."""
    p = torch.softmax(v.logits_t.double(), 1)
    return (_entropy(p.mean(0)) - _entropy(p).mean()).item()


@validator()
def bnm(v: ValidationInputs) -> float:
    """Batch nuclear-norm ``‖P‖_* / sqrt(N · min(N, K))`` of the target probabilities P (N, K), in (0, 1]: high
    when predictions are confident and diverse (Cui et al., "Towards Discriminability and Diversity: Batch
    Nuclear-norm Maximization under Label Insufficient Situations", CVPR 2020; a validator in Musgrave et al.,
    "Three New Validators and a Large-Scale Benchmark Ranking for Unsupervised Domain Adaptation", 2022)."""
    p = torch.softmax(v.logits_t.double(), 1)
    n, k = p.shape
    return (torch.linalg.svdvals(p).sum() / math.sqrt(n * min(n, k))).item()


@validator()
def snd(v: ValidationInputs, temperature: float = 0.05) -> float:
    """Soft neighborhood density (Saito et al., "Tune it the Right Way: Unsupervised Validation of Domain Adaptation
    via Soft Neighborhood Density", ICCV 2021), in [0, ln(N − 1)]: the mean entropy of each target sample's
    softmax-normalized similarities (``temperature`` 0.05) to the other target samples, on L2-normalized class
    probabilities. High when samples sit in dense neighborhoods of like predictions."""
    if len(v.logits_t) < 2:
        raise ValueError(f"the neighbourhood of a target sample needs at least 2 target samples, got {len(v.logits_t)}")
    p = F.normalize(torch.softmax(v.logits_t.double(), 1), dim=1)
    sim = p @ p.T / temperature
    sim.fill_diagonal_(-math.inf)
    return _entropy(torch.softmax(sim, 1)).mean().item()


def density_ratio(f_s: torch.Tensor, f_t: torch.Tensor, f_query: torch.Tensor) -> torch.Tensor:
    """``p_t(x) / p_s(x)`` (M,) at ``f_query`` (M, F), from a class-balanced logistic regression that tells source
    features ``f_s`` (N_s, F) from target features ``f_t`` (N_t, F) after standardization."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = torch.cat([f_s, f_t]).double().numpy()
    d = [SOURCE] * len(f_s) + [TARGET] * len(f_t)
    clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000)).fit(x, d)
    log_odds = torch.as_tensor(clf.decision_function(f_query.double().numpy()))  # log p(target|x) / p(source|x)
    return log_odds.clamp(-30.0, 30.0).exp()


@validator(needs_source_val=True)
def dev(v: ValidationInputs) -> float:
    """Deep embedded validation (You et al., "Towards Accurate Model Selection in Deep Unsupervised Domain
    Adaptation", ICML 2019), negated: a domain classifier on features (``density_ratio``) gives importance weights
    w = p_t/p_s of the source held-out samples; the target risk is their weighted cross-entropy with the paper's
    control variate, ``mean(w·ℓ) + η·mean(w) − η`` with ``η = −Cov(w·ℓ, w) / Var(w)``. Returns minus that risk."""
    if len(v.f_sv) < 2:
        raise ValueError(f"the control variate needs at least 2 source held-out samples, got {len(v.f_sv)}")
    w = density_ratio(v.f_s, v.f_t, v.f_sv)
    weighted = w * F.cross_entropy(v.logits_sv.double(), v.y_sv, reduction="none")
    cov = torch.cov(torch.stack([weighted, w]))  # (2, 2)
    eta = -cov[0, 1] / cov[1, 1] if cov[1, 1] > 0 else 0.0
    return -(weighted.mean() + eta * w.mean() - eta).item()


@validator()
def class_ami(v: ValidationInputs) -> float:
    """ClassAMI (Musgrave et al., "Three New Validators and a Large-Scale Benchmark Ranking for Unsupervised Domain
    Adaptation", 2022), in [−1, 1] (about 0 for unrelated partitions): the adjusted mutual information between
    k-means clusters (k = number of classes) of the L2-normalized target features and the predicted target classes.
    High when the classifier's decisions follow the cluster structure of the target features."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    n, k = v.logits_t.shape
    if n < k:
        raise ValueError(f"k-means with k = {k} classes needs at least {k} target samples, got {n}")
    with warnings.catch_warnings():  # fewer distinct points than clusters: a legitimate, low score
        warnings.simplefilter("ignore")
        clusters = KMeans(k, n_init=3, random_state=0).fit_predict(F.normalize(v.f_t.double(), dim=1).numpy())
    return float(adjusted_mutual_info_score(clusters, v.logits_t.argmax(1).numpy()))


# these terms train the target predictions to be confident (and diverse), which these validators reward (README)
CONFIDENT_TERMS, CONFIDENCE_VALIDATORS = {"mcc", "bnm", "entropy", "fixmatch", "shot"}, {"bnm", "entropy", "im"}

FALLBACK_ORDER = ("bnm", "im", "entropy", "dev", "snd", "source_acc", "class_ami")
"""Validators by the target accuracy of their pick over the moons grid of docs/selection.md, best first: when
``selection.validator`` has no score on a run's data, the first of these that has one chooses ``best.pt``."""


def score_one(name: str, inputs: ValidationInputs) -> tuple[float | None, str]:
    """(score, "") or, when validator ``name`` cannot be computed on these inputs (too few samples for its
    estimator, a degenerate covariance...), (None, the reason in one line)."""
    try:
        with warnings.catch_warnings():  # e.g. torch.cov of one sample: the NaN it returns is the report
            warnings.simplefilter("ignore")
            score = float(VALIDATORS.get(name)(inputs))
    except (ValueError, RuntimeError, ArithmeticError) as e:
        return None, " ".join(str(e).split()) or type(e).__name__
    if not math.isfinite(score):
        return None, f"its score is {score}"
    return score, ""


def score_validators(
    inputs: ValidationInputs, names: Sequence[str] | None = None, problems: dict[str, str] | None = None
) -> dict[str, float | None]:
    """``{name: score}`` for the given validators (default: all), skipping those that need a source held-out set
    when there is none. A validator that cannot be computed on the inputs scores None (null in ``metrics.jsonl``),
    and ``problems`` (when given) gets ``{name: why}``."""
    from threadpoolctl import threadpool_limits

    names = VALIDATORS.names() if names is None else names
    scores: dict[str, float | None] = {}
    with threadpool_limits(1):  # small problems: BLAS/OpenMP threads only contend (10x slower on a busy 2-core CPU)
        for name in names:
            if inputs.f_sv is None and name in _NEEDS_SOURCE_VAL:
                continue
            scores[name], problem = score_one(name, inputs)
            if problem and problems is not None:
                problems[name] = problem
    return scores


def selecting_validator(configured: str, previous: dict[str, Any] | None, scores: dict[str, float | None]) -> str:
    """The validator that chooses ``best.pt`` at this evaluation: the one that has chosen it so far in the run (a run
    never switches); at the first choice, ``configured`` when it has a score, else the first of ``FALLBACK_ORDER``
    (then any other validator) that has one."""
    if previous is not None:
        return previous["validator"]
    if _finite(scores.get(configured)):
        return configured
    others = [*FALLBACK_ORDER, *(n for n in VALIDATORS.names() if n not in FALLBACK_ORDER)]
    return next((n for n in others if n != configured and _finite(scores.get(n))), configured)


def check_validator(name: str, has_source_val: bool) -> None:
    """Fail early if ``name`` is unknown, or needs a source held-out set the data does not have."""
    VALIDATORS.get(name)
    if name in _NEEDS_SOURCE_VAL and not has_source_val:
        others = [n for n in VALIDATORS.names() if n not in _NEEDS_SOURCE_VAL]
        raise ConfigError(
            f"selection.validator={name} needs a labeled source held-out set: set data.val_fraction > 0, "
            f"or choose a validator that reads only the target: {', '.join(others)}"
        )


SUBSET_SEED = 0  # of every fixed random subset (``subset``)


def subset(n: int, cap: int) -> torch.Tensor:
    """Indices (min(n, cap),) of a fixed random subset of ``range(n)``, drawn with ``SUBSET_SEED``: the same at every
    call; all of ``range(n)``, in order, when ``n <= cap``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))[:cap] if n > cap else torch.arange(n)


def needs_source(name: str) -> bool:
    """Whether validator ``name`` reads source outputs (``f_s``, the source held-out set), not only the target's."""
    return name in _NEEDS_SOURCE_VAL


def collect_inputs(
    net: DomainAdaptNet,
    data: DomainData,
    max_samples: int = 2000,
    batch_size: int = 512,
    world: World | None = None,
    source: bool = True,
) -> ValidationInputs:
    """Network outputs on fixed subsets (at most ``max_samples`` per set) of the source training, source held-out
    and unlabeled target data, in eval mode without gradients. Reads the target's held-out part ``data.target_val``
    when there is one (``data.target_val_fraction``), else ``data.target_train``; never target labels.
    With a ``world`` of several processes, they compute the outputs together (``evaluate.embed``). Without
    ``source`` only the target outputs are computed (``f_s`` is (0, F), no held-out set): enough for the validators
    that ``needs_source`` says read only the target."""
    target = data.target_val if data.target_val is not None else data.target_train
    f_t, logits_t, _ = embed(net, target.subset(subset(len(target), max_samples)), batch_size, world=world)
    if not source:
        return ValidationInputs(f_t[:0], None, None, None, f_t, logits_t)
    train = data.source_train
    f_s, _, _ = embed(net, train.subset(subset(len(train), max_samples)), batch_size, world=world)
    if data.source_val is None:
        return ValidationInputs(f_s, None, None, None, f_t, logits_t)
    val = data.source_val.subset(subset(len(data.source_val), max_samples))
    f_sv, logits_sv, kept = embed(net, val, batch_size, world=world)
    return ValidationInputs(f_s, f_sv, logits_sv, val.y[kept], f_t, logits_t)


def evaluate_validators(
    net: DomainAdaptNet,
    data: DomainData,
    max_samples: int = 2000,
    batch_size: int = 512,
    world: World | None = None,
    problems: dict[str, str] | None = None,
) -> dict[str, float | None]:
    """Every validator's score for ``net`` on ``data`` (see ``collect_inputs``); None, with the reason in
    ``problems``, for those that cannot be computed on it (``score_validators``)."""
    return score_validators(collect_inputs(net, data, max_samples, batch_size, world), problems=problems)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def running_best(
    previous: dict[str, Any] | None, step: int, scores: dict[str, float], validator: str
) -> dict[str, Any] | None:
    """The best checkpoint so far, ``{"validator", "step", "score"}``: ``previous`` unless this step's score is
    strictly higher (ties keep the earlier step; non-finite or missing scores never win)."""
    score = scores.get(validator)
    if not _finite(score) or (previous is not None and score <= previous["score"]):
        return previous
    return {"validator": validator, "step": step, "score": score}


def select_record(history: Sequence[dict[str, Any]], validator: str) -> dict[str, Any] | None:
    """The record ``running_best`` ends on for ``validator``: the first with the highest finite score (None if no
    record has one). ``history`` may pool several runs' records."""
    best, chosen = None, None
    for record in history:
        new = running_best(best, record["step"], record.get("validators", {}), validator)
        if new is not best:
            best, chosen = new, record
    return chosen
